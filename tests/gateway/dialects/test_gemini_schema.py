"""CleanJSONSchemaForGemini (spec §4.4.2): one schema in, a schema Gemini accepts out, table-driven."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from gateway.dialects.gemini_schema import PLACEHOLDER_REASON, clean_for_gemini, to_json_schema

CASES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (
        "metadata Gemini rejects is removed and additionalProperties:false is said in words",
        {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "$id": "urn:tool",
            "$comment": "internal",
            "title": "Args",
            "type": "object",
            "x-vendor": {"a": 1},
            "deprecated": False,
            "additionalProperties": False,
            "properties": {"q": {"type": "string", "nullable": True, "x-order": 1, "encrypted": True}},
        },
        {
            "type": "object",
            "description": "No extra properties allowed",
            "properties": {"q": {"type": "string"}},
        },
    ),
    (
        "properties named like keywords are kept",
        {
            "type": "object",
            "properties": {
                "format": {"type": "string"},
                "title": {"type": "string"},
                "default": {"type": "boolean"},
                "$ref": {"type": "string"},
                "x-id": {"type": "string"},
            },
            "required": ["format", "title"],
        },
        {
            "type": "object",
            "properties": {
                "format": {"type": "string"},
                "title": {"type": "string"},
                "default": {"type": "boolean"},
                "$ref": {"type": "string"},
                "x-id": {"type": "string"},
            },
            "required": ["format", "title"],
        },
    ),
    (
        "a boolean required inside a property is promoted to the parent",
        {
            "type": "object",
            "properties": {
                "a": {"type": "string", "required": True},
                "b": {"type": "string", "required": False},
            },
        },
        {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}}, "required": ["a"]},
    ),
    (
        "a bare property map from a malformed MCP server is wrapped into properties",
        {"location": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
        {
            "type": "object",
            "properties": {
                "location": {"type": "string"},
                "unit": {"type": "string", "enum": ["c", "f"], "description": "Allowed: c, f"},
            },
        },
    ),
    (
        "a $ref becomes an object that names its definition",
        {
            "type": "object",
            "$defs": {"Address": {"type": "object", "properties": {"street": {"type": "string"}}}},
            "properties": {"home": {"$ref": "#/$defs/Address", "description": "Where they live"}},
        },
        {
            "type": "object",
            "properties": {"home": {"type": "object", "description": "Where they live (See: Address)"}},
        },
    ),
    (
        "const becomes a one-value enum of strings",
        {"type": "object", "properties": {"kind": {"const": 3}}},
        {"type": "object", "properties": {"kind": {"enum": ["3"], "type": "string"}}},
    ),
    (
        "enum values become strings with an allowed-values hint",
        {"type": "integer", "enum": [1, 2, 3], "description": "Level"},
        {"type": "string", "enum": ["1", "2", "3"], "description": "Level (Allowed: 1, 2, 3)"},
    ),
    (
        "scalar constraints move into the description and array ones are dropped",
        {
            "type": "string",
            "description": "A date",
            "minLength": 1,
            "maxLength": 10,
            "pattern": "^[0-9-]+$",
            "format": "date",
            "default": "2026-01-01",
            "examples": ["2026-01-01"],
        },
        {
            "type": "string",
            "description": (
                "A date (minLength: 1) (maxLength: 10) (pattern: ^[0-9-]+$) (format: date) (default: 2026-01-01)"
            ),
        },
    ),
    (
        "properties of then and else branches join the parent",
        {
            "type": "object",
            "properties": {"mode": {"type": "string"}},
            "if": {"properties": {"mode": {"const": "x"}}},
            "then": {"properties": {"x_value": {"type": "number"}}},
            "else": {"properties": {"other": {"type": "string"}}},
        },
        {
            "type": "object",
            "properties": {"mode": {"type": "string"}, "x_value": {"type": "number"}, "other": {"type": "string"}},
        },
    ),
    (
        "allOf branches merge, uniting required",
        {
            "allOf": [
                {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
                {"properties": {"b": {"type": "integer"}}, "required": ["b"], "description": "Both"},
            ]
        },
        {
            "type": "object",
            "properties": {"a": {"type": "string"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
            "description": "Both",
        },
    ),
    (
        "anyOf keeps the object branch and lists the other types offered",
        {
            "description": "Filter",
            "anyOf": [
                {"type": "string"},
                {"type": "object", "properties": {"q": {"type": "string"}}},
                {"type": "null"},
            ],
        },
        {"description": "Filter (Accepts: string | object)", "type": "object", "properties": {"q": {"type": "string"}}},
    ),
    (
        "oneOf prefers an array over a scalar",
        {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
        {"type": "array", "items": {"type": "string"}, "description": "Accepts: string | array"},
    ),
    (
        "a nullable type array keeps the real type and leaves required",
        {
            "type": "object",
            "properties": {
                "note": {"type": ["string", "null"], "description": "Optional note"},
                "count": {"type": ["integer", "string"]},
            },
            "required": ["note", "count"],
        },
        {
            "type": "object",
            "properties": {
                "note": {"type": "string", "description": "Optional note (nullable)"},
                "count": {"type": "integer", "description": "Accepts: integer | string"},
            },
            "required": ["count"],
        },
    ),
    (
        "placeholder properties are removed",
        {"type": "object", "properties": {"_": {"type": "boolean"}, "path": {"type": "string"}}, "required": ["_"]},
        {"type": "object", "properties": {"path": {"type": "string"}}},
    ),
    (
        "a lone stock reason property is removed but a real one is kept",
        {
            "type": "object",
            "properties": {
                "a": {
                    "type": "object",
                    "properties": {"reason": {"type": "string", "description": PLACEHOLDER_REASON}},
                },
                "b": {"type": "object", "properties": {"reason": {"type": "string", "description": "Why"}}},
            },
        },
        {
            "type": "object",
            "properties": {
                "a": {"type": "object", "properties": {}},
                "b": {"type": "object", "properties": {"reason": {"type": "string", "description": "Why"}}},
            },
        },
    ),
    (
        "required names without a property are dropped and an empty list is removed",
        {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["ghost"]},
        {"type": "object", "properties": {"a": {"type": "string"}}},
    ),
    (
        "a hint already in the description is not repeated",
        {"type": "string", "enum": ["a", "b"], "description": "Pick one (Allowed: a, b)"},
        {"type": "string", "enum": ["a", "b"], "description": "Pick one (Allowed: a, b)"},
    ),
    (
        "nested item schemas are cleaned too",
        {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "patternProperties": {"^x": {"type": "string"}},
                "properties": {
                    "tags": {"type": "array", "items": {"type": "string", "minLength": 2}, "uniqueItems": True}
                },
            },
        },
        {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "tags": {
                        "type": "array",
                        "items": {"type": "string", "description": "minLength: 2"},
                        "description": "uniqueItems: true",
                    }
                },
            },
        },
    ),
]


@pytest.mark.parametrize(("case", "schema", "expected"), CASES, ids=[c[0] for c in CASES])
def test_the_cleaner_rewrites_each_schema_as_the_spec_says(case: str, schema: dict[str, Any], expected: Any) -> None:
    assert clean_for_gemini(schema) == expected


def test_the_cleaner_leaves_the_callers_schema_untouched() -> None:
    schema = {"type": "object", "additionalProperties": False, "properties": {"a": {"type": ["string", "null"]}}}
    before = copy.deepcopy(schema)
    clean_for_gemini(schema)
    assert schema == before


def test_a_schema_that_is_not_an_object_becomes_an_empty_object_schema() -> None:
    assert clean_for_gemini(None) == {"type": "object", "properties": {}}
    assert clean_for_gemini(True) == {"type": "object", "properties": {}}


def test_gemini_openapi_type_names_are_lowercased_without_touching_property_names() -> None:
    schema = {
        "type": "OBJECT",
        "properties": {"TYPE": {"type": "STRING"}, "list": {"type": "ARRAY", "items": {"type": "INTEGER"}}},
    }
    assert to_json_schema(schema) == {
        "type": "object",
        "properties": {"TYPE": {"type": "string"}, "list": {"type": "array", "items": {"type": "integer"}}},
    }
