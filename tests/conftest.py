"""Shared fixtures: three personas, the way every tenant-scoped test sees the system.

alice and bob are admins of the same team; charlie belongs to another team. Each persona
has a staff user, a membership and one client API key whose plaintext is on ``.raw_key``.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from django.contrib.auth.models import User

from accounts.models import ApiKey, Team, TeamMembership


@dataclass
class Persona:
    user: User
    team: Team
    key: ApiKey
    raw_key: str
    password: str = "correct horse battery staple"


def _persona(username: str, team: Team, role: str = TeamMembership.Role.ADMIN) -> Persona:
    password = "correct horse battery staple"
    user = User.objects.create_user(username, f"{username}@example.test", password, is_staff=True)
    TeamMembership.objects.create(user=user, team=team, role=role)
    key = ApiKey(team=team, name=f"{username}-key")
    raw = key.issue_key()
    key.save()
    return Persona(user=user, team=team, key=key, raw_key=raw, password=password)


@pytest.fixture
def acme(db: None) -> Team:
    return Team.objects.create(name="Acme", slug="acme")


@pytest.fixture
def globex(db: None) -> Team:
    return Team.objects.create(name="Globex", slug="globex")


@pytest.fixture
def alice(acme: Team) -> Persona:
    return _persona("alice", acme)


@pytest.fixture
def bob(acme: Team) -> Persona:
    return _persona("bob", acme)


@pytest.fixture
def charlie(globex: Team) -> Persona:
    return _persona("charlie", globex)


@pytest.fixture
def superuser(db: None) -> User:
    return User.objects.create_superuser("root", "root@example.test", "correct horse battery staple")


@pytest.fixture(autouse=True)
def _fresh_caches() -> None:
    """Each test starts with empty key and routing caches and no cool-downs (in-process, even with REDIS_URL)."""
    from accounts import access
    from channels_app import cooldowns, scheduler

    access.invalidate()
    scheduler.invalidate()
    scheduler.reset_state()
    cooldowns.use(cooldowns.CooldownStore())


@pytest.fixture(autouse=True)
def _test_speedups(settings) -> None:
    """Admin pages render without collectstatic; personas get cheap password hashes."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
