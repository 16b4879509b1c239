"""Tester logins: accounts with argon2id password hashes, a password rule, and a back-off per
account and per client address.

Accounts come from ``QUIMBOT_TESTERS`` (``name:password`` or ``name:HASH``, separated by commas
or newlines) and from ``--testers-file`` (one ``name:HASH`` per line; a plain password there is
refused). Produce a hash line with::

    python -m tutor.auth hash NAME          # asks for the password twice, prints NAME:$argon2id$...

Hashing uses argon2-cffi's ``PasswordHasher`` (argon2id with the RFC 9106 low-memory profile):
a maintained binding of the reference implementation, salted and versioned in the hash string
itself, so hashes made today still verify after its defaults change.
"""

from __future__ import annotations

import getpass
import os
import re
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from core.errors import QuimbotError

MIN_PASSWORD_CHARS = 12
HASH_PREFIX = "$argon2"
# Commas separate accounts in QUIMBOT_TESTERS, but an argon2 hash has commas of its own
# ("m=65536,t=3,p=4"): split only on a comma that starts a new "name:".
_ACCOUNT_SPLIT = re.compile(r",(?=[^,:$\s][^,:$]*:)")
# At most this many password checks at once: each argon2 check takes 64 MiB for ~50 ms, so a
# login flood from many addresses cannot take the server's memory.
_VERIFY_SLOTS = threading.BoundedSemaphore(2)


def _hasher():
    try:
        from argon2 import PasswordHasher
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise QuimbotError("Tester logins need argon2-cffi: pip install argon2-cffi") from exc
    return PasswordHasher()


def check_password_rule(password: str) -> None:
    """Raise QuimbotError unless the password is long enough to be a real password."""
    if len(password or "") < MIN_PASSWORD_CHARS:
        raise QuimbotError(f"A tester password needs at least {MIN_PASSWORD_CHARS} characters "
                           f"(this one has {len(password or '')}).")


def hash_password(password: str) -> str:
    """An argon2id hash string of a password that passes the password rule."""
    check_password_rule(password)
    return _hasher().hash(password)


def hash_line(name: str, password: str) -> str:
    """A ``name:HASH`` line for --testers-file."""
    name = (name or "").strip()
    if not name or ":" in name or "," in name:
        raise QuimbotError("A tester name must be non-empty and contain no ':' or ','.")
    return f"{name}:{hash_password(password)}"


def _parse_entries(raw: str, where: str, allow_plain: bool, split_commas: bool) -> dict[str, str]:
    accounts: dict[str, str] = {}
    lines = raw.splitlines()
    items = [part for line in lines for part in (_ACCOUNT_SPLIT.split(line) if split_commas else [line])]
    for number, item in enumerate(items, start=1):
        item = item.strip()
        if not item or item.startswith("#"):
            continue
        name, sep, secret = item.partition(":")
        if not sep or not name.strip() or not secret:
            raise QuimbotError(f"Tester account {number} in {where} is not NAME:PASSWORD or NAME:HASH.")
        name = name.strip()
        if secret.startswith(HASH_PREFIX):
            accounts[name] = secret
            continue
        if not allow_plain:
            raise QuimbotError(f"Tester {name!r} in {where} has a plain password; the file holds hashes only. "
                               f"Make the line with: python -m tutor.auth hash {name}")
        try:
            check_password_rule(secret)
        except QuimbotError as exc:
            raise QuimbotError(f"Tester {name!r} in {where}: {exc}") from None
        accounts[name] = hash_password(secret)
    return accounts


def load_testers(text: str | None = None, path: str | Path | None = None) -> dict[str, str]:
    """Tester accounts as ``{name: argon2 hash}``: from ``text`` (default: QUIMBOT_TESTERS; plain
    passwords of at least MIN_PASSWORD_CHARS characters, or hashes) and from a file of ``name:HASH``
    lines. Raises QuimbotError saying which entry is wrong and how to fix it."""
    raw = text if text is not None else os.environ.get("QUIMBOT_TESTERS", "")
    accounts = _parse_entries(raw, "QUIMBOT_TESTERS", allow_plain=True, split_commas=True)
    if path:
        try:
            file_text = Path(path).read_text()
        except OSError as exc:
            raise QuimbotError(f"Cannot read the testers file {path}: {exc.strerror}.") from exc
        accounts.update(_parse_entries(file_text, f"the testers file {path}", allow_plain=False,
                                       split_commas=False))
    for name, secret in accounts.items():
        _check_hash(name, secret)
    return accounts


