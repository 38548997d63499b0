"""JSON-schema cleanup for Gemini function declarations (CleanJSONSchemaForGemini, spec §4.4.2).

Gemini accepts only part of JSON Schema in tool declarations. ``clean_for_gemini`` rewrites ONE schema
(never a whole request: tool-call arguments in history would be mangled) in the spec's pass order, walking
the schema structurally so that a property called ``format``, ``title`` or ``default`` is never mistaken
for the keyword of the same name. What a pass removes but a model should still know becomes a hint in the
owning node's ``description``.

Pure: no Django, no I/O.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import orjson

Node = dict[str, Any]

PLACEHOLDER_REASON = "Brief explanation of why you are calling this tool"

# Keywords whose value is one sub-schema, a list of them, or a map of name -> sub-schema.
_ONE: tuple[str, ...] = ("items", "additionalProperties", "not", "if", "then", "else", "contains")
_ONE += ("propertyNames", "additionalItems", "unevaluatedProperties", "unevaluatedItems")
_MANY = ("anyOf", "oneOf", "allOf", "prefixItems")
_NAMED = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")

CONSTRAINTS: tuple[str, ...] = ("minLength", "maxLength", "exclusiveMinimum", "exclusiveMaximum", "pattern")
CONSTRAINTS += ("minItems", "maxItems", "uniqueItems", "format", "default", "examples")
_UNSUPPORTED = frozenset(
    (
        *CONSTRAINTS,
        "$schema",
        "$defs",
        "definitions",
        "const",
        "$ref",
        "$id",
        "additionalProperties",
        "propertyNames",
        "patternProperties",
        "if",
        "then",
        "else",
        "$comment",
        "enumDescriptions",
        "enumTitles",
        "prefill",
        "deprecated",
        "encrypted",
    )
)
# Everything that may sit on a schema node; other keys holding objects are treated as stray properties.
_KEYWORDS = frozenset(
    (
        *_ONE,
        *_MANY,
        *_NAMED,
        *_UNSUPPORTED,
        "type",
        "description",
        "title",
        "enum",
        "required",
        "nullable",
        "minimum",
        "maximum",
        "multipleOf",
        "minProperties",
        "maxProperties",
        "dependentRequired",
        "contentEncoding",
        "contentMediaType",
        "readOnly",
        "writeOnly",
        "$anchor",
        "$dynamicRef",
        "$dynamicAnchor",
        "$vocabulary",
        "propertyOrdering",
        "example",
    )
)
_PRIMITIVES = frozenset(("string", "number", "integer", "boolean", "null", "array"))


def clean_for_gemini(schema: Any) -> Node:
    """A cleaned copy of one tool-parameter schema, in the order of spec §4.4.2 (passes 0-13)."""
    if not isinstance(schema, dict):
        return {"type": "object", "properties": {}}
    root: Node = copy.deepcopy(schema)
    for one_pass in _PASSES:
        one_pass(root)
    return root


def to_json_schema(schema: Any) -> Any:
    """Gemini's OpenAPI-style schema (``type: "OBJECT"``) as JSON Schema (lower-case type names)."""
    if not isinstance(schema, dict):
        return schema
    out = copy.deepcopy(schema)

    def lower(node: Node) -> None:
        kind = node.get("type")
        if isinstance(kind, str):
            node["type"] = kind.lower()
        elif isinstance(kind, list):
            node["type"] = [k.lower() if isinstance(k, str) else k for k in kind]

    _walk(out, lower)
    return out


# --- traversal ------------------------------------------------------------------------------------


def _children(node: Node) -> Iterator[Node]:
    """The sub-schemas of ``node`` (property maps are walked by value, never by key)."""
    for key in _ONE:
        child = node.get(key)
        if isinstance(child, dict):
            yield child
        elif key == "items" and isinstance(child, list):
            yield from (c for c in child if isinstance(c, dict))
    for key in _MANY:
        branches = node.get(key)
        if isinstance(branches, list):
            yield from (c for c in branches if isinstance(c, dict))
    for key in _NAMED:
        named = node.get(key)
        if isinstance(named, dict):
            yield from (c for c in named.values() if isinstance(c, dict))


def _walk(node: Node, visit: Callable[[Node], None]) -> None:
    """Visit ``node`` then its sub-schemas (the visitor may rewrite a node's own children)."""
    stack = [node]
    while stack:
        current = stack.pop()
        visit(current)
        stack.extend(_children(current))


