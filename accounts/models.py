"""Tenants, their members, routing groups and client API keys."""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone

from accounts.keys import display_parts, generate_key, hash_key


class Team(models.Model):
    """The tenant: owns keys, groups, channels and the logs they produce."""

    name = models.CharField(max_length=100, unique=True)
    slug = models.SlugField(max_length=100, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class TeamMembership(models.Model):
    """A user's role in a team. Team admins edit their team's objects; viewers only read."""

    class Role(models.TextChoices):
        ADMIN = "admin", "Admin"
        VIEWER = "viewer", "Viewer"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.ADMIN)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "team"], name="unique_membership")]

    def __str__(self) -> str:
        return f"{self.user} in {self.team} ({self.role})"


class ChannelGroup(models.Model):
    """A routing group: a named set of channels, reachable under ``/<slug>/v1/...``."""

    class Strategy(models.TextChoices):
        """How a request sent to the group's URL picks among the group's channels."""

        WEIGHTED = "", "Weighted: smooth weighted round-robin, each channel's priority is its weight"
        ROUND_ROBIN = "round-robin", "Round robin over the highest priority tier (lower tiers are the fallback)"
        FILL_FIRST = "fill-first", "Fill first: the first channel of the highest tier until it fails"

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="channel_groups")
    name = models.CharField(max_length=100)
    slug = models.SlugField(max_length=100, help_text="Path segment: requests to /<slug>/v1/... use this group.")
    description = models.TextField(blank=True)
    priority = models.IntegerField(default=0, help_text="Higher wins when a channel matches several groups.")
    strategy = models.CharField(
        max_length=20,
        choices=Strategy.choices,
        default=Strategy.WEIGHTED,
        blank=True,
        help_text="For requests to this group's URL or path routes; plain /v1 requests follow the global strategy.",
    )
    match_prefixes = models.JSONField(
        default=list, blank=True, help_text="Channels whose prefix is in this list join the group."
    )
    match_channels = models.JSONField(
        default=list, blank=True, help_text="Channel names that join the group (case-insensitive)."
    )

    class Meta:
        ordering = ["team", "-priority", "name"]
        verbose_name = "routing group"
        constraints = [
            models.UniqueConstraint(fields=["team", "slug"], name="unique_group_slug_per_team"),
            models.UniqueConstraint("team", Lower("name"), name="unique_group_name_per_team"),
        ]

    def __str__(self) -> str:
        return self.name


class PathRoute(models.Model):
    """A URL path prefix that scopes requests to one routing group."""

    class Fallback(models.TextChoices):
        NONE = "none", "none: fail when the group has no channel"
        DEFAULT = "default", "default: use all channels when the group has none available"

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="path_routes")
    path = models.CharField(max_length=200, help_text="For example /pro")
    group = models.ForeignKey(ChannelGroup, on_delete=models.CASCADE, related_name="path_routes")
    strip_prefix = models.BooleanField(default=True)
    fallback = models.CharField(max_length=10, choices=Fallback.choices, default=Fallback.NONE)

    class Meta:
        ordering = ["team", "path"]
        constraints = [models.UniqueConstraint(fields=["team", "path"], name="unique_path_route_per_team")]

    def __str__(self) -> str:
        return f"{self.path} → {self.group}"


class ApiKeyQuerySet(models.QuerySet["ApiKey"]):
    def for_raw_key(self, raw: str) -> ApiKeyQuerySet:
        return self.filter(key_hash=hash_key(raw))


class ApiKey(models.Model):
    """A virtual client key: who may call the gateway, and within which limits."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    notes = models.TextField(blank=True)
    enabled = models.BooleanField(default=True)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Empty: never expires.")
    key_prefix = models.CharField(max_length=8, editable=False)
    key_suffix = models.CharField(max_length=4, editable=False)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    allowed_models = models.JSONField(
        default=list, blank=True, help_text="Model patterns (* matches anything); empty allows every model."
    )
    allowed_channel_groups = models.ManyToManyField(ChannelGroup, blank=True, related_name="api_keys")
    allowed_channels = models.ManyToManyField("channels_app.Channel", blank=True, related_name="api_keys")
    daily_request_limit = models.PositiveIntegerField(default=0, help_text="0 = unlimited")
    total_request_limit = models.PositiveIntegerField(default=0, help_text="0 = unlimited")
    token_quota = models.PositiveBigIntegerField(default=0, help_text="0 = unlimited")
    spending_limit_usd = models.DecimalField(max_digits=14, decimal_places=6, default=0, help_text="0 = unlimited")
    rpm_limit = models.PositiveIntegerField(default=0, help_text="Requests per minute; 0 = unlimited")
    tpm_limit = models.PositiveIntegerField(default=0, help_text="Tokens per minute; 0 = unlimited")
    concurrency_limit = models.PositiveIntegerField(default=0, help_text="Requests in flight; 0 = unlimited")
    system_prompt = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        ordering = ["team", "name"]
        verbose_name = "API key"
        constraints = [models.UniqueConstraint(fields=["team", "name"], name="unique_key_name_per_team")]

    def __str__(self) -> str:
        return f"{self.name} ({self.masked})"

    @property
    def masked(self) -> str:
        """The key as it may be displayed: ``sk-ab…xyz``."""
        return f"{self.key_prefix}…{self.key_suffix}" if self.key_hash else ""

    def set_key(self, raw: str) -> None:
        """Store ``raw`` as prefix, suffix and HMAC; the plaintext itself is never kept."""
        self.key_prefix, self.key_suffix = display_parts(raw)
        self.key_hash = hash_key(raw)

    def issue_key(self) -> str:
        """Give this row a fresh random key and return it: the only time it is visible."""
        raw = generate_key()
        self.set_key(raw)
        return raw

    def is_expired(self, now: dt.datetime | None = None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or timezone.now())


class ApiKeyUsageCounter(models.Model):
    """A key's lifetime usage, kept by the usage recorder: the source of truth for its quotas.

    ``total_requests`` counts client requests (attempt 1 of each ``request_id``), tokens and
    cost count every attempt (D2). Redis quota counters are seeded from this row.
    """

    api_key = models.OneToOneField(ApiKey, on_delete=models.CASCADE, primary_key=True, related_name="usage_counter")
    total_requests = models.PositiveBigIntegerField(default=0)
    total_tokens = models.PositiveBigIntegerField(default=0)
    total_cost = models.DecimalField(max_digits=20, decimal_places=8, default=0, help_text="USD")
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = "API key usage"
        verbose_name_plural = "API key usage"

    def __str__(self) -> str:
        return f"{self.total_requests} requests, {self.total_tokens} tokens, ${self.total_cost:.2f}"
