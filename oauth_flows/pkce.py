"""PKCE (RFC 7636) and ``state`` values for the browser logins of the OAuth providers.

Claude, Codex and Qwen logins use S256 code challenges; every browser flow carries a random
``state`` that the callback must return unchanged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True, slots=True)
class PkcePair:
    """A code verifier (kept server-side) and its S256 challenge (sent in the authorize URL)."""

    verifier: str
    challenge: str
    method: str = "S256"


def new_pair(length: int = 64) -> PkcePair:
    """A fresh verifier of ``length`` characters (43–128, per RFC 7636) and its challenge."""
    if not 43 <= length <= 128:
        raise ValueError("a PKCE verifier has 43 to 128 characters")
    verifier = _b64url(secrets.token_bytes(96))[:length]
    return PkcePair(verifier=verifier, challenge=challenge_for(verifier))


def challenge_for(verifier: str) -> str:
    """The S256 challenge of ``verifier``."""
    return _b64url(hashlib.sha256(verifier.encode("ascii")).digest())


def new_state() -> str:
    """An unguessable ``state`` for one login attempt."""
    return secrets.token_urlsafe(32)


def state_matches(expected: str, received: str) -> bool:
    """Compare a returned ``state`` in constant time."""
    return bool(expected) and hmac.compare_digest(expected.encode(), received.encode())
