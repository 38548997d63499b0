"""Import a CliRelay / CLIProxyAPI ``config.yaml``: ``import_config(text, team_slug)``.

Everything lands in one team, in one transaction, so a file imports whole or not at all:
client API keys (stored hashed), channels of every API-key kind, routing groups, path routes,
the proxy pool, and the global runtime and log storage settings.

Importing is idempotent. Rows are matched (keys by hash, channels and groups by name, routes
by path, proxies by name) and saved only when a value differs, so a second run reports no
change and leaves ``updated_at`` alone. A section the file leaves out leaves the database as
it is; a section or list entry the file contains is imported whole, its missing fields taking
the reference defaults. Rows the file does not mention are never deleted, except the extra
keys of an OpenAI-compatible channel, which are replaced by the file's list.

Unnamed channels are named by kind and position (``gemini-api-key-2``): name them in the file
to keep them stable when entries are reordered. JSON fields (``Channel.options``, payload
rules, OAuth aliases) keep config.yaml's own key names.

Modules: ``document`` reads YAML with line numbers, ``notes`` says what each format key means
here, ``run`` holds the report and the compare-before-save writes, and ``channels``, ``access``
and ``runtime`` import their sections.
"""

from __future__ import annotations

from django.db import transaction

from accounts.models import Team
from channels_app.config_import.access import import_api_keys, import_groups, import_path_routes
from channels_app.config_import.channels import import_channels, import_proxy_pool
from channels_app.config_import.document import ConfigDocument, ConfigError
from channels_app.config_import.notes import TOP_LEVEL_KEYS, TOP_LEVEL_NOTES
from channels_app.config_import.run import ImportReport, ImportRun
from channels_app.config_import.runtime import import_log_storage, import_runtime_settings

__all__ = ["ConfigError", "ImportReport", "import_config"]


def import_config(text: str, team_slug: str = "default") -> ImportReport:
    """Import config.yaml ``text`` into one team; on ``ConfigError`` nothing is written.

    The team ``default`` is created when missing; any other slug must exist.
    """
    root = ConfigDocument(text).root
    report = ImportReport()
    with transaction.atomic():
        team = Team.objects.filter(slug=team_slug).first()
        if team is None and team_slug != "default":
            raise ConfigError(f"there is no team with slug '{team_slug}'")
        if team is None:
            team = Team.objects.create(name="Default", slug="default")
            report.count("teams", "created")
        run = ImportRun(root, team, report)
        run.check_keys(root, TOP_LEVEL_KEYS, TOP_LEVEL_NOTES)
        # Order matters: channels name pool proxies, groups collect channels, keys name both.
        import_proxy_pool(run, root["proxy-pool"])
        import_channels(run)
        import_groups(run, root["routing"]["channel-groups"])
        import_path_routes(run, root["routing"]["path-routes"])
        import_api_keys(run)
        import_runtime_settings(run)
        import_log_storage(run, root["request-log-storage"])
    return report
