"""How much lifetime does a reader of the file ever find left?

Runs ``credrefresh run`` (a real subprocess) against the fake STS (its own process) issuing
credentials of LIFETIME seconds for ROLES roles, and reads the credentials file with botocore's
parser every few milliseconds for DURATION seconds. Reports the smallest remaining lifetime seen,
as seconds and as a fraction of the lifetime. The guarantee is at least a quarter.

    .venv/bin/python tests/soak/reader_margin.py [--roles 25] [--lifetime 20] [--duration 60]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from botocore.configloader import raw_config_parse


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--roles", type=int, default=25)
    parser.add_argument("--lifetime", type=float, default=20.0)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--interval", type=float, default=0.005)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="credrefresh-margin-") as name:
        tmp = Path(name)
        fake = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "support.fakests",
                "--port",
                "0",
                "--latency",
                "0.05",
                "--lifetime",
                str(args.lifetime),
            ],
            stdout=subprocess.PIPE,
            cwd=Path(__file__).resolve().parents[1],
            text=True,
        )
        daemon = None
        try:
            assert fake.stdout is not None
            url = json.loads(fake.stdout.readline())["url"]
            creds = tmp / "credentials"
            lines = [
                f'credentials_file = "{creds}"',
                f'sts_endpoint_url = "{url}"',
                f'state_file = "{tmp / "state.json"}"',
                'region = "us-east-1"',
            ]
            for i in range(args.roles):
                lines += [
                    "[[roles]]",
                    f'profile = "r{i}"',
                    f'role_arn = "arn:aws:iam::123456789012:role/r{i}"',
                ]
            (tmp / "c.toml").write_text("\n".join(lines) + "\n")
            # READY=1 on our own notify socket says the first round is written.
            notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            notify.bind(str(tmp / "notify.sock"))
            notify.settimeout(30)
            env = dict(
                os.environ,
                AWS_ACCESS_KEY_ID="AKIASOURCE",
                AWS_SECRET_ACCESS_KEY="x",
                AWS_EC2_METADATA_DISABLED="true",
                NOTIFY_SOCKET=str(tmp / "notify.sock"),
            )
            daemon = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "credrefresh",
                    "run",
                    "--config",
                    str(tmp / "c.toml"),
                    "--log-format",
                    "json",
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            while notify.recv(4096) != b"READY=1":  # bounded by the socket's timeout
                pass
            notify.close()
            reads = 0
            worst = float("inf")
            end = time.monotonic() + args.duration
            while time.monotonic() < end:
                parsed = raw_config_parse(str(creds))
                now = datetime.now(UTC)
                for section in parsed.values():
                    if "x_security_token_expires" in section:
                        expires = datetime.fromisoformat(section["x_security_token_expires"])
                        worst = min(worst, (expires - now).total_seconds())
                reads += 1
                time.sleep(args.interval)  # the reader's own pace, not a wait for anything
            print(
                json.dumps(
                    {
                        "roles": args.roles,
                        "lifetime_s": args.lifetime,
                        "watched_s": args.duration,
                        "reads": reads,
                        "min_remaining_s": round(worst, 3),
                        "min_remaining_fraction": round(worst / args.lifetime, 3),
                    }
                )
            )
            return 0 if worst >= args.lifetime / 4 else 1
        finally:
            for proc in (daemon, fake):
                if proc is not None and proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(timeout=20)


if __name__ == "__main__":
    raise SystemExit(main())
