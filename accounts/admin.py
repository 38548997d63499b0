"""Teams, routing groups, path routes and client API keys in the admin, scoped by team (D16).

API keys are issued server-side: the plaintext appears once, in the success message of the
add or rotate that created it (D5), and is never stored or shown again.
"""

from __future__ import annotations

from typing import Any
from weakref import WeakKeyDictionary

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import redirect
from django.urls import URLPattern, path, reverse

from accounts.admin_scoping import (
    SameTeamForm,
    TeamFilter,
    TeamScopedAdmin,
    TeamScopedInline,
    is_superuser,
)
from accounts.models import ApiKey, ApiKeyUsageCounter, ChannelGroup, PathRoute, Team, TeamMembership

# Plaintext keys issued while handling a request, held only until the response is built.
_issued_keys: WeakKeyDictionary[HttpRequest, str] = WeakKeyDictionary()


class TeamMembershipInline(TeamScopedInline):
    """Members are listed to the team; only superusers change who belongs."""

    model = TeamMembership
    parent_team_lookup = "pk"
    fields = ("user", "role")

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return is_superuser(request)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return is_superuser(request)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return is_superuser(request)


@admin.register(Team)
class TeamAdmin(TeamScopedAdmin):
    """Superusers create and change teams; members may look at their own."""

    team_lookup = "pk"
    list_display = ("name", "slug", "created_at")
    search_fields = ("name", "slug")
    ordering = ("name",)
    prepopulated_fields = {"slug": ("name",)}
    inlines = (TeamMembershipInline,)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return is_superuser(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return is_superuser(request)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return is_superuser(request)


@admin.register(ChannelGroup)
class ChannelGroupAdmin(TeamScopedAdmin):
    list_display = ("name", "slug", "team", "priority", "strategy")
    list_select_related = ("team",)
    list_filter = (TeamFilter, "strategy")
    search_fields = ("name", "slug", "description")
    ordering = ("team__name", "-priority", "name")
    prepopulated_fields = {"slug": ("name",)}


class PathRouteForm(SameTeamForm):
    same_team_fields = ("group",)


@admin.register(PathRoute)
class PathRouteAdmin(TeamScopedAdmin):
    form = PathRouteForm
    list_display = ("path", "group", "team", "strip_prefix", "fallback")
    list_select_related = ("team", "group")
    list_filter = (TeamFilter, "fallback", "strip_prefix")
    search_fields = ("path", "group__name", "group__slug")
    ordering = ("team__name", "path")


class ApiKeyForm(SameTeamForm):
    same_team_fields = ("allowed_channel_groups", "allowed_channels")


@admin.register(ApiKey)
class ApiKeyAdmin(TeamScopedAdmin):
    form = ApiKeyForm
    list_display = ("name", "team", "key", "enabled", "expires_at", "usage", "created_at")
    list_select_related = ("team", "usage_counter")
    list_filter = (TeamFilter, "enabled")
    search_fields = ("name", "key_prefix", "notes")
    ordering = ("team__name", "name")
    readonly_fields = ("key", "usage", "created_at", "updated_at")
    filter_horizontal = ("allowed_channel_groups", "allowed_channels")
    actions = ("rotate_keys",)
    fieldsets = (
        (None, {"fields": ("team", "name", "key", "enabled", "expires_at", "notes")}),
        ("Access", {"fields": ("allowed_models", "allowed_channel_groups", "allowed_channels")}),
        (
            "Limits",
            {
                "fields": (
                    ("daily_request_limit", "total_request_limit"),
                    ("token_quota", "spending_limit_usd"),
                    ("rpm_limit", "tpm_limit", "concurrency_limit"),
                    "usage",
                )
            },
        ),
        ("Prompt", {"fields": ("system_prompt",)}),
        ("Dates", {"fields": ("created_at", "updated_at")}),
    )

    @admin.display(description="Key", ordering="key_prefix")
    def key(self, obj: ApiKey) -> str:
        return obj.masked or "issued when you save"

    @admin.display(description="Usage so far")
    def usage(self, obj: ApiKey) -> str:
        """Lifetime requests, tokens and cost (``ApiKeyUsageCounter``, read-only)."""
        try:
            return str(obj.usage_counter)
        except ApiKeyUsageCounter.DoesNotExist:
            return "none yet"

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        if not change:
            _issued_keys[request] = obj.issue_key()
        super().save_model(request, obj, form, change)

    def response_add(self, request: HttpRequest, obj: ApiKey, post_url_continue: str | None = None) -> HttpResponse:
        raw = _issued_keys.pop(request, None)
        if raw:
            self._show_once(request, obj, raw)
        return super().response_add(request, obj, post_url_continue)

    def _show_once(self, request: HttpRequest, obj: ApiKey, raw: str) -> None:
        text = f"The key of “{obj.name}” is {raw} — copy it now: it will not be shown again."
        self.message_user(request, text, messages.SUCCESS)

    def _rotate(self, request: HttpRequest, obj: ApiKey) -> None:
        raw = obj.issue_key()
        obj.save(update_fields=["key_prefix", "key_suffix", "key_hash", "updated_at"])
        self.log_change(request, obj, "Rotated the key.")
        self._show_once(request, obj, raw)

    @admin.action(description="Rotate key (issue a new key, the old one stops working)", permissions=["change"])
    def rotate_keys(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        for obj in self.editable(request, queryset):
            self._rotate(request, obj)

    def get_urls(self) -> list[URLPattern]:
        name = f"{self.opts.app_label}_{self.opts.model_name}_rotate"
        rotate = path("<path:object_id>/rotate/", self.admin_site.admin_view(self.rotate_view), name=name)
        return [rotate, *super().get_urls()]

    def rotate_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The change page's "Rotate key" button (POST only)."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        obj = self.get_object(request, unquote(object_id))
        if obj is None:
            raise Http404("No such API key.")
        if not self.has_change_permission(request, obj):
            raise PermissionDenied
        self._rotate(request, obj)
        return redirect(reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_change", args=[obj.pk]))
