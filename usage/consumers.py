"""Live stats over WebSocket: the last minute of traffic, pushed every few seconds.

Staff only (session auth through Channels' auth middleware). Figures come from the request
log, so every gateway process behind a load balancer is counted, not just this one.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.db.models import Count, Q, Sum
from django.utils import timezone

from usage.models import RequestLog
from usage.recorder import recorder


class LiveStatsConsumer(AsyncJsonWebsocketConsumer):
    """Sends ``{"type": "stats", ...}`` on connect and every ``interval`` seconds (1–60)."""

    interval = 3.0

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated or not user.is_staff:
            await self.close(code=4401)
            return
        await self.accept()
        self._task = asyncio.ensure_future(self._push())

    async def disconnect(self, code: int) -> None:
        task = getattr(self, "_task", None)
        if task is not None:
            task.cancel()

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if isinstance(content, dict) and isinstance(content.get("interval"), (int, float)):
            self.interval = float(min(max(content["interval"], 1), 60))

    async def _push(self) -> None:
        while True:
            await self.send_json(await self._stats())
            await asyncio.sleep(self.interval)

    @database_sync_to_async
    def _stats(self) -> dict[str, Any]:
        user = self.scope["user"]
        since = timezone.now() - dt.timedelta(seconds=60)
        logs = RequestLog.objects.filter(time__gte=since)
        if not user.is_superuser:
            logs = logs.filter(team__memberships__user=user)
        totals = logs.aggregate(
            requests=Count("id"),
            failed=Count("id", filter=Q(status_code__gte=400)),
            tokens=Sum("total_tokens"),
        )
        return {
            "type": "stats",
            "window_seconds": 60,
            "requests": totals["requests"],
            "failed": totals["failed"],
            "tokens": totals["tokens"] or 0,
            "recorder_backlog": recorder.backlog(),
        }
