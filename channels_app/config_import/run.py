"""One import run: its team, its report, and the checked, compare-before-save writes every section uses."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from django.core.exceptions import ValidationError
from django.db import models

from accounts.models import Team
from channels_app.config_import.document import Value
from channels_app.config_import.notes import Notes
from channels_app.models import ProxyEntry, validate_proxy_url

Outcome = Literal["created", "updated", "unchanged", "deleted"]

_LABELS: tuple[str, ...] = ("API keys", "channels", "extra channel keys", "routing groups", "path routes")
_LABELS += ("proxies", "runtime settings", "log storage settings")


@dataclass
class Tally:
    """How many rows of one type an import created, updated, left alone or deleted."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0


@dataclass
class ImportReport:
    """What an import did: counts per object type, and what it could not use."""

    tallies: dict[str, Tally] = field(default_factory=lambda: {label: Tally() for label in _LABELS})
    warnings: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    @property
    def changes(self) -> int:
        return sum(t.created + t.updated + t.deleted for t in self.tallies.values())

    def count(self, label: str, outcome: Outcome, number: int = 1) -> None:
        tally = self.tallies.setdefault(label, Tally())
        setattr(tally, outcome, getattr(tally, outcome) + number)

    def summary(self) -> list[str]:
        """The report as lines of text: counts, then ignored keys, then warnings."""
        lines = []
        for label, t in self.tallies.items():
            deleted = f", {t.deleted} deleted" if t.deleted else ""
            lines.append(f"{label}: {t.created} created, {t.updated} updated, {t.unchanged} unchanged{deleted}")
        if self.ignored:
            lines += ["Ignored (no meaning in CliRelay):", *(f"  {line}" for line in self.ignored)]
        if self.warnings:
            lines += ["Warnings:", *(f"  {line}" for line in self.warnings)]
        return lines


class ImportRun:
    """The state one import shares between its sections, and the helpers they write through."""

    def __init__(self, root: Value, team: Team, report: ImportReport) -> None:
        self.root = root
        self.team = team
        self.report = report
        self.proxies: dict[str, ProxyEntry] = {}  # proxy-pool id -> row
        self.channel_names: dict[str, int] = {}  # lower-case name -> line of its entry

    def warn(self, where: Value, message: str) -> None:
        self.report.warnings.append(f"line {where.line}: {message}")

    def check_keys(self, value: Value, known: Iterable[str], notes: Notes | None = None) -> None:
        """Report each key of ``value`` that is not imported: ignored, unsupported or unknown."""
        known, notes = set(known), notes or {}
        for key, child in value.entries():
            note = notes.get(key)
            if key in known:
                continue
            if isinstance(note, Mapping) and isinstance(child.raw, dict):
                self.check_keys(child, (), note)
            elif isinstance(note, Mapping):
                self.warn(child, f"{child.name} is not a mapping; ignored")
            elif note and note.startswith("ignored: "):
                self.report.ignored.append(f"line {child.line}: {child.name}: {note}")
            elif note:
                self.warn(child, f"{child.name} {note}")
            else:
                self.warn(child, f"unknown key: {child.name}")

    def count(self, value: Value, default: int = 0) -> int:
        """A whole number of at least 0; negative values mean "off" in the reference."""
        number = value.integer(default)
        if number < 0:
            self.warn(value, f"{value.name} is negative; stored as 0")
            return 0
        return number

    def proxy_url(self, value: Value) -> str:
        """A proxy URL (or ``direct`` / ``none``), checked."""
        url = value.text()
        try:
            validate_proxy_url(url)
        except ValidationError as exc:
            raise value.error(f"is not a proxy URL: {' '.join(exc.messages)}") from exc
        return url

    def save(
        self,
        label: str,
        obj: models.Model,
        values: dict[str, Any],
        where: Value,
        m2m: dict[str, list[int]] | None = None,
    ) -> None:
        """Write ``values`` (and many-to-many ids) onto ``obj``, saving only what differs."""
        outcome = _write(obj, values, where)
        for attribute, ids in (m2m or {}).items():
            manager = getattr(obj, attribute)
            if set(manager.values_list("pk", flat=True)) != set(ids):
                manager.set(ids)
                if outcome == "unchanged":
                    outcome = "updated"
                    if stamps := _auto_now_fields(obj):
                        obj.save(update_fields=stamps)
        self.report.count(label, outcome)


def _write(obj: models.Model, values: dict[str, Any], where: Value) -> Outcome:
    """Set ``values`` on ``obj`` and save it if it is new or any value differs."""
    adding = obj._state.adding
    changed = [name for name, value in values.items() if adding or getattr(obj, name) != value]
    if not adding and not changed:
        return "unchanged"
    for name in changed:
        setattr(obj, name, values[name])
    try:
        obj.full_clean(validate_unique=False, validate_constraints=False)
    except ValidationError as exc:
        problems = "; ".join(f"{name}: {' '.join(errors)}" for name, errors in exc.message_dict.items())
        raise where.error(f"cannot be stored: {problems}") from exc
    if adding:
        obj.save()
        return "created"
    # Only the changed columns (and updated_at, which auto_now refreshes only when listed).
    obj.save(update_fields=[*changed, *_auto_now_fields(obj)])
    return "updated"


def _auto_now_fields(obj: models.Model) -> list[str]:
    return [f.name for f in obj._meta.concrete_fields if getattr(f, "auto_now", False)]