def _hint(node: Node, hint: str) -> None:
    """Merge ``hint`` into the description as ``"<desc> (<hint>)"``, never twice."""
    desc = node.get("description")
    desc = desc if isinstance(desc, str) else ""
    if hint in desc:
        return
    node["description"] = f"{desc} ({hint})" if desc else hint


def _scalar_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def _type_name(node: Node) -> str:
    kind = node.get("type")
    if isinstance(kind, str):
        return kind
    if "properties" in node:
        return "object"
    if "items" in node:
        return "array"
    return ""


# --- passes ---------------------------------------------------------------------------------------


def _repair_malformed(root: Node) -> None:
    """Pass 0: wrap stray child objects into ``properties``; promote boolean ``required: true``."""

    def visit(node: Node) -> None:
        kind = node.get("type")
        if not (isinstance(kind, str) and kind in _PRIMITIVES):
            stray = [
                k for k, v in node.items() if k not in _KEYWORDS and not k.startswith("x-") and isinstance(v, dict)
            ]
            if stray:
                props = node.setdefault("properties", {})
                if isinstance(props, dict):
                    for key in stray:
                        props.setdefault(key, node.pop(key))
                    node.setdefault("type", "object")
        props = node.get("properties")
        if isinstance(props, dict):
            for name, prop in props.items():
                if isinstance(prop, dict) and isinstance(prop.get("required"), bool) and prop.pop("required"):
                    required = node.get("required")
                    if not isinstance(required, list):
                        required = node["required"] = []
                    if name not in required:
                        required.append(name)

    _walk(root, visit)


def _refs_to_hints(root: Node) -> None:
    """Pass 1: a ``$ref`` node becomes an object whose description names the definition."""

    def visit(node: Node) -> None:
        ref = node.get("$ref")
        if not isinstance(ref, str):
            return
        desc = node.get("description")
        node.clear()
        node["type"] = "object"
        if isinstance(desc, str) and desc:
            node["description"] = desc
        _hint(node, f"See: {ref.rsplit('/', 1)[-1]}")

    _walk(root, visit)


def _const_to_enum(root: Node) -> None:
    """Pass 2: ``const: v`` becomes ``enum: [v]`` unless an enum exists."""

    def visit(node: Node) -> None:
        if "const" in node and "enum" not in node:
            node["enum"] = [node["const"]]

    _walk(root, visit)


def _enums_to_strings(root: Node) -> None:
    """Pass 3: enum values become strings and their owner a string."""

    def visit(node: Node) -> None:
        values = node.get("enum")
        if isinstance(values, list):
            node["enum"] = [_scalar_text(v) for v in values]
            node["type"] = "string"

    _walk(root, visit)


def _enum_hints(root: Node) -> None:
    """Pass 4: enums of 2-10 values are listed in the description."""

    def visit(node: Node) -> None:
        values = node.get("enum")
        if isinstance(values, list) and 2 <= len(values) <= 10:
            _hint(node, "Allowed: " + ", ".join(_scalar_text(v) for v in values))

    _walk(root, visit)


def _additional_properties_hints(root: Node) -> None:
    """Pass 5: ``additionalProperties: false`` is said in words."""

    def visit(node: Node) -> None:
        if node.get("additionalProperties") is False:
            _hint(node, "No extra properties allowed")

    _walk(root, visit)


def _constraints_to_hints(root: Node) -> None:
    """Pass 6: scalar constraints Gemini rejects become ``"<key>: <value>"`` hints."""

    def visit(node: Node) -> None:
        for key in CONSTRAINTS:
            value = node.get(key)
            if key in node and not isinstance(value, dict | list):
                _hint(node, f"{key}: {_scalar_text(value)}")

    _walk(root, visit)


def _merge_conditionals(root: Node) -> None:
    """Pass 7: properties of ``then`` / ``else`` branches join the parent's when absent there."""

    def visit(node: Node) -> None:
        for key in ("then", "else"):
            branch = node.get(key)
            if isinstance(branch, dict) and isinstance(branch.get("properties"), dict):
                props = node.setdefault("properties", {})
                if isinstance(props, dict):
                    for name, prop in branch["properties"].items():
                        props.setdefault(name, prop)

    _walk(root, visit)


def _merge_all_of(root: Node) -> None:
    """Pass 8: ``allOf`` branches merge into the parent (required united; other keys fill gaps)."""

    def visit(node: Node) -> None:
        branches = node.pop("allOf", None)
        if not isinstance(branches, list):
            return
        for branch in branches:
            if not isinstance(branch, dict):
                continue
            for key, value in branch.items():
                if key in ("if", "then", "else", "allOf"):
                    continue
                if key == "properties" and isinstance(value, dict):
                    props = node.setdefault("properties", {})
                    if isinstance(props, dict):
                        for name, prop in value.items():
                            props.setdefault(name, prop)
                elif key == "required" and isinstance(value, list):
                    required = node.setdefault("required", [])
                    if isinstance(required, list):
                        required.extend(r for r in value if r not in required)
                else:
                    node.setdefault(key, value)

    _walk(root, visit)


