"""API key format and hashing.

A key reads `owk_<key_id>_<secret>`: the key id finds the row without a scan,
the secret is 256 random bits. Only HMAC-SHA256(pepper, key) is stored, and
digests are compared with `hmac.compare_digest` (constant time).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

KEY_PREFIX = "owk"
_KEY_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
KEY_ID_LENGTH = 12


@dataclass(frozen=True)
class NewKey:
    key_id: str
    plaintext: str
    digest: bytes


def key_digest(pepper: str, plaintext: str) -> bytes:
    return hmac.new(pepper.encode(), plaintext.encode(), hashlib.sha256).digest()


def generate_key(pepper: str) -> NewKey:
    key_id = "".join(secrets.choice(_KEY_ID_ALPHABET) for _ in range(KEY_ID_LENGTH))
    plaintext = f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
    return NewKey(key_id=key_id, plaintext=plaintext, digest=key_digest(pepper, plaintext))


def parse_key_id(plaintext: str) -> str | None:
    """The key id of a well-formed key, else None (never raises on junk input)."""
    if len(plaintext) > 200:
        return None
    parts = plaintext.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX or len(parts[1]) != KEY_ID_LENGTH:
        return None
    if not all(ch in _KEY_ID_ALPHABET for ch in parts[1]) or len(parts[2]) < 32:
        return None
    return parts[1]


def digests_match(expected: bytes, pepper: str, presented: str) -> bool:
    return hmac.compare_digest(expected, key_digest(pepper, presented))
