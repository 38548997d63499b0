"""First-run setup for ``make run``: an admin account, a default team, an optional config import."""

from __future__ import annotations

import secrets
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

from accounts.models import Team


class Command(BaseCommand):
    help = "Create the superuser (if none exists) and the default team; import $CLIRELAY_CONFIG if set."

    def handle(self, *args: Any, **options: Any) -> None:
        self._ensure_superuser()
        Team.objects.get_or_create(slug="default", defaults={"name": "Default"})
        if settings.CLIRELAY_CONFIG:
            self.stdout.write(f"Importing {settings.CLIRELAY_CONFIG} …")
            call_command("import_config", settings.CLIRELAY_CONFIG, stdout=self.stdout, stderr=self.stderr)

    def _ensure_superuser(self) -> None:
        user_model = get_user_model()
        if user_model.objects.filter(is_superuser=True).exists():
            return
        username = settings.CLIRELAY_ADMIN_USER
        password = settings.CLIRELAY_ADMIN_PASSWORD
        generated = not password
        if generated:
            password = secrets.token_urlsafe(12)
        user_model.objects.create_superuser(username=username, email="", password=password)
        self.stdout.write(self.style.SUCCESS(f"Created superuser '{username}'."))
        if generated:
            # Shown once: it is not stored anywhere but as a password hash.
            self.stdout.write(self.style.WARNING(f"Generated admin password (shown once): {password}"))
