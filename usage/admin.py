"""The request log (read-only, team-scoped) and the log storage settings in the admin."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.safestring import SafeString

from accounts.admin_scoping import SingletonAdmin, TeamFilter, TeamScopedAdmin, is_superuser
from usage.bodies import readable
from usage.models import LogStorageSettings, RequestBody, RequestLog


class OutcomeFilter(admin.SimpleListFilter):
    title = "outcome"
    parameter_name = "outcome"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("ok", "succeeded"), ("4xx", "client error"), ("5xx", "upstream or server error")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        bounds = {"ok": (0, 400), "4xx": (400, 500), "5xx": (500, 1000)}.get(self.value() or "")
        if bounds is None:
            return queryset
        return queryset.filter(status_code__gte=bounds[0], status_code__lt=bounds[1])


@admin.register(RequestLog)
class RequestLogAdmin(TeamScopedAdmin):
    """Rows are written by the recorder only: people read them, superusers may delete them."""

    list_display = (
        "time",
        "team",
        "key_display",
        "channel_name",
        "requested_model",
        "upstream_model",
        "client_dialect",
        "stream",
        "status_code",
        "latency_ms",
        "ttfb_ms",
        "total_tokens",
        "cost",
    )
    list_select_related = ("team",)
    list_filter = (OutcomeFilter, "client_dialect", "stream", TeamFilter)
    search_fields = ("requested_model", "upstream_model", "channel_name", "key_display", "path", "error_type")
    date_hierarchy = "time"
    ordering = ("-time", "-id")
    list_per_page = 100
    show_full_result_count = False  # counting a large log twice per page is the slow part
    readonly_fields = ("request_body", "response_body")
    fieldsets = (
        (None, {"fields": ("time", "request_id", "attempt", "team", "api_key", "key_display", "path")}),
        ("Request", {"fields": ("client_dialect", "requested_model", "stream")}),
        ("Upstream", {"fields": ("group", "channel", "channel_name", "upstream_kind", "upstream_model")}),
        ("Result", {"fields": ("status_code", "error_type", "error_message", "latency_ms", "ttfb_ms")}),
        (
            "Tokens and cost",
            {"fields": ("input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens", "total_tokens", "cost")},
        ),
        ("Bodies", {"fields": ("request_body", "response_body")}),
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return is_superuser(request)

    @admin.display(description="Request body")
    def request_body(self, obj: RequestLog) -> SafeString | str:
        return _body_html(obj, "request")

    @admin.display(description="Response body")
    def response_body(self, obj: RequestLog) -> SafeString | str:
        return _body_html(obj, "response")


def _body_html(log: RequestLog, part: str) -> SafeString | str:
    try:
        data = getattr(log.body, part)
    except RequestBody.DoesNotExist:
        return "not stored"
    if not data:
        return "empty"
    return format_html('<pre style="white-space: pre-wrap; max-height: 40em; overflow: auto">{}</pre>', readable(data))


@admin.register(LogStorageSettings)
class LogStorageSettingsAdmin(SingletonAdmin):
    list_display = ("__str__", "store_content", "content_retention_days", "max_total_size_mb")
