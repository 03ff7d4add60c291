"""One hub session signing many spokes: ``credrefresh once`` with a hub and N spokes against the
fake STS on 127.0.0.1, counting which key signed each AssumeRole call. With ``--mfa`` the hub is
an MFA session instead (``credrefresh mfa``, then N roles signed with that session).

    python tests/perf/chains.py --spokes 500
    python tests/perf/chains.py --spokes 1000 --mfa
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import FakeSts, source_env, write_config


def main() -> None:
    """Report calls signed by the hub's session and the wall time."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--spokes", type=int, default=500)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--mfa", action="store_true", help="an MFA session signs every role")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="credrefresh-chains-") as name:
        work = Path(name)
        with FakeSts(work, latency=args.latency, error_rate=0.0, lifetime=3600) as sts:
            creds = work / "credentials"
            config = write_config(work / "c.toml", creds, sts.url, args.spokes + 1, 64)
            text = config.read_text()
            if args.mfa:
                serial = "arn:aws:iam::123456789012:mfa/bench"
                text = text.replace("[[roles]]", f'[source]\nmfa_serial = "{serial}"\n[[roles]]', 1)
                config.write_text(text)
                subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "credrefresh",
                        "mfa",
                        "--code",
                        "123456",
                        "--config",
                        str(config),
                    ],
                    env=source_env(work),
                    capture_output=True,
                    check=True,
                    timeout=120,
                )
            else:
                # role-0000 is the hub; every other role is its spoke.
                text = text.replace('role_arn = "', 'source_profile = "role-0000"\nrole_arn = "')
                hub = 'role_arn = "arn:aws:iam::123456789012:role/role-0000"'
                text = text.replace(f'source_profile = "role-0000"\n{hub}', hub)
                config.write_text(text)
            started = time.perf_counter()
            result = subprocess.run(
                [sys.executable, "-m", "credrefresh", "once", "--config", str(config)],
                env=source_env(work),
                capture_output=True,
                check=False,
                timeout=600,
            )
            took = time.perf_counter() - started
            with urllib.request.urlopen(f"{sts.url}/_fake/calls", timeout=10) as answer:  # noqa: S310 - loopback
                calls = json.load(answer)
    signers = Counter(call["caller_access_key_id"] for call in calls)
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith(b"{")]
    refreshed = [e for e in events if e["event"] == "role.refreshed"]
    chained = [e for e in refreshed if e.get("source")]
    if args.mfa:
        print(f"exit {result.returncode}; {len(refreshed)} roles refreshed")
    else:
        print(f"exit {result.returncode}; {len(chained)} spokes refreshed with source role-0000")
    print(f"{took:.2f} s wall; the fake STS keeps the last {len(calls)} calls:")
    print(f"distinct signing keys: {len(signers)}; most calls by one key: {signers.most_common(1)}")


if __name__ == "__main__":
    main()
