"""Who may see and change what in the admin: team scoping (D16), platform objects, singletons.

Superusers see and change everything. Any other staff user sees the objects of the teams they
belong to, changes those of the teams where they are an admin, and only reads those where they
are a viewer. Membership decides, not Django model permissions, so team admins need none
granted by hand. A staff user without a team sees nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from weakref import WeakKeyDictionary

from django import forms
from django.contrib import admin
from django.core.exceptions import FieldDoesNotExist, PermissionDenied
from django.db import models
from django.db.models import QuerySet
from django.forms import ModelChoiceField, ModelMultipleChoiceField
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse

from accounts.models import Team, TeamMembership

# Roles are read once per request: the admin asks for permissions many times per page.
_roles_by_request: WeakKeyDictionary[HttpRequest, dict[int, str]] = WeakKeyDictionary()


def is_superuser(request: HttpRequest) -> bool:
    user = request.user
    return bool(user.is_active and getattr(user, "is_superuser", False))


def team_roles(request: HttpRequest) -> dict[int, str]:
    """{team id: role} of the requesting user."""
    roles = _roles_by_request.get(request)
    if roles is None:
        user = request.user
        rows = TeamMembership.objects.filter(user_id=user.pk) if user.is_authenticated else None
        roles = dict(rows.values_list("team_id", "role")) if rows is not None else {}
        _roles_by_request[request] = roles
    return roles


def member_team_ids(request: HttpRequest) -> set[int]:
    """Teams whose objects the user may see."""
    return set(team_roles(request))


def admin_team_ids(request: HttpRequest) -> set[int]:
    """Teams whose objects the user may change."""
    return {team for team, role in team_roles(request).items() if role == TeamMembership.Role.ADMIN}


def team_id_of(obj: models.Model, lookup: str) -> int | None:
    """Follow ``lookup`` (``"team"``, ``"channel__team"``, ``"pk"``) from ``obj`` to a team id."""
    *path, last = lookup.split("__")
    target: Any = obj
    for part in path:
        target = getattr(target, part)
    return target.pk if last == "pk" else getattr(target, f"{last}_id")


def allowed(request: HttpRequest, obj: models.Model | None, lookup: str, teams: set[int]) -> bool:
    """Superusers always; others when ``obj`` (or, without one, any object) is in ``teams``."""
    if is_superuser(request):
        return True
    if obj is None:
        return bool(teams)
    return team_id_of(obj, lookup) in teams


def limit_choices(request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
    """Narrow related-object choices to the teams the user administers."""
    if is_superuser(request):
        return queryset
    if queryset.model is Team:
        return queryset.filter(pk__in=admin_team_ids(request))
    try:
        queryset.model._meta.get_field("team")
    except FieldDoesNotExist:
        return queryset  # platform objects (proxies, users) are shared
    return queryset.filter(team__in=admin_team_ids(request))


class TeamScopedAdmin(admin.ModelAdmin):
    """A ModelAdmin over a team-owned model; ``team_lookup`` leads from a row to its team."""

    team_lookup = "team"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        queryset = super().get_queryset(request)
        if is_superuser(request):
            return queryset
        return queryset.filter(**{f"{self.team_lookup}__in": member_team_ids(request)})

    def editable(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        """The rows of ``queryset`` the user may change (actions run on these only)."""
        if is_superuser(request):
            return queryset
        return queryset.filter(**{f"{self.team_lookup}__in": admin_team_ids(request)})

    def has_module_permission(self, request: HttpRequest) -> bool:
        return is_superuser(request) or bool(team_roles(request))

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return allowed(request, obj, self.team_lookup, member_team_ids(request))

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return allowed(request, obj, self.team_lookup, admin_team_ids(request))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return allowed(request, None, self.team_lookup, admin_team_ids(request))

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return allowed(request, obj, self.team_lookup, admin_team_ids(request))

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> ModelChoiceField | None:
        field = super().formfield_for_foreignkey(db_field, request, **kwargs)
        if field is not None and field.queryset is not None:
            field.queryset = limit_choices(request, field.queryset)
        return field

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, Any]:
        initial = super().get_changeform_initial_data(request)
        teams = admin_team_ids(request)
        if self.team_lookup == "team" and len(teams) == 1 and not is_superuser(request):
            initial.setdefault("team", str(next(iter(teams))))
        return initial

    def formfield_for_manytomany(
        self, db_field: Any, request: HttpRequest, **kwargs: Any
    ) -> ModelMultipleChoiceField | None:
        field = super().formfield_for_manytomany(db_field, request, **kwargs)
        if field is not None and field.queryset is not None:
            field.queryset = limit_choices(request, field.queryset)
        return field

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        # The form already limits the team choices; this guards against a crafted POST.
        if not allowed(request, obj, self.team_lookup, admin_team_ids(request)):
            raise PermissionDenied
        super().save_model(request, obj, form, change)


class TeamScopedInline(admin.TabularInline):
    """An inline whose rows belong to the parent's team; permissions follow the parent."""

    team_lookup = "team"
    parent_team_lookup = "team"
    extra = 0

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        queryset = super().get_queryset(request)
        if is_superuser(request):
            return queryset
        return queryset.filter(**{f"{self.team_lookup}__in": member_team_ids(request)})

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return allowed(request, obj, self.parent_team_lookup, member_team_ids(request))

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return allowed(request, obj, self.parent_team_lookup, admin_team_ids(request))

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return allowed(request, obj, self.parent_team_lookup, admin_team_ids(request))

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return allowed(request, obj, self.parent_team_lookup, admin_team_ids(request))