def _check_hash(name: str, encoded: str) -> None:
    from argon2.exceptions import InvalidHashError

    try:
        from argon2 import extract_parameters

        extract_parameters(encoded)
    except (InvalidHashError, ValueError) as exc:
        raise QuimbotError(f"The password hash of tester {name!r} is not a valid argon2 hash; make it again "
                           f"with: python -m tutor.auth hash {name}") from exc


def make_auth(accounts: dict[str, str]) -> Callable[[str, str], bool]:
    """The check Gradio calls on login: verify against the account's argon2 hash. An unknown name
    costs the same as a known one, so the answer time does not tell which names exist."""
    hasher = _hasher()
    dummy = hasher.hash("quimbot-no-such-account")

    def check(username: str, password: str) -> bool:
        from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

        encoded = accounts.get((username or "").strip())
        with _VERIFY_SLOTS:
            try:
                hasher.verify(encoded or dummy, password or "")
            except (VerifyMismatchError, VerificationError, InvalidHashError):
                return False
        return encoded is not None

    return check


# -- back-off ---------------------------------------------------------------------------------
@dataclass
class _Failures:
    count: int = 0
    last: float = 0.0


class LoginLimiter:
    """A back-off per account and per client address.

    The first ``free`` attempts of a key (an account name or an address) are checked at once;
    after that, each further attempt must wait ``base * 2 ** (failures - free)`` seconds (at most
    ``cap``; ``base`` defaults to QUIMBOT_LOGIN_BACKOFF_S or 1 s) after the last failure, and an attempt that comes early is refused without checking
    the password. Every attempt counts as a failure until it succeeds, so parallel guesses are
    counted too; a successful login clears its account and its address. Failures older than
    ``forget`` seconds are forgotten. ``clock`` is injectable for tests."""

    def __init__(self, free: int = 5, base: float | None = None, cap: float = 900.0, forget: float = 86_400.0,
                 max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic):
        if base is None:  # QUIMBOT_LOGIN_BACKOFF_S: the first wait, in seconds (default 1)
            try:
                base = float(os.environ.get("QUIMBOT_LOGIN_BACKOFF_S", "1"))
            except ValueError:
                raise QuimbotError("QUIMBOT_LOGIN_BACKOFF_S must be a number of seconds.") from None
        self.free, self.base, self.cap, self.forget = free, base, max(cap, base), forget
        self.max_keys = max_keys
        self.clock = clock
        self._keys: OrderedDict[str, _Failures] = OrderedDict()
        self._lock = threading.Lock()

    def _delay(self, failures: int) -> float:
        if failures < self.free:
            return 0.0
        return min(self.cap, self.base * 2 ** (failures - self.free))

    def _wait_for(self, key: str, now: float) -> float:
        entry = self._keys.get(key)
        if entry is None:
            return 0.0
        if now - entry.last > self.forget:
            del self._keys[key]
            return 0.0
        return max(0.0, entry.last + self._delay(entry.count) - now)

    def begin(self, account: str, address: str) -> float:
        """Start an attempt: 0 when it may be checked (and it is counted as a failure until
        ``succeeded``), else the seconds to wait (nothing is counted)."""
        keys = (f"account:{(account or '').strip().lower()}", f"address:{address}")
        with self._lock:
            now = self.clock()
            wait = max(self._wait_for(key, now) for key in keys)
            if wait > 0:
                return wait
            for key in keys:
                entry = self._keys.pop(key, None) or _Failures()
                entry.count += 1
                entry.last = now
                self._keys[key] = entry
            while len(self._keys) > self.max_keys:
                self._keys.popitem(last=False)
        return 0.0

    def succeeded(self, account: str, address: str) -> None:
        with self._lock:
            self._keys.pop(f"account:{(account or '').strip().lower()}", None)
            self._keys.pop(f"address:{address}", None)


def main(argv: list[str] | None = None) -> int:
    """``python -m tutor.auth hash NAME``: print a ``NAME:HASH`` line for --testers-file. The
    password is asked twice on a terminal, or read as one line from standard input."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tutor.auth",
                                     description="Make a tester account line for --testers-file.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("hash", help="print NAME:HASH (argon2id) for a tester account")
    p.add_argument("name")
    args = parser.parse_args(argv)
    try:
        if sys.stdin.isatty():
            password = getpass.getpass(f"Password for {args.name}: ")
            if getpass.getpass("Again: ") != password:
                raise QuimbotError("The two passwords differ.")
        else:
            password = sys.stdin.readline().rstrip("\r\n")
        print(hash_line(args.name, password))
    except QuimbotError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
