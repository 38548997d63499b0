"""A parsed ``config.yaml`` whose values know the line they came from.

``ConfigDocument`` parses once with PyYAML's safe loader and keeps the node tree, so every
error and warning can name a line. ``Value`` wraps one value and its path and reads it with
type checks: a wrong type raises ``ConfigError`` naming the key and its line.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import yaml
from django.utils import timezone
from django.utils.dateparse import parse_datetime

Path = tuple[str | int, ...]


class ConfigError(Exception):
    """The file cannot be imported: a YAML syntax error or a value of the wrong type."""


class ConfigDocument:
    """The YAML text, its data and its node tree (for line numbers)."""

    def __init__(self, text: str) -> None:
        loader = yaml.SafeLoader(text)
        try:
            self._node: yaml.Node | None = loader.get_single_node()
            data = loader.construct_document(self._node) if self._node is not None else None
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
            raise ConfigError(f"{where}YAML syntax error: {exc.problem or exc.context}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"YAML error: {exc}") from exc
        finally:
            loader.dispose()
        self.root = Value(self, (), data)
        self.root.mapping()

    def line(self, path: Path) -> int:
        """The line of the value at ``path``, or of its nearest ancestor found in the tree."""
        node, line = self._node, 1
        for step in path:
            found = _child(node, step)
            if found is None:
                break
            node, line = found
        return line


def _child(node: yaml.Node | None, step: str | int) -> tuple[yaml.Node, int] | None:
    """The child node at ``step`` and the line where it is named (its key's line in a mapping)."""
    if isinstance(node, yaml.MappingNode):
        # The last duplicate key is the one PyYAML keeps.
        for key, value in reversed(node.value):
            if isinstance(key, yaml.ScalarNode) and key.value == str(step):
                return value, key.start_mark.line + 1
    if isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value):
        item = node.value[step]
        return item, item.start_mark.line + 1
    return None


@dataclass(frozen=True, slots=True)
class Value:
    """One value of the document, its path, and typed reads of it."""

    doc: ConfigDocument
    path: Path
    raw: Any

    @property
    def name(self) -> str:
        """The dotted path as written in messages: ``routing.channel-groups[0].name``."""
        text = ""
        for step in self.path:
            text += f"[{step}]" if isinstance(step, int) else (f".{step}" if text else step)
        return text or "the file"

    @property
    def line(self) -> int:
        return self.doc.line(self.path)

    @property
    def present(self) -> bool:
        """Whether the file gives this value (an empty ``key:`` counts as absent)."""
        return self.raw is not None

    def error(self, problem: str) -> ConfigError:
        return ConfigError(f"line {self.line}: {self.name} {problem}")

    def __getitem__(self, key: str) -> Value:
        return Value(self.doc, (*self.path, key), self.mapping().get(key))

    def mapping(self) -> dict[str, Any]:
        """The value as a mapping with string keys; absent is empty."""
        if self.raw is None:
            return {}
        if not isinstance(self.raw, dict):
            raise self.error(f"must be a mapping (key: value lines), got {_shown(self.raw)}")
        return {str(k): v for k, v in self.raw.items()}

    def entries(self) -> list[tuple[str, Value]]:
        """The (key, value) pairs of a mapping, in file order."""
        return [(key, self[key]) for key in self.mapping()]

    def items(self) -> list[Value]:
        """The elements of a list; absent is empty."""
        if self.raw is None:
            return []
        if not isinstance(self.raw, list):
            raise self.error(f"must be a list, got {_shown(self.raw)}")
        return [Value(self.doc, (*self.path, i), item) for i, item in enumerate(self.raw)]

    def text(self, default: str = "") -> str:
        """A scalar as stripped text (numbers and booleans are written out as YAML reads them)."""
        if self.raw is None:
            return default
        if isinstance(self.raw, dict | list):
            raise self.error(f"must be a single value, got {_shown(self.raw)}")
        return str(self.raw).lower() if isinstance(self.raw, bool) else str(self.raw).strip()

    def integer(self, default: int = 0) -> int:
        """A whole number."""
        if self.raw is None:
            return default
        if isinstance(self.raw, bool) or not isinstance(self.raw, int | float):
            raise self.error(f"must be a whole number, got {_shown(self.raw)}")
        if isinstance(self.raw, float) and not self.raw.is_integer():
            raise self.error(f"must be a whole number, got {_shown(self.raw)}")
        return int(self.raw)

    def decimal(self, default: Decimal = Decimal(0)) -> Decimal:
        """A number, kept exact to six decimal places."""
        if self.raw is None:
            return default
        if isinstance(self.raw, bool) or not isinstance(self.raw, int | float | str):
            raise self.error(f"must be a number, got {_shown(self.raw)}")
        try:
            return Decimal(str(self.raw)).quantize(Decimal("0.000001"))
        except InvalidOperation as exc:
            raise self.error(f"must be a number, got {_shown(self.raw)}") from exc

    def flag(self, default: bool = False) -> bool:
        """``true`` or ``false``."""
        if self.raw is None:
            return default
        if not isinstance(self.raw, bool):
            raise self.error(f"must be true or false, got {_shown(self.raw)}")
        return self.raw

    def strings(self) -> list[str]:
        """A list of non-empty texts."""
        return [text for item in self.items() if (text := item.text())]

    def text_map(self) -> dict[str, str]:
        """A mapping of names to texts, such as extra headers."""
        return {key: value.text() for key, value in self.entries()}

    def moment(self) -> dt.datetime | None:
        """An RFC 3339 timestamp as an aware datetime (UTC when the file gives no offset)."""
        raw = self.raw
        if raw is None or raw == "":
            return None
        if isinstance(raw, dt.date) and not isinstance(raw, dt.datetime):
            raw = dt.datetime.combine(raw, dt.time())
        if isinstance(raw, str):
            try:
                raw = parse_datetime(raw.strip())
            except ValueError:
                raw = None
        if not isinstance(raw, dt.datetime):
            raise self.error(f"must be a timestamp such as 2025-01-31T12:00:00Z, got {_shown(self.raw)}")
        return raw if timezone.is_aware(raw) else timezone.make_aware(raw, dt.UTC)

    def plain(self) -> Any:
        """The value as JSON-ready data (YAML timestamps become ISO text)."""
        return json.loads(json.dumps(self.raw, default=str))


def _shown(raw: Any) -> str:
    """A short description of a wrong value for an error message."""
    if isinstance(raw, dict):
        return "a mapping"
    if isinstance(raw, list):
        return "a list"
    text = repr(raw) if isinstance(raw, str) else str(raw).lower() if isinstance(raw, bool) else str(raw)
    return text if len(text) <= 40 else text[:37] + "..."