class TeamFilter(admin.SimpleListFilter):
    """Filter by team, offering only the teams the user can see (never other tenants' names)."""

    title = "team"
    parameter_name = "team"

    def __init__(self, request: HttpRequest, params: Any, model: Any, model_admin: Any) -> None:
        self.team_lookup: str = getattr(model_admin, "team_lookup", "team")
        super().__init__(request, params, model, model_admin)

    def lookups(self, request: HttpRequest, model_admin: Any) -> Iterable[tuple[str, str]]:
        teams = Team.objects.all()
        if not is_superuser(request):
            teams = teams.filter(pk__in=member_team_ids(request))
        return [(str(team.pk), team.name) for team in teams]

    def has_output(self) -> bool:
        return len(self.lookup_choices) > 1

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value is None:
            return queryset
        if not value.isdigit():
            return queryset.none()
        return queryset.filter(**{self.team_lookup: int(value)})


class SameTeamForm(forms.ModelForm):
    """A model form that refuses related objects of another team than the row's own."""

    same_team_fields: tuple[str, ...] = ()

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        team = cleaned.get("team") if "team" in self.fields else getattr(self.instance, "team", None)
        if team is None:
            return cleaned
        for name in self.same_team_fields:
            value = cleaned.get(name)
            related = [value] if isinstance(value, models.Model) else list(value or [])
            if any(getattr(item, "team_id", None) != team.pk for item in related):
                self.add_error(name, f"Choose only objects of team {team}.")
        return cleaned


class SuperuserOnlyAdmin(admin.ModelAdmin):
    """Platform objects shared by every team: only superusers see or change them."""

    def has_module_permission(self, request: HttpRequest) -> bool:
        return is_superuser(request)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return is_superuser(request)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return is_superuser(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return is_superuser(request)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return is_superuser(request)


class SingletonAdmin(SuperuserOnlyAdmin):
    """A one-row settings model: added once, never deleted, the list opens the row itself."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return is_superuser(request) and not self.model._default_manager.exists()

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        row = self.model._default_manager.first()
        if row is None or not self.has_view_permission(request, row):
            return super().changelist_view(request, extra_context)
        return redirect(reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_change", args=[row.pk]))
