"""Encrypted fields in the admin: write-only in forms, masked everywhere else.

Every ``EncryptedTextField`` of a model is a secret. Its form input starts empty (a password
input that never renders a value), its help text shows the masked current value, and leaving
it empty keeps what is stored. Readers without change permission see the masked value only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache
from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.admin.options import BaseModelAdmin
from django.db import models
from django.http import HttpRequest
from django.utils.html import escape

from gateway.encryption import EncryptedTextField, mask


def secret_field_names(model: type[models.Model]) -> list[str]:
    return [f.name for f in model._meta.get_fields() if isinstance(f, EncryptedTextField)]


@cache
def masked(name: str) -> Callable[[models.Model], str]:
    """An admin column / read-only field showing field ``name`` masked (one callable per name)."""

    @admin.display(description=name.replace("_", " ").capitalize())
    def show(obj: models.Model) -> str:
        return mask(getattr(obj, name, "") or "")

    show.__name__ = f"masked_{name}"
    return show


class WriteOnlySecretsForm(forms.ModelForm):
    """A model form whose encrypted fields accept a new value and never show the old one."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name in secret_field_names(self._meta.model):
            if name in self.fields:
                self.fields[name] = self._write_only_field(name)
                self.initial[name] = ""  # the plaintext must not reach the page, not even hidden

    def _current(self, name: str) -> str:
        if self.instance.pk is None:
            return ""
        return getattr(self.instance, name, "") or ""

    def _write_only_field(self, name: str) -> forms.CharField:
        model_field = self._meta.model._meta.get_field(name)
        current = self._current(name)
        # The admin renders help texts unescaped; the masked value is data, so escape it.
        hint = f"Current: {escape(mask(current))}. Leave empty to keep it." if current else "Not set."
        return forms.CharField(
            label=self.fields[name].label,
            required=not (model_field.blank or current),
            widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
            help_text=f"{model_field.help_text} {hint}".strip(),
        )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        for name in secret_field_names(self._meta.model):
            if name in self.fields and not cleaned.get(name) and name not in self.errors:
                cleaned[name] = self._current(name)
        return cleaned


def _swap(entries: Sequence[Any], secrets: list[str], seen: set[Any]) -> list[Any]:
    """Replace secret field names by their masked display, dropping repeats."""
    result: list[Any] = []
    for entry in entries:
        if isinstance(entry, list | tuple):
            result.append(tuple(_swap(entry, secrets, seen)))
            continue
        shown = masked(entry) if entry in secrets else entry
        if shown not in seen:
            seen.add(shown)
            result.append(shown)
    return result


class MaskedSecretsMixin(BaseModelAdmin):
    """For ModelAdmins and inlines: write-only secret inputs, masked secrets for readers."""

    form = WriteOnlySecretsForm

    def _shows_form(self, request: HttpRequest, obj: Any) -> bool:
        return obj is None or self.has_change_permission(request, obj)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[Any]:
        readonly = list(super().get_readonly_fields(request, obj))
        if self._shows_form(request, obj):
            return readonly
        return readonly + [masked(name) for name in secret_field_names(self.model)]

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> list[Any]:
        fieldsets = super().get_fieldsets(request, obj)
        if self._shows_form(request, obj):
            return list(fieldsets)
        secrets = secret_field_names(self.model)
        seen: set[Any] = set()
        return [(title, {**opts, "fields": _swap(opts["fields"], secrets, seen)}) for title, opts in fieldsets]
