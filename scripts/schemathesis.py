#!/usr/bin/env python3
"""Schemathesis against a real gateway: the API contract checked by a tool we did not write.

Issue 22. Starts `tollgate demo` on loopback (throttles pinned high through `--config`), then runs
Schemathesis 4.x with every check on, in phases, each with credentials of its own:

  payer      the payer's admin, logged in with MFA (a real TOTP code from oathtool)
  member     the created member's developer (no IAM rights: refusals everywhere)
  anonymous  no Authorization header at all
  then one phase per operation that ends the caller's token or changes the world under the other
  phases (logout, password change, leaving the organization, ...), each run by a freshly signed-up
  account, set up for it (an organization, a member, an access key, MFA) through the API.

Any finding fails the run (exit 1). Usage:

  python3 scripts/schemathesis.py [--bin target/debug/tollgate] [--examples 20]

Environment: TOLLGATE_BIN (the binary), TOLLGATE_ST_EXAMPLES (examples per operation and phase,
default 20), TOLLGATE_ST_SEED (default 22), TOLLGATE_ST_REPORT (a directory for Schemathesis'
JUnit reports).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Operations that end the caller's token or change the world under the other phases. Each runs
# alone, as a fresh account; `setup` names what that account needs first.
DESTRUCTIVE = {
    "logout": "plain",
    # The owner sets another user's password (no `old_password` needed), so valid requests
    # really change it; a wrong `old_password` on one's own is checked by the test suite.
    "changePassword": "other_user",
    "putPasswordPolicy": "plain",
    "deleteAccessKey": "access_key",
    "enrollMfa": "mfa",
    "verifyMfa": "mfa",
    "leaveOrganization": "member_of_org",
    "removeMemberAccount": "org_with_member",
    "enableAllFeatures": "org",
    "deleteOrganization": "org",
}

# The demo's throttles, pinned high so that Schemathesis measures the contract, not the limits
# (the limits have tests of their own). 429 `SlowDown` stays documented on every operation.
THROTTLES = {
    "[auth]": ["argon2_queue = 100000", "argon2_queue_per_address = 100000"],
    "[audit]": ["deny_rate = 0"],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    parser.add_argument("--bin", default=os.environ.get("TOLLGATE_BIN", str(target / "debug" / "tollgate")))
    parser.add_argument("--examples", type=int, default=int(os.environ.get("TOLLGATE_ST_EXAMPLES", "20")))
    parser.add_argument("--seed", type=int, default=int(os.environ.get("TOLLGATE_ST_SEED", "22")),
                        help="Schemathesis' seed (fixed, so that CI runs the same examples every time)")
    parser.add_argument("--only", help="run only the phases whose names match this regex")
    parser.add_argument("--phases", help="Schemathesis phases to run (default: all of them)")
    args = parser.parse_args()

    try:
        import schemathesis  # noqa: F401  (run below as `python3 -m schemathesis.cli`, i.e. `st`)
    except ImportError:
        print("schemathesis: not installed; install it with `pip install 'schemathesis>=4,<5'`", file=sys.stderr)
        return 2
    if shutil.which("oathtool") is None:
        print("schemathesis: `oathtool` not found; install Debian's oathtool", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="tollgate-st-") as tmp:
        tmp = Path(tmp)
        gateway = Gateway(Path(args.bin), tmp)
        try:
            gateway.start()
            return run_phases(gateway, tmp, args)
        finally:
            gateway.stop()


class Gateway:
    """`tollgate demo` on a free loopback port, with the throttles pinned high."""

    def __init__(self, binary: Path, tmp: Path) -> None:
        self.binary = binary
        self.tmp = tmp
        self.data = tmp / "data"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.log = tmp / "gateway.log"

    def start(self) -> None:
        config = (ROOT / "config" / "tollgate.toml").read_text()
        for section, lines in THROTTLES.items():
            if section in config:
                config = config.replace(section, section + "\n" + "\n".join(lines), 1)
            else:
                config += f"\n{section}\n" + "\n".join(lines) + "\n"
        config_path = self.tmp / "tollgate.toml"
        config_path.write_text(config)
        command = [
            str(self.binary), "demo", "--fresh",
            "--config", str(config_path),
            "--data-dir", str(self.data),
            "--listen", f"127.0.0.1:{self.port}",
        ]
        self.process = subprocess.Popen(command, stdout=self.log.open("w"), stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"schemathesis: the gateway exited early:\n{self.log.read_text()}")
            try:
                status, _ = request("GET", f"{self.url}/readyz")
                if status == 200 and (self.data / "demo.json").exists():
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"schemathesis: the gateway did not become ready:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def world(self) -> dict:
        return json.loads((self.data / "demo.json").read_text())


def run_phases(gateway: Gateway, tmp: Path, args: argparse.Namespace) -> int:
    world = gateway.world()
    api = Api(gateway.url)
    phases: list[tuple[str, dict[str, str], list[str], list[str]]] = []

    payer = world["payer"]
    payer_token = api.login(payer["account_id"], payer["admin"]["user"], payer["admin"]["password"],
                            mfa_code=totp(world["payer_totp_secret"]))
    exclude = [arg for op in DESTRUCTIVE for arg in ("--exclude-operation-id", op)]
    phases.append(("payer", {"account_id": payer["account_id"]}, ["-H", f"Authorization: Bearer {payer_token}"], exclude))

    member = world["created_member"]
    developer = world["developer"]
    member_token = api.login(member["account_id"], developer["user"], developer["password"])
    phases.append(("member", {"account_id": member["account_id"]}, ["-H", f"Authorization: Bearer {member_token}"], exclude))

    phases.append(("anonymous", {}, [], exclude))

    for operation, setup in DESTRUCTIVE.items():
        phases.append((operation, {}, [], ["--include-operation-id", operation, f"@setup:{setup}"]))

    failed = []
    for name, parameters, auth, selection in phases:
        if args.only and not re.search(args.only, name):
            continue
        if any(s.startswith("@setup:") for s in selection):
            setup = next(s for s in selection if s.startswith("@setup:")).removeprefix("@setup:")
            selection = [s for s in selection if not s.startswith("@setup:")]
            parameters, token = fresh_account(api, setup)
            auth = ["-H", f"Authorization: Bearer {token}"]
        print(f"schemathesis: phase `{name}`", flush=True)
        if args.phases:
            selection = [*selection, "--phases", args.phases]
        if not run_schemathesis(gateway, tmp, name, parameters, auth, selection, args.examples, args.seed):
            failed.append(name)
    if failed:
        print(f"schemathesis: findings in phase(s) {', '.join(failed)}; the gateway log is above the findings", file=sys.stderr)
        return 1
    print("schemathesis: no findings in any phase")
    return 0


def run_schemathesis(gateway: Gateway, tmp: Path, name: str, parameters: dict[str, str],
                     auth: list[str], selection: list[str], examples: int, seed: int) -> bool:
    config = tmp / f"{name}.toml"
    # The phase supplies its own caller; Schemathesis must not sign up one of its own.
    lines = ["[auth]", "auto-signup = false", "", "[parameters]"]
    lines += [f'"path.{k}" = "{v}"' for k, v in parameters.items()]
    config.write_text("\n".join(lines) + "\n")
    command = [
        sys.executable, "-m", "schemathesis.cli",
        "--config-file", str(config), "run", str(ROOT / "docs" / "openapi.json"),
        "--url", gateway.url,
        "--checks", "all",
        "--max-examples", str(examples),
        "--seed", str(seed),
        # One worker: with more, Hypothesis' lambda descriptions race in `ast.parse` on
        # CPython 3.11 ("AST constructor recursion depth mismatch") and a phase errors out.
        "--workers", "1",
        "--request-timeout", "30",
        "--no-color",
        *auth, *selection,
    ]
    report = os.environ.get("TOLLGATE_ST_REPORT")
    if report:
        command += ["--report", "junit", "--report-junit-path", str(Path(report) / f"{name}.xml")]
    result = subprocess.run(command, cwd=ROOT)
    return result.returncode == 0


class Api:
    """Just enough of the JSON API to set up a phase's caller."""

    def __init__(self, url: str) -> None:
        self.url = url

    def call(self, method: str, path: str, body: dict | None = None, token: str | None = None,
             expect: tuple[int, ...] = (200, 201, 204)) -> dict:
        status, payload = request(method, self.url + path, body, token)
        if status not in expect:
            raise SystemExit(f"schemathesis: setup call {method} {path} answered {status}: {payload}")
        return payload

    def login(self, account_id: str, user: str, password: str, mfa_code: str | None = None) -> str:
        body = {"account_id": account_id, "user": user, "password": password}
        if mfa_code:
            body["mfa_code"] = mfa_code
        return self.call("POST", "/auth/login", body)["token"]


