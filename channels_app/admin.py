"""Channels (team-scoped), and the platform's proxy pool, prices and runtime settings.

Credentials and proxy URLs are write-only in forms and masked in lists (gateway.admin_secrets).
"""

from __future__ import annotations

from django.contrib import admin
from django.db import models

from accounts.admin_scoping import (
    SameTeamForm,
    SingletonAdmin,
    SuperuserOnlyAdmin,
    TeamFilter,
    TeamScopedAdmin,
    TeamScopedInline,
)
from channels_app.models import Channel, ChannelKey, ModelPrice, ProxyEntry, RuntimeSettings
from gateway.admin_secrets import MaskedSecretsMixin, WriteOnlySecretsForm, masked


class ChannelKeyInline(MaskedSecretsMixin, TeamScopedInline):
    model = ChannelKey
    team_lookup = "channel__team"
    fields = ("secret", "proxy_url", "enabled")


class ChannelForm(SameTeamForm, WriteOnlySecretsForm):
    same_team_fields = ("groups",)


@admin.register(Channel)
class ChannelAdmin(MaskedSecretsMixin, TeamScopedAdmin):
    form = ChannelForm
    list_display = (
        "name",
        "team",
        "kind",
        "enabled",
        "priority",
        "weight",
        "prefix",
        masked("secret"),
        "success_count",
        "failure_count",
        "latency",
    )
    list_select_related = ("team",)
    list_filter = (TeamFilter, "kind", "enabled")
    search_fields = ("name", "prefix", "notes", "base_url")
    ordering = ("team__name", "-priority", "name")
    readonly_fields = ("created_at", "updated_at")
    filter_horizontal = ("groups",)
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    inlines = (ChannelKeyInline,)
    fieldsets = (
        (None, {"fields": ("team", "kind", "name", "enabled", "notes")}),
        ("Upstream", {"fields": ("base_url", "secret", "headers", "proxy", "proxy_url")}),
        ("Models", {"fields": ("prefix", "served_models", "excluded_models")}),
        ("Routing", {"fields": ("priority", "weight", "groups")}),
        ("Options", {"fields": ("options",)}),
        ("Dates", {"fields": ("created_at", "updated_at")}),
    )

    @admin.display(description="latency ms (first byte)", ordering="latency_ewma_ms")
    def latency(self, channel: Channel) -> str:
        """The averages of successful attempts (EWMA); a dash until the first one."""
        if not channel.latency_ewma_ms:
            return "–"
        return f"{channel.latency_ewma_ms:.0f} ({channel.ttfb_ewma_ms:.0f})"


@admin.register(ProxyEntry)
class ProxyEntryAdmin(MaskedSecretsMixin, SuperuserOnlyAdmin):
    list_display = ("name", masked("url"), "enabled", "description")
    list_filter = ("enabled",)
    search_fields = ("name", "description")
    ordering = ("name",)


@admin.register(ModelPrice)
class ModelPriceAdmin(SuperuserOnlyAdmin):
    list_display = ("model", "input_per_million", "output_per_million", "cached_per_million", "updated_at")
    search_fields = ("model",)
    ordering = ("model",)


@admin.register(RuntimeSettings)
class RuntimeSettingsAdmin(MaskedSecretsMixin, SingletonAdmin):
    readonly_fields = ("updated_at",)
