"""System checks of the accounts app."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Tags, register
from django.core.checks import Warning as CheckWarning


@register(Tags.compatibility)
def limits_are_shared(app_configs: Any, **kwargs: Any) -> list[CheckMessage]:
    """Warn when quotas and rate limits live in one process's memory outside development (D6)."""
    if settings.REDIS_URL or settings.DEBUG:
        return []
    return [
        CheckWarning(
            "REDIS_URL is not set: quotas and rate limits are kept in this process's memory.",
            hint=(
                "That is exact for a single gateway process only; with several workers or hosts each keeps "
                "its own windows and counters and keys can exceed their limits. Set REDIS_URL to share them."
            ),
            id="accounts.W001",
        )
    ]
