"""The request log: one row per upstream attempt, bodies in a separate compressed table."""

from __future__ import annotations

import uuid
from typing import Any

from django.db import models


class Dialect(models.TextChoices):
    """The wire format a client spoke to CliRelay."""

    OPENAI_CHAT = "openai-chat", "OpenAI Chat Completions"
    OPENAI_RESPONSES = "openai-responses", "OpenAI Responses"
    ANTHROPIC_MESSAGES = "anthropic-messages", "Anthropic Messages"
    GEMINI = "gemini", "Gemini"


class RequestLog(models.Model):
    """One upstream attempt of one client request, with its tokens, latency and cost."""

    time = models.DateTimeField(db_index=True, help_text="When the attempt started")
    request_id = models.UUIDField(default=uuid.uuid4, db_index=True)
    attempt = models.PositiveSmallIntegerField(default=1)
    team = models.ForeignKey("accounts.Team", null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    api_key = models.ForeignKey(
        "accounts.ApiKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="request_logs"
    )
    key_display = models.CharField(max_length=16, blank=True, help_text="The key, masked")
    group = models.ForeignKey(
        "accounts.ChannelGroup", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    channel = models.ForeignKey(
        "channels_app.Channel", null=True, blank=True, on_delete=models.SET_NULL, related_name="request_logs"
    )
    channel_name = models.CharField(max_length=100, blank=True)
    client_dialect = models.CharField(max_length=24, choices=Dialect.choices)
    upstream_kind = models.CharField(max_length=32, blank=True)
    path = models.CharField(max_length=200, blank=True)
    requested_model = models.CharField(max_length=200, blank=True)
    upstream_model = models.CharField(max_length=200, blank=True)
    stream = models.BooleanField(default=False)
    status_code = models.PositiveSmallIntegerField()
    error_type = models.CharField(max_length=64, blank=True)
    error_message = models.TextField(blank=True)
    latency_ms = models.PositiveIntegerField(default=0)
    ttfb_ms = models.PositiveIntegerField(default=0, help_text="Time to the first byte from the upstream")
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    cached_tokens = models.PositiveIntegerField(default=0)
    reasoning_tokens = models.PositiveIntegerField(default=0)
    total_tokens = models.PositiveIntegerField(default=0)
    cost = models.DecimalField(max_digits=14, decimal_places=8, default=0)

    class Meta:
        ordering = ["-time", "-id"]
        indexes = [
            models.Index(fields=["team", "-time"], name="log_team_time"),
            models.Index(fields=["api_key", "-time"], name="log_key_time"),
        ]

    def __str__(self) -> str:
        return f"{self.time:%Y-%m-%d %H:%M:%S} {self.requested_model} {self.status_code}"

    @property
    def succeeded(self) -> bool:
        return 200 <= self.status_code < 400


class RequestBody(models.Model):
    """The zstd-compressed request and response bodies of a logged attempt.

    Client credentials never reach this table: only bodies are kept, never headers or
    query strings.
    """

    log = models.OneToOneField(RequestLog, on_delete=models.CASCADE, primary_key=True, related_name="body")
    request = models.BinaryField(blank=True)
    response = models.BinaryField(blank=True)
    size = models.PositiveIntegerField(default=0, help_text="Compressed bytes")

    class Meta:
        verbose_name_plural = "request bodies"

    def __str__(self) -> str:
        return f"bodies of log {self.log_id}"


class LogStorageSettings(models.Model):
    """How long request bodies are kept (``request-log-storage`` in config.yaml); one row."""

    store_content = models.BooleanField(default=True)
    content_retention_days = models.PositiveIntegerField(default=30, help_text="0 = forever")
    cleanup_interval_minutes = models.PositiveIntegerField(default=1440)
    max_total_size_mb = models.PositiveIntegerField(default=1024, help_text="0 = no cap")
    vacuum_on_cleanup = models.BooleanField(default=True)

    class Meta:
        verbose_name = "log storage settings"
        verbose_name_plural = "log storage settings"

    def __str__(self) -> str:
        return "Log storage settings"

    def save(self, *args: Any, **kwargs: Any) -> None:
        self.pk = 1
        super().save(*args, **kwargs)

    @classmethod
    def load(cls) -> LogStorageSettings:
        """The row, or the defaults when none has been saved (reading never writes)."""
        return cls.objects.filter(pk=1).first() or cls(pk=1)
