"""Client API keys: generation, hashing and display.

A key is ``sk-`` plus 32 characters from ``[a-z0-9]``. The database keeps only its first
five and last three characters (for display) and the hex HMAC-SHA256 of the whole key under
``API_KEY_PEPPER``; the plaintext is shown once, when it is created.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string

from django.conf import settings

_ALPHABET = string.ascii_lowercase + string.digits


def generate_key() -> str:
    """Return a new random client key."""
    return "sk-" + "".join(secrets.choice(_ALPHABET) for _ in range(32))


def hash_key(raw: str) -> str:
    """Return the HMAC under which ``raw`` is stored and looked up."""
    return hmac.new(settings.API_KEY_PEPPER.encode(), raw.encode(), hashlib.sha256).hexdigest()


def display_parts(raw: str) -> tuple[str, str]:
    """Return the (prefix, suffix) kept for showing ``raw`` masked."""
    if len(raw) <= 8:
        return raw[:1], ""
    return raw[:5], raw[-3:]
