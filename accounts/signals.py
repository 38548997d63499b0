"""Keep the in-process key cache true when keys change."""

from typing import Any

from django.db.models.signals import m2m_changed, post_delete, post_save
from django.dispatch import receiver

from accounts import access
from accounts.models import ApiKey


@receiver([post_save, post_delete], sender=ApiKey)
@receiver(m2m_changed, sender=ApiKey.allowed_channel_groups.through)
@receiver(m2m_changed, sender=ApiKey.allowed_channels.through)
def forget_cached_keys(**kwargs: Any) -> None:
    access.invalidate()
