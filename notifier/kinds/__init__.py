"""Alert trigger kinds: one class per kind, one module each; this registry makes them one discriminated union.

Adding a kind: write ``notifier/kinds/<kind>.py`` (a :class:`~notifier.kinds.base.RuleBase` subclass with
``kind: Literal["<kind>"]``, its fields, ``MESSAGE_FIELDS``, ``FLAT_DEFAULTS`` and ``query``), add it to
``KIND_CLASSES`` below, and test it (see docs/adding-an-alert-kind.md).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Union

from pydantic import BaseModel, ConfigDict, Field

from notifier.kinds.age_milestone import AgeMilestone
from notifier.kinds.base import RuleBase
from notifier.kinds.calendar import Calendar
from notifier.kinds.licence_expiry import LicenceExpiry
from notifier.kinds.tag_gained import TagGained

KIND_CLASSES: tuple[type[RuleBase], ...] = (LicenceExpiry, TagGained, Calendar, AgeMilestone)


def rule_union(classes: tuple[type[RuleBase], ...]):
    """The union a rules file's entries validate against: the ``kind:`` key picks the class."""
    return Annotated[Union[classes], Field(discriminator="kind")]


@lru_cache(maxsize=8)
def rules_file_model(classes: tuple[type[RuleBase], ...]) -> type[BaseModel]:
    """The schema of a whole rules file (``rules:`` and nothing else) over the given kinds."""

    class RulesFile(BaseModel):
        model_config = ConfigDict(strict=True, extra="forbid")

        rules: list[rule_union(classes)]

    return RulesFile


def kind_name(cls: type[RuleBase]) -> str:
    return cls.model_fields["kind"].annotation.__args__[0]


Rule = rule_union(KIND_CLASSES)
KINDS = tuple(kind_name(c) for c in KIND_CLASSES)

__all__ = ["KIND_CLASSES", "KINDS", "Rule", "RuleBase", "kind_name", "rule_union", "rules_file_model"]
