"""Path parameters shared by several resources, and the plain form of what engines return.

Ids are opaque, but bounded and drawn from a safe alphabet so nothing odd reaches the store or the logs.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

from fastapi import Path
from pydantic import AfterValidator

from data import contract

# The data contract's subject-id rule, so every id ingest stores can be served and no resident ID number
# reaches a handler (or the audit log) as an id.
SubjectId = Annotated[
    str,
    Path(
        min_length=1,
        max_length=contract.SUBJECT_ID_MAX_LENGTH,
        pattern=contract.SUBJECT_ID_PATTERN,
        description=f"Subject id (P…, E…): {contract.SUBJECT_ID_RULE}",
    ),
    AfterValidator(contract.check_subject_id),
]
ItemId = Annotated[
    str,
    Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$", description="Catalogue item id"),
    AfterValidator(contract.check_no_resident_id),
]
TagCode = Annotated[
    str,
    Path(
        min_length=3, max_length=64, pattern=r"^[a-z_]+\.[A-Za-z0-9_]+$", description="Tag code, e.g. life_event.marriage"
    ),
    AfterValidator(contract.check_no_resident_id),
]


def plain(value: Any) -> Any:
    """Engines may return dataclasses; the API returns their fields."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value
