"""Client secrets stored as salted, slow hashes (scrypt), compared in constant time.

A stored hash is a self-describing string ``scrypt$<n>$<r>$<p>$<salt>$<hash>`` (salt and hash in
base64url), so the cost can be raised later without breaking stored secrets. The plain secret is
never stored, cached or logged; only its last four characters are kept, to help people tell
secrets apart (`secret_suffix`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import threading

__all__ = ["SCRYPT_N", "hash_secret", "verify_secret", "verify_nothing"]

# scrypt with n=2**14, r=8, p=1 costs about 16 MiB and tens of milliseconds per check: slow for
# an attacker holding the database, quick enough for a development server and its tests.
SCRYPT_N = 2**14
_R = 8
_P = 1
_SALT_BYTES = 16
_HASH_BYTES = 32
_MAXMEM = 64 * 1024 * 1024


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# Each scrypt run holds 128 * r * n bytes (16 MiB here): bound how many run at once, so a burst
# of token requests cannot make the server allocate gigabytes.
_CONCURRENT = threading.BoundedSemaphore(max(2, min(8, os.cpu_count() or 2)))


def _scrypt(secret: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    with _CONCURRENT:
        return hashlib.scrypt(secret.encode("utf-8"), salt=salt, n=n, r=r, p=p,
                              maxmem=_MAXMEM, dklen=_HASH_BYTES)


def hash_secret(secret: str, *, n: int = SCRYPT_N) -> str:
    """The storable hash of `secret`, with a fresh random salt."""
    salt = secrets.token_bytes(_SALT_BYTES)
    return f"scrypt${n}${_R}${_P}${_b64(salt)}${_b64(_scrypt(secret, salt, n, _R, _P))}"


def verify_secret(secret: str, stored: str) -> bool:
    """True when `secret` hashes to `stored`; False for any mismatch or unreadable hash."""
    try:
        scheme, n, r, p, salt, expected = stored.split("$")
        if scheme != "scrypt":
            return False
        actual = _scrypt(secret, _unb64(salt), int(n), int(r), int(p))
        return hmac.compare_digest(actual, _unb64(expected))
    except (ValueError, TypeError):
        return False


_DUMMY_SALT = b"m2m-guard: none!"  # 16 bytes, as a real salt


def verify_nothing(secret: str) -> bool:
    """Spend the time of one check on a client that does not exist (so response time does not
    tell which client ids exist): one scrypt run with the stored hashes' parameters, compared
    with nothing; always False."""
    hmac.compare_digest(_scrypt(secret, _DUMMY_SALT, SCRYPT_N, _R, _P), bytes(_HASH_BYTES))
    return False
