"""Reasoning effort and thinking budgets: canonical levels, the ``model(x)`` suffix, per-model limits.

Parse sides put what the client asked for into ``ir.Thinking``; ``resolve()`` fits it to what the
target model supports; render sides write the result in their family's fields. Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.ir import Thinking

LEVELS = ("none", "auto", "minimal", "low", "medium", "high", "xhigh", "max")
LEVEL_BUDGETS = {
    "none": 0,
    "auto": -1,
    "minimal": 512,
    "low": 1024,
    "medium": 8192,
    "high": 24576,
    "xhigh": 32768,
    "max": 128000,
}
_ORDERED = ("minimal", "low", "medium", "high", "xhigh", "max")


class ThinkingError(ValueError):
    """The requested thinking setting cannot be honoured by the target model (HTTP 400)."""


def level_to_budget(level: str) -> int:
    return LEVEL_BUDGETS.get(level, LEVEL_BUDGETS["medium"])


def budget_to_level(budget: int) -> str:
    """The level of a budget: -1 auto, 0 none, then by thresholds (never ``max``)."""
    if budget < -1:
        raise ThinkingError(f"invalid thinking budget {budget}")
    if budget == -1:
        return "auto"
    if budget == 0:
        return "none"
    for level in ("minimal", "low", "medium", "high"):
        if budget <= LEVEL_BUDGETS[level]:
            return level
    return "xhigh"


_SUFFIX = re.compile(r"^(?P<base>.+)\((?P<value>[^()]*)\)$")


def parse_suffix(model: str) -> tuple[str, Thinking | None]:
    """Split ``gemini-2.5-pro(1024)`` into the base model and the thinking it asks for.

    Integer ≥ 0 is a budget (0 = none), ``-1``/``auto`` is auto, ``none`` and the level names
    are levels; any other value leaves the name unchanged.
    """
    match = _SUFFIX.match(model)
    if not match:
        return model, None
    base, value = match["base"], match["value"].strip().lower()
    if value in ("-1", "auto"):
        return base, Thinking(mode="auto", budget=-1)
    if value == "none":
        return base, Thinking(mode="none", budget=0)
    if value in _ORDERED:
        return base, Thinking(mode="level", level=value)
    if value.isdigit():
        budget = int(value)
        return base, Thinking(mode="none", budget=0) if budget == 0 else Thinking(mode="budget", budget=budget)
    return model, None


@dataclass(frozen=True, slots=True)
class Capability:
    """What a model accepts: a budget range, a list of levels, or both (hybrid)."""

    family: str
    budget_min: int | None = None
    budget_max: int | None = None
    zero_allowed: bool = False
    dynamic_allowed: bool = False
    levels: tuple[str, ...] = ()

    @property
    def adaptive(self) -> bool:
        """Claude models that take ``thinking.type: adaptive`` plus an effort level."""
        return self.family == "claude" and bool(self.levels)


# First matching pattern wins; order from most to least specific.
_CAPABILITIES: tuple[tuple[str, Capability], ...] = (
    (
        r"^claude-(opus|sonnet)-5",
        Capability("claude", dynamic_allowed=True, levels=("low", "medium", "high", "xhigh", "max")),
    ),
    (
        r"^claude-(opus-4-[78]|fable-5)",
        Capability("claude", 1024, 128000, levels=("low", "medium", "high", "xhigh", "max")),
    ),
    (r"^claude-(sonnet|opus)-4-6", Capability("claude", 1024, 128000, levels=("low", "medium", "high", "max"))),
    (r"^claude-.*4-5", Capability("claude", 1024, 128000, zero_allowed=True)),
    (r"^claude-", Capability("claude", 1024, 128000)),
    (r"^gemini-2\.5-pro", Capability("gemini", 128, 32768, dynamic_allowed=True)),
    (r"^gemini-2\.5-flash", Capability("gemini", 0, 24576, zero_allowed=True, dynamic_allowed=True)),
    (r"^gemini-3(\.0)?-pro", Capability("gemini", 128, 32768, dynamic_allowed=True, levels=("low", "high"))),
    (r"^gemini-3\.1-pro", Capability("gemini", 128, 32768, dynamic_allowed=True, levels=("low", "medium", "high"))),
    (r"^gemini-3", Capability("gemini", 128, 32768, dynamic_allowed=True, levels=("minimal", "low", "medium", "high"))),
    (r"^gpt-5\.6", Capability("openai", levels=("low", "medium", "high", "xhigh", "max"))),
    (r"^gpt-5", Capability("openai", levels=("low", "medium", "high", "xhigh"))),
    (r"^(o1|o3|o4)", Capability("openai", levels=("low", "medium", "high"))),
)


def capability(model: str) -> Capability | None:
    """Known thinking support of ``model``; None for models CliRelay has no table entry for."""
    name = model.lower()
    for pattern, cap in _CAPABILITIES:
        if re.match(pattern, name):
            return cap
    return None


def _clamp_level(level: str, levels: tuple[str, ...]) -> str:
    """The nearest supported level; ties go to the lower one."""
    if level in levels:
        return level
    want = _ORDERED.index(level) if level in _ORDERED else _ORDERED.index("medium")
    ranked = sorted(levels, key=lambda lv: (abs(_ORDERED.index(lv) - want), _ORDERED.index(lv)))
    return ranked[0]


def _high_intent(level: str, levels: tuple[str, ...]) -> str | None:
    tries = {"xhigh": ("xhigh", "max", "high"), "max": ("max", "xhigh", "high")}.get(level, ())
    return next((lv for lv in tries if lv in levels), None)


def resolve(thinking: Thinking | None, model: str, *, same_family: bool, from_suffix: bool = False) -> Thinking | None:
    """Fit the requested thinking to ``model``; raises ``ThinkingError`` where the spec demands a 400."""
    if thinking is None or thinking.mode is None:
        return thinking
    cap = capability(model)
    if cap is None:
        return thinking  # user-defined model: passed on best-effort, never rejected
    include = thinking.include_thoughts
    if thinking.mode == "none" or (thinking.mode == "budget" and thinking.budget == 0):
        return _resolve_none(cap, include)
    if thinking.mode == "auto":
        return _resolve_auto(cap, include)
    if thinking.mode == "level":
        return _resolve_level(thinking.level or "medium", cap, include, same_family=same_family)
    return _resolve_budget(thinking.budget or 0, cap, include, strict=same_family and not from_suffix)


def _resolve_none(cap: Capability, include: bool | None) -> Thinking:
    if cap.zero_allowed or not cap.levels or "none" in cap.levels or cap.family == "claude":
        return Thinking(mode="none", budget=0, include_thoughts=include)
    return Thinking(mode="level", level=cap.levels[0], include_thoughts=include)


def _resolve_auto(cap: Capability, include: bool | None) -> Thinking:
    if cap.dynamic_allowed or cap.adaptive:
        return Thinking(mode="auto", budget=-1, include_thoughts=include)
    if cap.levels:
        return Thinking(mode="level", level=_clamp_level("medium", cap.levels), include_thoughts=include)
    mid = ((cap.budget_min or 0) + (cap.budget_max or 0)) // 2
    return Thinking(mode="budget", budget=mid, include_thoughts=include)


def _resolve_level(level: str, cap: Capability, include: bool | None, *, same_family: bool) -> Thinking:
    if not cap.levels:  # budget-only model: the level's budget
        budget = _clamp_budget(level_to_budget(level), cap)
        return Thinking(mode="budget", budget=budget, include_thoughts=include)
    if level not in cap.levels:
        if same_family:
            raise ThinkingError(
                f"thinking level '{level}' is not supported by this model (supported: {', '.join(cap.levels)})"
            )
        level = _high_intent(level, cap.levels) or _clamp_level(level, cap.levels)
    return Thinking(mode="level", level=level, include_thoughts=include)


def _resolve_budget(budget: int, cap: Capability, include: bool | None, *, strict: bool) -> Thinking:
    if cap.budget_min is None or cap.budget_max is None:  # level-only model
        return Thinking(mode="level", level=_clamp_level(budget_to_level(budget), cap.levels), include_thoughts=include)
    if strict and not cap.budget_min <= budget <= cap.budget_max:
        raise ThinkingError(f"thinking budget {budget} is outside {cap.budget_min}..{cap.budget_max} for this model")
    return Thinking(mode="budget", budget=_clamp_budget(budget, cap), include_thoughts=include)


def _clamp_budget(budget: int, cap: Capability) -> int:
    low, high = cap.budget_min or 0, cap.budget_max or budget
    return min(max(budget, low), high)


def claude_effort(level: str, cap: Capability | None) -> str:
    """The Claude adaptive ``output_config.effort`` for a canonical level."""
    levels = cap.levels if cap else ("low", "medium", "high", "max")
    if level == "minimal":
        return "low"
    if level in ("xhigh", "max"):
        if level in levels:
            return level
        return "max" if "max" in levels else "high"
    if level == "auto":
        return "high"
    return level
