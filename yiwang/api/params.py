"""Path parameters shared by several resources, and the plain form of what engines return.

Ids are opaque, but bounded and drawn from a safe alphabet so nothing odd reaches the store or the logs.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

from fastapi import Path

SubjectId = Annotated[
    str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$", description="Subject id (P…, E…)")
]
ItemId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$", description="Catalogue item id")]
TagCode = Annotated[
    str, Path(min_length=3, max_length=64, pattern=r"^[a-z_]+\.[A-Za-z0-9_]+$", description="Tag code, e.g. life_event.marriage")
]


def plain(value: Any) -> Any:
    """Engines may return dataclasses; the API returns their fields."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value