def fresh_account(api: Api, setup: str) -> tuple[dict[str, str], str]:
    """A new standalone account set up for one destructive phase: its path parameters and token."""
    suffix = os.urandom(4).hex()
    password = f"Fresh-{suffix}-1!"
    owner = "owner"
    account = api.call("POST", "/accounts", {
        "name": f"st-{suffix}", "email": f"owner@st-{suffix}.example",
        "owner_user": owner, "owner_password": password,
    })["account_id"]
    token = api.login(account, owner, password)
    parameters = {"account_id": account, "user": owner}
    if setup == "other_user":
        api.call("POST", f"/accounts/{account}/users", {"user": "target", "password": password}, token=token)
        parameters["user"] = "target"
    if setup == "access_key":
        key = api.call("POST", f"/accounts/{account}/users/{owner}/access-keys", token=token)
        parameters["key_id"] = key["access_key_id"]
    if setup in ("mfa", "org", "org_with_member", "member_of_org"):
        enrollment = api.call("POST", f"/accounts/{account}/users/{owner}/mfa", token=token)
        secret = enrollment["secret"]
        # Verify with the previous step's code, so that the login's current code is a later step (U5).
        api.call("POST", f"/accounts/{account}/users/{owner}/mfa/verify", {"code": totp(secret, -30)}, token=token)
        token = api.login(account, owner, password, mfa_code=totp(secret))
    if setup in ("org", "org_with_member", "member_of_org"):
        api.call("POST", "/org", {}, token=token, expect=(200, 201))
    if setup == "org_with_member":
        created = api.call("POST", "/org/accounts", {
            "name": f"st-member-{suffix}", "email": f"member@st-{suffix}.example",
            "owner_user": owner, "owner_password": password,
        }, token=token, expect=(200, 201))
        parameters["account_id"] = created["account_id"]
    if setup == "member_of_org":
        # The fresh account owns an organization; a second fresh account joins it by invitation
        # and is the caller that leaves.
        org_token = token
        member_parameters, member_token = fresh_account(api, "plain")
        api.call("POST", "/org/invitations", {"account_id": member_parameters["account_id"]},
                 token=org_token, expect=(200, 201))
        handshakes = api.call("GET", "/handshakes", token=member_token)
        handshake = handshakes["handshakes"][0]["id"]
        api.call("POST", f"/handshakes/{handshake}/accept", token=member_token)
        return member_parameters, member_token
    return parameters, token


def totp(secret: str, offset_seconds: int = 0) -> str:
    """A real TOTP code from oathtool, as an authenticator app would show it."""
    now = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=offset_seconds)
    stamp = now.strftime("%Y-%m-%d %H:%M:%S UTC")
    out = subprocess.run(["oathtool", "--totp", "-b", secret, "--now", stamp],
                         check=True, capture_output=True, text=True)
    return out.stdout.strip()


def request(method: str, url: str, body: dict | None = None, token: str | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            raw = response.read()
            status = response.status
    except urllib.error.HTTPError as e:
        raw = e.read()
        status = e.code
    try:
        return status, json.loads(raw) if raw else {}
    except ValueError:
        return status, {"raw": raw.decode(errors="replace")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    sys.exit(main())
