"""Password and client-secret hashing with scrypt (stdlib, memory-hard)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

# scrypt cost: N=2^14, r=8, p=1 uses 16 MiB and ~50 ms per hash: slows guessing, not logins.
_N, _R, _P, _LEN = 2**14, 8, 1, 32
_PREFIX = "scrypt"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str) -> str:
    """`scrypt$N$r$p$salt$hash`, salt random per call."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=_N, r=_R, p=_P, dklen=_LEN)
    return f"{_PREFIX}${_N}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, encoded: str | None) -> bool:
    """Constant-time check; an unknown user (encoded None) costs the same as a wrong password."""
    if not encoded:
        hash_password(password)  # same work as a real check: no user-enumeration by timing
        return False
    try:
        prefix, n, r, p, salt, digest = encoded.split("$")
        if prefix != _PREFIX:
            return False
        expected = _unb64(digest)
        actual = hashlib.scrypt(
            password.encode("utf-8"),
            salt=_unb64(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
            maxmem=256 * 1024 * 1024,
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def new_secret(nbytes: int = 32) -> str:
    """A random URL-safe secret (client secrets, demo passwords)."""
    return secrets.token_urlsafe(nbytes)


def sha256_hex(value: str) -> str:
    """How high-entropy bearer values (codes, refresh tokens, session ids) are stored."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()
