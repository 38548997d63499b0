"""config.yaml ``payload`` rules applied to an upstream body: ``apply(body, rules, model=, protocol=)``.

Pure: no Django, no I/O, so it sits next to the dialects. Sections, applied in this order:

* ``default``: set a path only when the original body lacks it; across matching rules the first
  write to a path wins (``default-raw`` the same, its values JSON text);
* ``override``: always set, the last write wins (``override-raw`` the same, JSON text);
* ``filter``: remove the listed paths.

A rule applies when one of its ``models`` entries matches: ``name`` is a pattern (``*`` = any run
of characters, case-insensitive) compared with the upstream model and the model the client
asked for, and ``protocol``, when given, must equal the upstream protocol (``openai``,
``gemini``, ``claude``, ``codex``; ``protocol_for_family`` maps our families). A rule without
models applies to nothing.

Paths are gjson/sjson dot paths: ``generationConfig.thinkingConfig.thinkingBudget``; a number
indexes an array (``contents.0.role``), ``-1`` appends when setting, ``:2`` forces an object key
``"2"``, and ``\\.`` escapes a dot inside a key. Setting through a missing level creates it (an
array when the next part is a number, else an object); a path that cannot be set is skipped.
The input is never changed: the result shares untouched sub-trees with it and copies only the
objects on the paths it edits.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

PROTOCOL_FOR_FAMILY = {"openai": "openai", "claude": "claude", "gemini": "gemini", "responses": "codex"}
_MISSING = object()


def protocol_for_family(family: str) -> str:
    """The payload-rule protocol name of an executor family (``responses`` is Codex's)."""
    return PROTOCOL_FOR_FAMILY.get(family, family)


def apply(
    body: dict[str, Any],
    rules: Mapping[str, Any],
    *,
    model: str,
    protocol: str,
    requested_model: str = "",
    root: str = "",
) -> dict[str, Any]:
    """A copy of ``body`` with the matching rules applied (see the module docstring).

    ``root`` prefixes every path (``request`` for bodies wrapped in an envelope).
    """
    out: Any = dict(body)
    if not rules:
        return out
    names = [m for m in (model.strip(), requested_model.strip()) if m]
    matching = {section: _matching(rules.get(section), names, protocol) for section in _SECTIONS}
    defaulted: set[str] = set()
    for section in ("default", "default-raw"):
        for params in matching[section]:
            for path, value in _params(params):
                parts = _parts(_join(root, path))
                if not parts or path in defaulted or _get(body, parts) is not _MISSING:
                    continue
                new = _value(value, raw=section.endswith("-raw"))
                if new is not _MISSING and (updated := _set(out, parts, new)) is not _MISSING:
                    out = updated
                    defaulted.add(path)
    for section in ("override", "override-raw"):
        for params in matching[section]:
            for path, value in _params(params):
                parts = _parts(_join(root, path))
                new = _value(value, raw=section.endswith("-raw"))
                if parts and new is not _MISSING and (updated := _set(out, parts, new)) is not _MISSING:
                    out = updated
    for params in matching["filter"]:
        for path in params if isinstance(params, list) else ():
            parts = _parts(_join(root, str(path)))
            if parts:
                out = _delete(out, parts)
    return dict(out)


_SECTIONS = ("default", "default-raw", "override", "override-raw", "filter")


def _matching(section: Any, names: list[str], protocol: str) -> list[Any]:
    """The ``params`` of the section's rules that apply to this model and protocol."""
    if not isinstance(section, list) or not names:
        return []
    found = []
    for rule in section:
        if isinstance(rule, Mapping) and _rule_matches(rule.get("models"), names, protocol):
            found.append(rule.get("params"))
    return found


def _rule_matches(models: Any, names: list[str], protocol: str) -> bool:
    if not isinstance(models, list):
        return False
    for entry in models:
        if not isinstance(entry, Mapping):
            continue
        pattern = str(entry.get("name") or "").strip()
        wanted = str(entry.get("protocol") or "").strip().lower()
        if not pattern or (wanted and protocol and wanted != protocol.lower()):
            continue
        if any(_pattern(pattern).fullmatch(name) for name in names):
            return True
    return False


@lru_cache(maxsize=512)
def _pattern(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.IGNORECASE | re.DOTALL)


def _params(params: Any) -> list[tuple[str, Any]]:
    return [(str(k), v) for k, v in params.items()] if isinstance(params, Mapping) else []


def _value(value: Any, *, raw: bool) -> Any:
    """The value to write: a private copy, or for raw rules the JSON a string holds."""
    if raw and isinstance(value, str | bytes):
        try:
            return json.loads(value)
        except ValueError:
            return _MISSING
    if raw and value is None:
        return _MISSING
    return copy.deepcopy(value)


# --- paths ------------------------------------------------------------------------------------


def _join(root: str, path: str) -> str:
    root, path = root.strip(), path.strip()
    if not root:
        return path
    return f"{root}.{path.removeprefix('.')}" if path else root


@lru_cache(maxsize=1024)
def _parts(path: str) -> tuple[str, ...]:
    """Split a dot path; a backslash makes the next character literal."""
    parts, current, escaped = [], [], False
    for char in path:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ".":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return tuple(parts) if all(parts) else ()


def _index(part: str) -> int | None:
    """The array index ``part`` names (``-1`` = append), or None when it is a key."""
    if part == "-1":
        return -1
    return int(part) if part.isdigit() else None


def _key(part: str) -> str:
    return part[1:] if part.startswith(":") else part


def _get(node: Any, parts: tuple[str, ...]) -> Any:
    for part in parts:
        if isinstance(node, dict):
            node = node.get(_key(part), _MISSING)
        elif isinstance(node, list) and (i := _index(part)) is not None and 0 <= i < len(node):
            node = node[i]
        else:
            return _MISSING
        if node is _MISSING:
            return _MISSING
    return node


def _set(node: Any, parts: tuple[str, ...], value: Any) -> Any:
    """A copy of ``node`` with ``value`` at ``parts`` (containers copied along the path), or _MISSING."""
    part, rest = parts[0], parts[1:]
    if isinstance(node, list) and not part.startswith(":"):
        index = _index(part)
        if index is None:
            return _MISSING  # a key on an array: sjson refuses too
        copied = list(node)
        if index == -1:
            index = len(copied)
        copied.extend([None] * (index + 1 - len(copied)))
        child = _set(_fresh(rest, copied[index]), rest, value) if rest else value
        if child is _MISSING:
            return _MISSING
        copied[index] = child
        return copied
    copied_dict = dict(node) if isinstance(node, dict) else {}
    key = _key(part)
    if rest:
        child = _set(_fresh(rest, copied_dict.get(key)), rest, value)
        if child is _MISSING:
            return _MISSING
    else:
        child = value
    copied_dict[key] = child
    return copied_dict


def _fresh(rest: tuple[str, ...], existing: Any) -> Any:
    """The node to descend into: the existing container, else a new one shaped for ``rest[0]``."""
    if isinstance(existing, dict | list):
        return existing
    first = rest[0]
    return [] if not first.startswith(":") and _index(first) is not None else {}


def _delete(node: Any, parts: tuple[str, ...]) -> Any:
    """A copy of ``node`` without the value at ``parts`` (``node`` itself when there is none)."""
    part, rest = parts[0], parts[1:]
    if isinstance(node, dict):
        key = _key(part)
        if key not in node:
            return node
        copied = dict(node)
        if rest:
            child = _delete(node[key], rest)
            if child is node[key]:
                return node
            copied[key] = child
        else:
            del copied[key]
        return copied
    if isinstance(node, list) and (i := _index(part)) is not None and 0 <= i < len(node):
        listed = list(node)
        if rest:
            child = _delete(node[i], rest)
            if child is node[i]:
                return node
            listed[i] = child
        else:
            del listed[i]
        return listed
    return node
