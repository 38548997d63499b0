"""Issue a client API key from the command line; the key is printed once and stored hashed."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.models import ApiKey, Team


class Command(BaseCommand):
    help = "Create a client API key for a team and print it (the only time it is shown)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="A name for the key, unique within the team")
        parser.add_argument("--team", default="default", help="Team slug (default: default)")
        parser.add_argument("--models", default="", help="Comma-separated allowed model patterns (default: all)")

    def handle(self, *args: Any, **options: Any) -> None:
        team = Team.objects.filter(slug=options["team"]).first()
        if team is None:
            raise CommandError(f"no team with slug '{options['team']}'")
        if ApiKey.objects.filter(team=team, name=options["name"]).exists():
            raise CommandError(f"team '{team.slug}' already has a key named '{options['name']}'")
        key = ApiKey(team=team, name=options["name"])
        key.allowed_models = [m.strip() for m in options["models"].split(",") if m.strip()]
        raw = key.issue_key()
        key.save()
        self.stdout.write(raw)
