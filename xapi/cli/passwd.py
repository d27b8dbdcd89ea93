"""`xapi passwd USER`: sets (or with --delete removes) a user's password in <data>/passwd, for `--auth local`.

A running daemon sees the change at the next login; no restart needed."""
from __future__ import annotations

import getpass
import hmac
import os
import sys

from xapi.auth.passwords import MAX_PASSWORD, PasswordFile, valid_user


def add_parser(sub) -> None:
    p = sub.add_parser("passwd", help="set or remove a user's password (local authentication)",
                       description="Set a user's password in <data>/passwd, the password file of "
                                   "`xapi serve --auth local`. A running daemon sees the change at the "
                                   "next login.")
    p.add_argument("user", help="user name")
    p.add_argument("--data-dir", default=os.environ.get("XAPI_DATA_DIR", "var"),
                   help="the daemon's data folder (default: $XAPI_DATA_DIR, else ./var)")
    p.add_argument("--stdin", action="store_true", help="read the password from one line of standard input")
    p.add_argument("--delete", action="store_true", help="remove the user from the password file")
    p.set_defaults(log_level="WARNING")


def _read_password(args) -> str:
    if args.stdin:
        line = sys.stdin.readline()
        return line[:-1] if line.endswith("\n") else line
    first = getpass.getpass(f"New password for {args.user}: ")
    second = getpass.getpass("Retype new password: ")
    if not hmac.compare_digest(first.encode("utf-8", "surrogatepass"), second.encode("utf-8", "surrogatepass")):
        raise SystemExit("xapi passwd: the passwords don't match; nothing changed")
    return first


def run(args) -> int:
    try:
        return _run(args)
    except OSError as e:
        print(f"xapi passwd: {e}", file=sys.stderr)
        return 1


def _run(args) -> int:
    if not valid_user(args.user):
        print(f"xapi passwd: invalid user name {args.user!r}", file=sys.stderr)
        return 2
    data_dir = os.path.abspath(args.data_dir)
    pf = PasswordFile(data_dir)
    if args.delete:
        if not pf.delete(args.user):
            print(f"xapi passwd: no user {args.user} in {pf.path}", file=sys.stderr)
            return 1
        print(f"xapi passwd: removed {args.user} from {pf.path}")
        return 0
    try:
        password = _read_password(args)
    except (EOFError, KeyboardInterrupt):
        print("\nxapi passwd: nothing changed", file=sys.stderr)
        return 1
    size = len(password.encode("utf-8", "surrogatepass"))
    if not 0 < size <= MAX_PASSWORD:
        print(f"xapi passwd: a password is 1 to {MAX_PASSWORD} bytes; nothing changed", file=sys.stderr)
        return 1
    pf.set(args.user, password)
    print(f"xapi passwd: password for {args.user} set in {pf.path}")
    if args.user == "root":
        kept = os.path.join(data_dir, "root-password")
        try:
            with open(kept) as f:
                stale = f.read().strip() != password
        except FileNotFoundError:
            stale = False
        if stale:
            os.unlink(kept)
            print(f"xapi passwd: removed {kept}, which held root's previous password")
        if os.environ.get("XAPI_ROOT_PASSWORD"):
            print("xapi passwd: note: $XAPI_ROOT_PASSWORD is set; a daemon started with it resets root's "
                  "password to it", file=sys.stderr)
    return 0
