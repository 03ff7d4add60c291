#!/usr/bin/env bash
# Offline checks for the credrefresh systemd units. Installs nothing; needs
# `systemd-analyze` on PATH (Debian package: systemd). Needs no running
# systemd, no privileges, and never talks to a service manager.
#
#   1. `systemd-analyze verify` on each unit; any diagnostic that names one
#      of our units fails the check.
#   2. `systemd-analyze security --offline=true` on each unit: prints
#      "EXPOSURE <unit> <score>" and fails if the system service scores above
#      1.5 or any unit above 2.5.
#
# Usage: bash systemd/check.sh   (from any directory)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SYSTEM_UNIT="$here/credrefresh.service"
TEMPLATE_UNIT="$here/credrefresh@.service"
USER_UNIT="$here/user/credrefresh.service"
INSTANCE="credrefresh@alice.service"   # the template is checked as this instance

# Maximum exposure, in systemd-analyze --threshold units (exposure x 10).
MAX_SYSTEM=15
MAX_OTHER=25

command -v systemd-analyze >/dev/null 2>&1 || {
    echo "check.sh: systemd-analyze not found (apt-get install systemd)" >&2
    exit 2
}
for f in "$SYSTEM_UNIT" "$TEMPLATE_UNIT" "$USER_UNIT"; do
    [[ -f "$f" ]] || { echo "check.sh: missing $f" >&2; exit 2; }
done

tmp="$(mktemp -d "${TMPDIR:-/tmp}/credrefresh-check.XXXXXX")"
trap 'rm -rf -- "$tmp"' EXIT
trap 'exit 130' INT TERM

failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }

stub() {  # stub PATH: an executable that does nothing
    mkdir -p -- "$(dirname -- "$1")"
    printf '#!/bin/sh\nexit 0\n' >"$1"
    chmod 0755 -- "$1"
}

# Print diagnostics; fail on any that name one of our units. Lines about
# other (host) units are shown but ignored; a non-zero exit also fails.
judge_verify() {  # judge_verify LABEL RC OUTPUT
    local label="$1" rc="$2" out="$3" line ours=0
    while IFS= read -r line; do
        [[ -n "$line" ]] || continue
        # Show our files under their repository paths (the copies are identical).
        line="${line//"$root/etc/systemd/system/"/"$here/"}"
        line="${line//"$tmp/user-units/"/"$here/user/"}"
        if [[ "$line" == *credrefresh.service* || "$line" == *credrefresh@.service* \
              || "$line" == *"$INSTANCE"* ]]; then
            echo "  verify: $line" >&2
            ours=1
        else
            echo "  verify (ignored, not our unit): $line" >&2
        fi
    done <<<"$out"
    if ((ours)); then
        fail "systemd-analyze verify reported problems for $label"
    elif ((rc != 0)); then
        fail "systemd-analyze verify exited $rc for $label"
    else
        echo "VERIFY $label ok"
    fi
}

# ---- verify: system units -------------------------------------------------
# verify checks that ExecStart=/ExecReload= binaries exist, and resolves them
# (and all unit dependencies) inside --root. So build a throw-away root with
# stub executables, the host's stock unit files and our units.
root="$tmp/root"
mkdir -p "$root/etc/systemd/system" "$root/usr/lib/systemd"
stub "$root/opt/credrefresh/bin/credrefresh"
stub "$root/usr/bin/kill"
ln -s usr/bin "$root/bin"
for d in /usr/lib/systemd/system /lib/systemd/system; do
    # On merged-/usr systems both are the same directory; copying twice is harmless.
    if [[ -d "$d" ]]; then
        mkdir -p "$root/usr/lib/systemd/system"
        cp -a "$d/." "$root/usr/lib/systemd/system/"
    fi
done
cp -- "$SYSTEM_UNIT" "$TEMPLATE_UNIT" "$root/etc/systemd/system/"

for unit in credrefresh.service "$INSTANCE"; do
    rc=0
    out="$(systemd-analyze verify --man=no --generators=no --recursive-errors=no \
            --root="$root" "$root/etc/systemd/system/$unit" 2>&1)" || rc=$?
    judge_verify "$unit" "$rc" "$out"
done

# ---- verify: user unit ----------------------------------------------------
# --root is not supported together with --user, so instead point HOME (which
# is what %h expands to for the user manager) and the XDG directories at a
# throw-away home that holds a stub ~/.local/bin/credrefresh.
uhome="$tmp/home"
mkdir -p "$uhome/.config" "$uhome/.local/share" "$uhome/.local/state" "$uhome/.cache" \
         "$tmp/user-units" "$tmp/run"
chmod 0700 "$tmp/run"
stub "$uhome/.local/bin/credrefresh"
cp -- "$USER_UNIT" "$tmp/user-units/credrefresh.service"
user_env=(HOME="$uhome" XDG_RUNTIME_DIR="$tmp/run" XDG_CONFIG_HOME="$uhome/.config"
          XDG_DATA_HOME="$uhome/.local/share" XDG_STATE_HOME="$uhome/.local/state"
          XDG_CACHE_HOME="$uhome/.cache")
rc=0
out="$(env "${user_env[@]}" systemd-analyze verify --user --man=no --generators=no \
        --recursive-errors=no "$tmp/user-units/credrefresh.service" 2>&1)" || rc=$?
judge_verify "user/credrefresh.service" "$rc" "$out"

# ---- security -------------------------------------------------------------
# security LABEL MAX_x10 [systemd-analyze options...] UNIT_PATH
# (environment assignments for the call are taken from the array sec_env)
sec_env=()
security() {
    local label="$1" max="$2" rc=0 out score
    shift 2
    out="$(env ${sec_env[@]+"${sec_env[@]}"} systemd-analyze security --offline=true \
            --no-pager --threshold="$max" "$@" 2>&1)" || rc=$?
    score="$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9][0-9]*\.[0-9]\).*/\1/p' <<<"$out" | tail -n 1)"
    if [[ -z "$score" ]]; then
        echo "$out" >&2
        fail "no exposure score for $label (exit $rc)"
        return
    fi
    echo "EXPOSURE $label $score"
    if ((rc != 0)) || awk -v s="$score" -v m="$max" 'BEGIN { exit !(s * 10 > m) }'; then
        echo "$out" >&2
        fail "$label exposure $score is above $((max / 10)).$((max % 10))"
    fi
}

security credrefresh.service "$MAX_SYSTEM" "$root/etc/systemd/system/credrefresh.service"
security "$INSTANCE" "$MAX_OTHER" "$root/etc/systemd/system/$INSTANCE"
sec_env=("${user_env[@]}")   # the user manager needs HOME and XDG_RUNTIME_DIR
security user/credrefresh.service "$MAX_OTHER" --user "$tmp/user-units/credrefresh.service"
sec_env=()

if ((failures)); then
    echo "check.sh: $failures check(s) failed" >&2
    exit 1
fi
echo "check.sh: all checks passed"
