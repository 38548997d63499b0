"""Reasoning levels, budgets and the model(x) suffix."""

from __future__ import annotations

import pytest

from gateway import thinking
from gateway.ir import Thinking


@pytest.mark.parametrize(
    ("budget", "level"),
    [
        (-1, "auto"),
        (0, "none"),
        (1, "minimal"),
        (512, "minimal"),
        (513, "low"),
        (1024, "low"),
        (8192, "medium"),
        (24576, "high"),
        (24577, "xhigh"),
        (500000, "xhigh"),
    ],
)
def test_budgets_map_to_levels_by_threshold(budget: int, level: str) -> None:
    assert thinking.budget_to_level(budget) == level


def test_levels_map_to_canonical_budgets() -> None:
    assert [thinking.level_to_budget(lv) for lv in ("minimal", "low", "medium", "high", "xhigh", "max")] == [
        512,
        1024,
        8192,
        24576,
        32768,
        128000,
    ]


@pytest.mark.parametrize(
    ("model", "base", "expected"),
    [
        ("gemini-2.5-pro(1024)", "gemini-2.5-pro", Thinking(mode="budget", budget=1024)),
        ("gpt-5.5(xhigh)", "gpt-5.5", Thinking(mode="level", level="xhigh")),
        ("claude-sonnet-4-5(0)", "claude-sonnet-4-5", Thinking(mode="none", budget=0)),
        ("m(auto)", "m", Thinking(mode="auto", budget=-1)),
        ("m(-1)", "m", Thinking(mode="auto", budget=-1)),
        ("m(none)", "m", Thinking(mode="none", budget=0)),
        ("m(banana)", "m(banana)", None),
        ("plain-model", "plain-model", None),
    ],
)
def test_the_suffix_selects_thinking_and_is_stripped(model: str, base: str, expected: Thinking | None) -> None:
    assert thinking.parse_suffix(model) == (base, expected)


def test_a_level_a_model_lacks_is_refused_in_family_and_mapped_across_families() -> None:
    with pytest.raises(thinking.ThinkingError):
        thinking.resolve(Thinking(mode="level", level="max"), "gpt-5.4", same_family=True)
    crossed = thinking.resolve(Thinking(mode="level", level="max"), "gpt-5.4", same_family=False)
    assert crossed == Thinking(mode="level", level="xhigh")


def test_budget_only_models_take_the_levels_budget_and_clamp_it() -> None:
    resolved = thinking.resolve(Thinking(mode="level", level="high"), "gemini-2.5-flash", same_family=False)
    assert resolved == Thinking(mode="budget", budget=24576)
    big = thinking.resolve(Thinking(mode="budget", budget=99999), "gemini-2.5-pro", same_family=False)
    assert big == Thinking(mode="budget", budget=32768)
    with pytest.raises(thinking.ThinkingError):
        thinking.resolve(Thinking(mode="budget", budget=99999), "gemini-2.5-pro", same_family=True)
    suffixed = thinking.resolve(
        Thinking(mode="budget", budget=99999), "gemini-2.5-pro", same_family=True, from_suffix=True
    )
    assert suffixed == Thinking(mode="budget", budget=32768)


def test_level_only_models_turn_budgets_into_the_nearest_level() -> None:
    assert thinking.resolve(Thinking(mode="budget", budget=8192), "gpt-5.5", same_family=False) == Thinking(
        mode="level", level="medium"
    )
    assert thinking.resolve(Thinking(mode="budget", budget=100), "gpt-5.5", same_family=False) == Thinking(
        mode="level", level="low"
    )


def test_unknown_models_pass_thinking_through_unchanged() -> None:
    asked = Thinking(mode="level", level="max")
    assert thinking.resolve(asked, "my-local-llama", same_family=True) is asked


@pytest.mark.parametrize(
    ("level", "model", "effort"),
    [
        ("minimal", "claude-sonnet-4-6", "low"),
        ("xhigh", "claude-sonnet-4-6", "max"),
        ("xhigh", "claude-opus-5", "xhigh"),
        ("auto", "claude-opus-5", "high"),
        ("medium", "claude-sonnet-4-6", "medium"),
    ],
)
def test_claude_adaptive_effort(level: str, model: str, effort: str) -> None:
    assert thinking.claude_effort(level, thinking.capability(model)) == effort


def test_capabilities_know_adaptive_and_legacy_claude_models() -> None:
    assert thinking.capability("claude-sonnet-4-6").adaptive
    assert not thinking.capability("claude-sonnet-4-5-20250929").adaptive
    assert thinking.capability("unknown-model") is None
