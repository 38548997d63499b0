"""Rebuild the in-memory routing table when channels, groups, path routes or their settings change."""

from typing import Any

from django.db.models.signals import m2m_changed, post_delete, post_save
from django.dispatch import receiver

from accounts.models import ChannelGroup, PathRoute
from channels_app import scheduler
from channels_app.models import Channel, ChannelKey, ProxyEntry, RuntimeSettings


@receiver([post_save, post_delete], sender=Channel)
@receiver([post_save, post_delete], sender=ChannelKey)
@receiver([post_save, post_delete], sender=ProxyEntry)
@receiver([post_save, post_delete], sender=RuntimeSettings)
@receiver([post_save, post_delete], sender=ChannelGroup)
@receiver([post_save, post_delete], sender=PathRoute)
@receiver(m2m_changed, sender=Channel.groups.through)
def forget_routing_table(**kwargs: Any) -> None:
    scheduler.invalidate()
