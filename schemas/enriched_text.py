"""The model's answer: the new text of one insight, and how it is validated.

Kept free of the ``anthropic`` SDK (a slow import) so that the notifier, which reads stored
texts, does not load it.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from schemas.insights import Priority

# Control characters other than newline and tab have no place in insight text.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u2028\u2029]")
_DIGIT = re.compile(r"\d")


def _clean(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("contains control characters")
    return value.strip()


def _one_line(value: str) -> str:
    value = _clean(value)
    if "\n" in value or "\t" in value:
        raise ValueError("must be a single line")
    return value


def _has_numbers(value: str) -> str:
    if not _DIGIT.search(value):
        raise ValueError("must cite the specific numbers of the alert")
    return value


Line = Annotated[str, AfterValidator(_one_line)]
Paragraph = Annotated[str, AfterValidator(_clean)]


class EnrichedAction(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    action: Line = Field(
        min_length=3, max_length=200, description="One concrete step, imperative mood."
    )
    priority: Priority = Field(description="How urgent this step is.")
    timeline: Line = Field(
        min_length=2, max_length=60, description="When, e.g. 'today', 'within 2 days'."
    )
    expected_impact: Line = Field(
        min_length=3, max_length=240, description="What doing it should change, specifically."
    )


class EnrichedText(BaseModel):
    """The tool input: the insight's new text. Nothing else of the insight can change."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    title: Line = Field(
        min_length=5, max_length=120, description="One line naming the deal and the risk."
    )
    description: Annotated[Paragraph, AfterValidator(_has_numbers)] = Field(
        min_length=20,
        max_length=900,
        description="2-4 sentences: what is wrong, with the specific numbers, and why it matters.",
    )
    actions: list[EnrichedAction] = Field(
        min_length=2, max_length=3, description="2 or 3 actions, most important first."
    )