def _branch_rank(branch: Node) -> int:
    kind = _type_name(branch)
    if kind == "object":
        return 3
    if kind == "array":
        return 2
    if kind == "null":
        return 0
    return 1


def _flatten_any_of(root: Node) -> None:
    """Pass 9: ``anyOf`` / ``oneOf`` keep the single best branch (object > array > other > null)."""

    def visit(node: Node) -> None:
        while True:  # the chosen branch may itself offer a choice
            key = next((k for k in ("anyOf", "oneOf") if isinstance(node.get(k), list)), None)
            if key is None:
                return
            branches = node.pop(key)
            options = [b for b in branches if isinstance(b, dict)]
            if not options:
                continue
            best = max(options, key=_branch_rank)  # max() keeps the first of equal ranks
            kinds = []
            for option in options:
                kind = _type_name(option)
                if kind and kind != "null" and kind not in kinds:
                    kinds.append(kind)
            parent_desc = node.get("description")
            for field, value in best.items():
                if field != "description":
                    node[field] = value
            branch_desc = best.get("description")
            if isinstance(branch_desc, str) and branch_desc and branch_desc != parent_desc:
                node["description"] = f"{parent_desc} ({branch_desc})" if parent_desc else branch_desc
            if any(_type_name(o) == "null" for o in options) and _branch_rank(best) > 0:
                node["nullable"] = True
            if len(kinds) > 1:
                _hint(node, "Accepts: " + " | ".join(kinds))

    _walk(root, visit)


def _flatten_type_arrays(root: Node) -> None:
    """Pass 10: ``type: [...]`` keeps the first non-null type; a nullable property stops being required."""

    def flatten(node: Node) -> bool:
        kinds = node.get("type")
        if not isinstance(kinds, list):
            return False
        names = [k for k in kinds if isinstance(k, str)]
        real = [k for k in names if k != "null"]
        node["type"] = real[0] if real else "string"
        if len(real) > 1:
            _hint(node, "Accepts: " + " | ".join(real))
        return "null" in names

    def visit(node: Node) -> None:
        props = node.get("properties")
        if isinstance(props, dict):
            for name, prop in props.items():
                if isinstance(prop, dict) and flatten(prop):
                    _hint(prop, "nullable")
                    required = node.get("required")
                    if isinstance(required, list) and name in required:
                        required.remove(name)
        flatten(node)

    _walk(root, visit)


def _remove_unsupported(root: Node) -> None:
    """Pass 11: delete keywords Gemini rejects and every ``x-*`` extension (never property names)."""

    def visit(node: Node) -> None:
        for key in [k for k in node if k in _UNSUPPORTED or k.startswith("x-")]:
            del node[key]

    _walk(root, visit)


def _remove_placeholders(root: Node) -> None:
    """Pass 12: drop ``nullable`` / ``title`` and placeholder properties (``_``, a lone stock ``reason``)."""

    def visit(node: Node) -> None:
        node.pop("nullable", None)
        node.pop("title", None)
        props = node.get("properties")
        if not isinstance(props, dict):
            return
        props.pop("_", None)
        reason = props.get("reason")
        if len(props) == 1 and isinstance(reason, dict) and reason.get("description") == PLACEHOLDER_REASON:
            del props["reason"]

    _walk(root, visit)


def _cleanup_required(root: Node) -> None:
    """Pass 13: ``required`` names only declared properties, and is dropped when empty."""

    def visit(node: Node) -> None:
        required = node.get("required")
        if required is None:
            return
        props = node.get("properties")
        names = props if isinstance(props, dict) else {}
        kept = [r for r in required if isinstance(r, str) and r in names] if isinstance(required, list) else []
        if kept:
            node["required"] = kept
        else:
            del node["required"]

    _walk(root, visit)


_PASSES: tuple[Callable[[Node], None], ...] = (
    _repair_malformed,
    _refs_to_hints,
    _const_to_enum,
    _enums_to_strings,
    _enum_hints,
    _additional_properties_hints,
    _constraints_to_hints,
    _merge_conditionals,
    _merge_all_of,
    _flatten_any_of,
    _flatten_type_arrays,
    _remove_unsupported,
    _remove_placeholders,
    _cleanup_required,
)
