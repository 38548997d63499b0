"""Helpers for admin tests: URLs of admin pages, a logged-in client, a viewer persona."""

from __future__ import annotations

import re

from django.contrib.auth.models import User
from django.db import models
from django.test import Client
from django.urls import reverse

from accounts.models import Team, TeamMembership

FULL_KEY = re.compile(r"sk-[a-z0-9]{32}")


def changelist_url(model: type[models.Model]) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")


def add_url(model: type[models.Model]) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_add")


def change_url(obj: models.Model) -> str:
    return reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[obj.pk])


def delete_url(obj: models.Model) -> str:
    return reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_delete", args=[obj.pk])


def client_for(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def viewer_of(team: Team, username: str = "dave") -> User:
    """A staff user who may only read ``team``'s objects."""
    user = User.objects.create_user(username, f"{username}@example.test", "pw", is_staff=True)
    TeamMembership.objects.create(user=user, team=team, role=TeamMembership.Role.VIEWER)
    return user


def page(client: Client, url: str) -> str:
    """GET ``url``, insist on 200 and return the HTML."""
    response = client.get(url)
    assert response.status_code == 200, (url, response.status_code)
    return response.content.decode()


def is_hidden(client: Client, url: str) -> bool:
    """True when the admin refuses to show ``url``: 404, 403, or the redirect home for a missing object."""
    response = client.get(url)
    return response.status_code in (302, 403, 404)
