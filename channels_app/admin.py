"""Channels (team-scoped), and the platform's proxy pool, prices and runtime settings.

Credentials and proxy URLs are write-only in forms and masked in lists (gateway.admin_secrets).
Header and option values may be credentials too: readers (team viewers) see them masked.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from functools import cache
from typing import Any

from django.contrib import admin
from django.db import models
from django.http import HttpRequest

from accounts.admin_scoping import (
    SameTeamForm,
    SingletonAdmin,
    SuperuserOnlyAdmin,
    TeamFilter,
    TeamScopedAdmin,
    TeamScopedInline,
    is_superuser,
)
from channels_app.models import Channel, ChannelKey, ModelPrice, ProxyEntry, RuntimeSettings
from gateway.admin_secrets import MaskedSecretsMixin, WriteOnlySecretsForm, masked
from gateway.encryption import mask


def _masked_tree(value: Any) -> Any:
    """``value`` with every string inside it masked; keys, numbers and flags kept."""
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, dict):
        return {key: _masked_tree(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_masked_tree(item) for item in value]
    return value


@cache
def masked_values(name: str) -> Callable[[models.Model], str]:
    """A read-only field showing JSON field ``name`` with its string values masked."""

    @admin.display(description=name.replace("_", " ").capitalize())
    def show(obj: models.Model) -> str:
        return json.dumps(_masked_tree(getattr(obj, name, None)), ensure_ascii=False)

    show.__name__ = f"masked_values_{name}"
    return show


def _replace(entries: Sequence[Any], swaps: dict[str, Any]) -> list[Any]:
    return [tuple(_replace(e, swaps)) if isinstance(e, list | tuple) else swaps.get(e, e) for e in entries]


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
        "shared",
        "priority",
        "prefix",
        masked("secret"),
        "success_count",
        "failure_count",
        "latency",
    )
    list_select_related = ("team",)
    list_filter = (TeamFilter, "kind", "enabled", "shared")
    search_fields = ("name", "prefix", "notes", "base_url")
    ordering = ("team__name", "-priority", "name")
    readonly_fields = ("created_at", "updated_at")
    filter_horizontal = ("groups",)
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    inlines = (ChannelKeyInline,)
    fieldsets = (
        (None, {"fields": ("team", "kind", "name", "enabled", "shared", "notes")}),
        ("Upstream", {"fields": ("base_url", "secret", "headers", "proxy", "proxy_url")}),
        ("Models", {"fields": ("prefix", "served_models", "excluded_models")}),
        ("Routing", {"fields": ("priority", "groups")}),
        ("Options", {"fields": ("options",)}),
        ("Dates", {"fields": ("created_at", "updated_at")}),
    )

    masked_value_fields = ("headers", "options")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[Any]:
        readonly = list(super().get_readonly_fields(request, obj))
        if not is_superuser(request):
            readonly.append("shared")  # sharing reaches other tenants: a platform decision
        if self._shows_form(request, obj):
            return readonly
        return readonly + [masked_values(name) for name in self.masked_value_fields]

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> list[Any]:
        fieldsets = super().get_fieldsets(request, obj)
        if self._shows_form(request, obj):
            return fieldsets
        swaps = {name: masked_values(name) for name in self.masked_value_fields}
        return [(title, {**opts, "fields": _replace(opts["fields"], swaps)}) for title, opts in fieldsets]

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
