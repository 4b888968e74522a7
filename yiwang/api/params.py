"""Path parameters shared by several resources, and the lazy lookup of engine functions.

Ids are opaque, but bounded and drawn from a safe alphabet so nothing odd reaches the store or the logs.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Annotated, Any

from fastapi import Path
from pydantic import AfterValidator

from data import contract
from yiwang.api.errors import ServiceUnavailable

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


def engine(module: str, name: str) -> Any:
    """``module.name``, imported on first use so the API runs while an engine is absent (503 until it lands)."""
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and (module == exc.name or module.startswith(exc.name + ".")):
            raise ServiceUnavailable(f"{module} is not available in this deployment") from None
        raise
    fn = getattr(mod, name, None)
    if fn is None:
        raise ServiceUnavailable(f"{module}.{name} is not available in this deployment")
    return fn


def plain(value: Any) -> Any:
    """Engines may return dataclasses; the API returns their fields."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value
