"""``manage.py import_config PATH``: load a CliRelay / CLIProxyAPI config.yaml into the database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from channels_app.config_import import ConfigError, import_config


class Command(BaseCommand):
    help = (
        "Import a CliRelay / CLIProxyAPI config.yaml (client keys, channels, routing, proxies, settings) "
        "into one team, in one transaction. Re-running the same file changes nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", help="The config.yaml to import")
        parser.add_argument("--team", default="default", help="Team slug (default: default, created if missing)")

    def handle(self, *args: Any, **options: Any) -> None:
        path = Path(options["path"])
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"cannot read {path}: {exc}") from exc
        try:
            report = import_config(text, options["team"])
        except ConfigError as exc:
            raise CommandError(f"{path}: {exc}. Nothing was imported.") from exc
        for line in report.summary():
            self.stdout.write(line)
        if not report.changes:
            self.stdout.write(self.style.SUCCESS("Nothing changed."))
