"""The neutral representation every dialect maps to and from.

Dialect modules translate their wire format into these types and back (hub and spoke), so
a client dialect and an upstream family meet here rather than in pairwise translators.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True, frozen=True)
class Usage:
    """Token counts of one attempt, normalised: ``input_tokens`` includes cached ones."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    total_tokens: int = 0
