"""config.yaml payload rules on upstream bodies: the reference examples, paths, matching, purity."""

from __future__ import annotations

import ast
import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway import payload_rules
from gateway.payload_rules import apply, protocol_for_family

# The ``payload`` block of the reference config.example.yaml, uncommented.
REFERENCE_RULES: dict[str, Any] = yaml.safe_load(
    r"""
default:
  - models:
      - name: "gemini-2.5-pro"
        protocol: "gemini"
    params:
      "generationConfig.thinkingConfig.thinkingBudget": 32768
default-raw:
  - models:
      - name: "gemini-2.5-pro"
        protocol: "gemini"
    params:
      "generationConfig.responseJsonSchema": "{\"type\":\"object\",\"properties\":{\"answer\":{\"type\":\"string\"}}}"
override:
  - models:
      - name: "gpt-*"
        protocol: "codex"
    params:
      "reasoning.effort": "high"
override-raw:
  - models:
      - name: "gpt-*"
        protocol: "codex"
    params:
      "response_format": '{"type":"json_schema","json_schema":{"name":"answer","schema":{"type":"object"}}}'
filter:
  - models:
      - name: "gemini-2.5-pro"
        protocol: "gemini"
    params:
      - "generationConfig.thinkingConfig.thinkingBudget"
      - "generationConfig.responseJsonSchema"
"""
)
ANSWER_SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}}
JSON_FORMAT = {"type": "json_schema", "json_schema": {"name": "answer", "schema": {"type": "object"}}}


def _only(*sections: str) -> dict[str, Any]:
    return {section: REFERENCE_RULES[section] for section in sections}


@pytest.mark.parametrize(
    ("sections", "model", "protocol", "body", "expected"),
    [
        pytest.param(
            ("default",),
            "gemini-2.5-pro",
            "gemini",
            {"contents": []},
            {"contents": [], "generationConfig": {"thinkingConfig": {"thinkingBudget": 32768}}},
            id="default sets a missing budget",
        ),
        pytest.param(
            ("default",),
            "gemini-2.5-pro",
            "gemini",
            {"generationConfig": {"thinkingConfig": {"thinkingBudget": 128}}},
            {"generationConfig": {"thinkingConfig": {"thinkingBudget": 128}}},
            id="default keeps the client's budget",
        ),
        pytest.param(
            ("default",),
            "gemini-2.5-pro",
            "claude",
            {"contents": []},
            {"contents": []},
            id="default for gemini does not touch a claude body",
        ),
        pytest.param(
            ("default-raw",),
            "gemini-2.5-pro",
            "gemini",
            {"generationConfig": {"temperature": 0}},
            {"generationConfig": {"temperature": 0, "responseJsonSchema": ANSWER_SCHEMA}},
            id="default-raw inserts parsed JSON",
        ),
        pytest.param(
            ("override",),
            "gpt-5-codex",
            "codex",
            {"reasoning": {"effort": "low", "summary": "auto"}},
            {"reasoning": {"effort": "high", "summary": "auto"}},
            id="override replaces the effort",
        ),
        pytest.param(
            ("override",),
            "GPT-5",
            "codex",
            {},
            {"reasoning": {"effort": "high"}},
            id="override matches names case-insensitively and creates levels",
        ),
        pytest.param(
            ("override",),
            "gpt-5",
            "openai",
            {},
            {},
            id="override for codex does not touch an openai body",
        ),
        pytest.param(
            ("override-raw",),
            "gpt-4o",
            "codex",
            {"response_format": {"type": "text"}},
            {"response_format": JSON_FORMAT},
            id="override-raw replaces with parsed JSON",
        ),
        pytest.param(
            ("filter",),
            "gemini-2.5-pro",
            "gemini",
            {"generationConfig": {"thinkingConfig": {"thinkingBudget": 1}, "responseJsonSchema": {}, "topK": 3}},
            {"generationConfig": {"thinkingConfig": {}, "topK": 3}},
            id="filter removes both paths",
        ),
        pytest.param(
            ("filter",),
            "gemini-2.5-flash",
            "gemini",
            {"generationConfig": {"responseJsonSchema": {}}},
            {"generationConfig": {"responseJsonSchema": {}}},
            id="filter leaves other models alone",
        ),
        pytest.param(
            ("default", "filter"),
            "gemini-2.5-pro",
            "gemini",
            {},
            {"generationConfig": {"thinkingConfig": {}}},
            id="filter runs after default",
        ),
    ],
)
def test_the_reference_examples(
    sections: tuple[str, ...], model: str, protocol: str, body: dict[str, Any], expected: dict[str, Any]
) -> None:
    assert apply(body, _only(*sections), model=model, protocol=protocol) == expected


def _rule(params: Any, name: str = "m*", protocol: str = "") -> list[dict[str, Any]]:
    return [{"models": [{"name": name, "protocol": protocol}], "params": params}]


