"""Secrets at rest and secrets on display.

Upstream credentials are stored with Fernet (MultiFernet so keys can rotate: put the new key
first in ``CLIRELAY_ENCRYPTION_KEY``, comma-separated, old keys after it). Everything that
shows a secret to a person shows ``mask()`` of it.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.db import models

_ENCRYPTED_MARK = "fernet:"


@lru_cache(maxsize=1)
def _fernet() -> MultiFernet:
    keys = [k.strip() for k in settings.CLIRELAY_ENCRYPTION_KEY.split(",") if k.strip()]
    return MultiFernet([Fernet(k.encode()) for k in keys])


def encrypt(plain: str) -> str:
    """Encrypt ``plain`` for storage; the empty string stays empty."""
    if not plain:
        return ""
    return _ENCRYPTED_MARK + _fernet().encrypt(plain.encode()).decode()


def decrypt(stored: str) -> str:
    """Decrypt a value written by ``encrypt``."""
    if not stored:
        return ""
    if not stored.startswith(_ENCRYPTED_MARK):
        raise ValueError("value is not encrypted")
    try:
        return _fernet().decrypt(stored[len(_ENCRYPTED_MARK) :].encode()).decode()
    except InvalidToken as exc:
        raise ValueError("cannot decrypt: CLIRELAY_ENCRYPTION_KEY does not match the stored secret") from exc


def mask(secret: str) -> str:
    """Show a secret as ``sk-ab…xyz``: enough to recognise it, never enough to use it."""
    if not secret:
        return ""
    if len(secret) <= 8:
        return secret[:1] + "…"
    if len(secret) <= 12:
        return secret[:3] + "…" + secret[-2:]
    return secret[:5] + "…" + secret[-3:]


class EncryptedTextField(models.TextField):
    """A text field whose value is Fernet-encrypted in the database and plain in Python."""

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> str:
        return decrypt(value) if value else ""

    def to_python(self, value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, str) and value.startswith(_ENCRYPTED_MARK):
            return decrypt(value)
        return str(value)

    def get_prep_value(self, value: Any) -> str:
        return encrypt(self.to_python(value))