@pytest.mark.parametrize(
    ("body", "path", "value", "expected"),
    [
        ({"a": {"b": [{"c": 1}, {"c": 2}]}}, "a.b.1.c", 9, {"a": {"b": [{"c": 1}, {"c": 9}]}}),
        ({}, "a.b.0.c", 9, {"a": {"b": [{"c": 9}]}}),
        ({"a": [1]}, "a.3", 9, {"a": [1, None, None, 9]}),
        ({"a": [1]}, "a.-1", 9, {"a": [1, 9]}),
        ({}, "a.:0", 9, {"a": {"0": 9}}),
        ({"a": {"0": 1}}, "a.0", 9, {"a": {"0": 9}}),
        ({}, r"a\.b.c", 9, {"a.b": {"c": 9}}),
        ({"a": "scalar"}, "a.b", 9, {"a": {"b": 9}}),
        ({"a": [1]}, "a.key", 9, {"a": [1]}),
    ],
    ids=[
        "array element",
        "missing array",
        "past the end",
        "append",
        "forced key",
        "numeric key",
        "escaped dot",
        "through a scalar",
        "key on an array",
    ],
)
def test_override_paths_follow_sjson(body: dict[str, Any], path: str, value: Any, expected: dict[str, Any]) -> None:
    assert apply(body, {"override": _rule({path: value})}, model="m1", protocol="openai") == expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("a.b.0", {"a": {"b": [2, 3]}, "k": 1}),
        ("a.b", {"a": {}, "k": 1}),
        ("a.missing.x", {"a": {"b": [1, 2, 3]}, "k": 1}),
        ("a.b.7", {"a": {"b": [1, 2, 3]}, "k": 1}),
        ("k", {"a": {"b": [1, 2, 3]}}),
    ],
)
def test_filter_paths_remove_keys_and_array_elements(path: str, expected: dict[str, Any]) -> None:
    body = {"a": {"b": [1, 2, 3]}, "k": 1}
    assert apply(body, {"filter": _rule([path])}, model="m1", protocol="gemini") == expected


def test_the_input_is_never_changed_and_untouched_parts_are_shared() -> None:
    messages = [{"role": "user", "content": "hi"}]
    body = {"messages": messages, "reasoning": {"effort": "low"}}
    before = copy.deepcopy(body)
    out = apply(body, {"override": _rule({"reasoning.effort": "high"})}, model="m", protocol="codex")
    assert body == before and out is not body
    assert out["messages"] is messages and out["reasoning"] == {"effort": "high"}


def test_a_rule_value_is_copied_not_shared_between_bodies() -> None:
    rules = {"override": _rule({"tools": [{"type": "web_search"}]})}
    first = apply({}, rules, model="m", protocol="openai")
    first["tools"].append("mutated")
    assert apply({}, rules, model="m", protocol="openai") == {"tools": [{"type": "web_search"}]}


def test_across_default_rules_the_first_write_to_a_path_wins() -> None:
    rules = {
        "default": _rule({"temperature": 0.1}) + _rule({"temperature": 0.9, "top_p": 0.5}),
        "default-raw": _rule({"top_p": "0.7", "seed": "7"}),
    }
    assert apply({}, rules, model="m", protocol="openai") == {"temperature": 0.1, "top_p": 0.5, "seed": 7}


def test_overrides_apply_in_order_so_the_last_write_wins() -> None:
    rules = {"override": _rule({"x": 1}) + _rule({"x": 2}), "override-raw": _rule({"y": "[1]"})}
    assert apply({"x": 0}, rules, model="m", protocol="openai") == {"x": 2, "y": [1]}


def test_raw_values_that_are_not_json_are_skipped() -> None:
    rules = {"override-raw": _rule({"a": "{not json", "b": "true"})}
    assert apply({}, rules, model="m", protocol="openai") == {"b": True}


def test_the_requested_model_matches_too() -> None:
    rules = {"override": _rule({"x": 1}, name="my-alias")}
    assert apply({}, rules, model="upstream-name", protocol="openai", requested_model="My-Alias") == {"x": 1}
    assert apply({}, rules, model="upstream-name", protocol="openai") == {}


def test_a_rule_without_models_or_a_named_entry_applies_to_nothing() -> None:
    rules = {"override": [{"params": {"x": 1}}, {"models": [{"protocol": "openai"}], "params": {"y": 1}}]}
    assert apply({}, rules, model="m", protocol="openai") == {}


def test_an_infix_wildcard_and_a_protocolless_entry_match_any_protocol() -> None:
    rules = {"override": _rule({"x": 1}, name="*flash*")}
    assert apply({}, rules, model="gemini-2.5-FLASH-lite", protocol="gemini") == {"x": 1}
    assert apply({}, rules, model="gemini-2.5-pro", protocol="gemini") == {}


def test_a_root_prefixes_every_path() -> None:
    body = {"request": {"generationConfig": {}}}
    out = apply(body, _only("default"), model="gemini-2.5-pro", protocol="gemini", root="request")
    assert out == {"request": {"generationConfig": {"thinkingConfig": {"thinkingBudget": 32768}}}}


def test_no_rules_give_an_equal_copy() -> None:
    body = {"a": 1}
    out = apply(body, {}, model="m", protocol="openai")
    assert out == body and out is not body


@pytest.mark.parametrize(
    ("family", "protocol"), [("openai", "openai"), ("claude", "claude"), ("gemini", "gemini"), ("responses", "codex")]
)
def test_each_executor_family_has_its_protocol_name(family: str, protocol: str) -> None:
    assert protocol_for_family(family) == protocol


def test_the_module_imports_nothing_that_does_io() -> None:
    tree = ast.parse(Path(payload_rules.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= {"__future__", "copy", "json", "re", "collections.abc", "functools", "typing"}
