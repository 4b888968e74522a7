"""What every reminder rule has, whatever its trigger kind: the schema of the common fields and the query pieces
every kind's query ends with (audience filter, linked items, rendered messages).

A kind subclasses :class:`RuleBase`: a ``kind: Literal[...]`` (the discriminator), its own fields and validators,
``MESSAGE_FIELDS`` (what its message templates may name) and ``query(inp)``, which returns the due candidates
(subject, object, stage) and the live cause keys as of ``inp.as_of``. Validators raise ``ValueError`` with the
words the operator reads after ``FILE:LINE: rule 'ID': ``; the reference sets (licence types, tag codes, catalogue
items) arrive through pydantic's validation context as ``reference``.
"""

from __future__ import annotations

import json
import re
import string
from typing import Any, ClassVar

import polars as pl
from pydantic import BaseModel, ConfigDict, PrivateAttr, ValidationInfo, field_validator

CHANNELS = ("in_app", "webhook")
PRIORITIES = {"high": 3, "normal": 2, "low": 1}
SUBJECT_TYPES = ("person", "enterprise")
COMMON_FIELDS = frozenset({"subject_id", "rule_id", "as_of", "item_names"})

_ID = re.compile(r"^[a-z][a-z0-9_]{1,63}$")


def reference(info: ValidationInfo):
    """The reference sets passed as validation context (None: nothing to check against, e.g. a snapshot)."""
    return (info.context or {}).get("reference")


def word_list(value: Any, key: str, item_type: type = str, required: bool = False) -> tuple:
    """A YAML list of text (or whole numbers) as a tuple: no other item type, no repeats, not empty if required."""
    if not isinstance(value, list):
        raise ValueError(f"field {key!r} must be a list, got {_show(value)}")
    for item in value:
        if not isinstance(item, item_type) or isinstance(item, bool):
            kind = "text" if item_type is str else "whole numbers"
            raise ValueError(f"field {key!r} must list {kind}, got {_show(item)}")
    if required and not value:
        raise ValueError(f"field {key!r} must not be empty")
    if len(set(value)) != len(value):
        raise ValueError(f"field {key!r} lists a value twice")
    return tuple(value)


def check_tag(code: str, info: ValidationInfo) -> None:
    if "." not in code:
        raise ValueError(f"tag code {code!r} must be written dimension.code, e.g. life_event.birth")
    ref = reference(info)
    if ref is not None and ref.tag_codes and code not in ref.tag_codes:
        raise ValueError(f"unknown tag code {code!r} (see data/tag_taxonomy.csv)")


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


class StrictModel(BaseModel):
    # strict: `statutory: 1` or `version: "1"` is a mistake in a rules file, not something to coerce
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class Audience(StrictModel):
    subject_type: str
    tags_any: tuple[str, ...] = ()
    tags_all: tuple[str, ...] = ()
    tags_none: tuple[str, ...] = ()
    districts: tuple[str, ...] = ()

    @field_validator("subject_type")
    @classmethod
    def _subject_type(cls, value: str) -> str:
        if value not in SUBJECT_TYPES:
            raise ValueError(f"subject_type must be person or enterprise, got {value!r}")
        return value

    @field_validator("tags_any", "tags_all", "tags_none", "districts", mode="before")
    @classmethod
    def _lists(cls, value: Any, info: ValidationInfo) -> tuple:
        out = word_list(value, info.field_name)
        if info.field_name != "districts":
            for code in out:
                check_tag(code, info)
        return out

    @property
    def tag_codes(self) -> set[str]:
        return set(self.tags_any) | set(self.tags_all) | set(self.tags_none)


class Message(StrictModel):
    zh: str
    en: str


class RuleBase(StrictModel):
    """The fields every rule has. ``line`` (where the rule starts in its file) is set by the reader."""

    id: str
    version: int
    enabled: bool = True
    audience: Audience
    message: Message
    channels: tuple[str, ...]
    priority: int = PRIORITIES["normal"]
    statutory: bool
    items: tuple[str, ...] = ()
    _line: int = PrivateAttr(default=0)

    MESSAGE_FIELDS: ClassVar[frozenset[str]] = frozenset()
    # The rule as flat JSON (the API's and `rules check --json`'s shape) shows every kind's fields; a kind's
    # fields take these values on rules of other kinds.
    FLAT_DEFAULTS: ClassVar[dict[str, Any]] = {}

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not _ID.match(value):
            raise ValueError("id must be lower-case letters, digits and underscores, starting with a letter")
        return value

    @field_validator("version")
    @classmethod
    def _version(cls, value: int) -> int:
        if value < 1:
            raise ValueError("version must be 1 or more")
        return value

    @field_validator("priority", mode="before")
    @classmethod
    def _priority(cls, value: Any) -> int:
        if not isinstance(value, str):
            raise ValueError(f"field 'priority' must be text, got {_show(value)}")
        if value not in PRIORITIES:
            raise ValueError(f"priority must be one of {', '.join(PRIORITIES)}, got {value!r}")
        return PRIORITIES[value]

    @field_validator("channels", mode="before")
    @classmethod
    def _channels(cls, value: Any) -> tuple:
        out = word_list(value, "channels", required=True)
        for ch in out:
            if ch not in CHANNELS:
                raise ValueError(f"unknown channel {ch!r}; expected {' / '.join(CHANNELS)}")
        return out

    @field_validator("items", mode="before")
    @classmethod
    def _items(cls, value: Any, info: ValidationInfo) -> tuple:
        out = word_list(value, "items")
        ref = reference(info)
        for item in out:
            if item.count("{district}") > 1 or ("{" in item.replace("{district}", "")):
                raise ValueError(f"item {item!r}: the only placeholder allowed is {{district}}")
            if ref is not None and ref.items and "{district}" in item:
                pattern = re.compile("^" + re.escape(item).replace(re.escape("{district}"), r"\d{6}") + "$")
                if not any(pattern.match(i) for i in ref.items):
                    raise ValueError(f"no catalogue item matches {item!r} for any district")
            elif ref is not None and ref.items and item not in ref.items:
                raise ValueError(f"item {item!r} is not in the catalogue")
        return out

    # -- what the engine and the API read ----------------------------------------------------------------------

    @property
    def line(self) -> int:
        return self._line

    @property
    def message_zh(self) -> str:
        return self.message.zh

    @property
    def message_en(self) -> str:
        return self.message.en

    def template_problem(self, lang: str) -> str | None:
        """Why the ``lang`` message template cannot be rendered for this kind, or None."""
        text = getattr(self.message, lang)
        try:
            names = [name for _, name, _, _ in string.Formatter().parse(text) if name is not None]
        except ValueError as exc:
            return f"message.{lang}: bad braces ({exc})"
        allowed = COMMON_FIELDS | self.MESSAGE_FIELDS
        for name in names:
            if name not in allowed:
                return (f"message.{lang} uses unknown field {{{name}}}; fields for {self.kind}: "
                        f"{', '.join(sorted(allowed))}")
        return None

    def flat_fields(self) -> dict[str, Any]:
        """This kind's own fields as flat JSON-able values (keys as in ``FLAT_DEFAULTS``)."""
        return {k: getattr(self, k) for k in self.FLAT_DEFAULTS}

    @classmethod
    def prepare(cls, inp, rules: list) -> None:
        """Tell the run's shared inputs what this kind's rules will ask of them (before any query runs)."""

    def query(self, inp) -> tuple[pl.LazyFrame, pl.LazyFrame]:
        """(due candidates as the outbox's columns, live cause keys subject_id/object_id) as of ``inp.as_of``."""
        raise NotImplementedError


# -- the query pieces every kind shares -----------------------------------------------------------------------


def audience_filter(rule: RuleBase, inp, frame: pl.LazyFrame) -> pl.LazyFrame:
    """Keep rows whose subject_id passes the rule's audience filter (district, tags, personalisation)."""
    a = rule.audience
    if a.districts:
        frame = frame.filter(pl.col("district").is_in(list(a.districts)))
    if a.tag_codes:
        tags = inp.tags(a.tag_codes).select("subject_id", "code")
        if a.tags_any:
            have = tags.filter(pl.col("code").is_in(list(a.tags_any))).select("subject_id").unique()
            frame = frame.join(have, on="subject_id", how="semi")
        for code in a.tags_all:
            have = tags.filter(pl.col("code") == code).select("subject_id").unique()
            frame = frame.join(have, on="subject_id", how="semi")
        if a.tags_none:
            bad = tags.filter(pl.col("code").is_in(list(a.tags_none))).select("subject_id").unique()
            frame = frame.join(bad, on="subject_id", how="anti")
    if not rule.statutory:
        # Marketing-like reminders stop at once for a subject who switched personalisation off (PIPL Art. 24).
        frame = frame.join(inp.personalisation_off, on="subject_id", how="anti")
    return frame


# In an English message the catalogue's (Chinese) item names are replaced by their English names.
EN_FIELDS = {"item_name": "item_name_en", "item_names": "item_names_en"}


def render(template: str, fields: dict[str, str] | None = None) -> pl.Expr:
    """A message template as one concat_str expression (vectorised, no per-row formatting)."""
    parts: list[pl.Expr] = []
    for literal, name, _spec, _conv in string.Formatter().parse(template):
        if literal:
            parts.append(pl.lit(literal))
        if name is not None:
            parts.append(pl.col((fields or {}).get(name, name)).cast(pl.String).fill_null(""))
    return pl.concat_str(parts) if parts else pl.lit("")


def finish(
    rule: RuleBase, inp, frame: pl.LazyFrame, fields: list[str], lead_items: list[pl.Expr] | None = None
) -> pl.LazyFrame:
    """Add linked items, common fields, rendered messages and the fixed rule columns."""
    frame = frame.join(inp.district_codes.lazy(), on="district", how="left")
    cat_names = inp.catalog.lazy().select("item_id", "name").join(inp.item_names_en.lazy(), on="item_id", how="left")
    item_cols: list[str] = []
    for i, expr in enumerate(lead_items or []):
        frame = frame.with_columns(expr.alias(f"_item{i}"))
        item_cols.append(f"_item{i}")
    for j, item in enumerate(rule.items):
        col = f"_item{len(item_cols)}"
        if "{district}" in item:
            pre, post = item.split("{district}", 1)
            frame = frame.with_columns(pl.concat_str([pl.lit(pre), pl.col("district_code"), pl.lit(post)]).alias(col))
        else:
            frame = frame.with_columns(pl.lit(item).alias(col))
        item_cols.append(col)
    name_cols = []
    for col in item_cols:
        frame = frame.join(cat_names.rename({"item_id": col, "name": f"{col}_name", "name_en": f"{col}_name_en"}),
                           on=col, how="left")
        # An item id that the catalogue does not hold (e.g. no such district variant) is dropped, not linked.
        frame = frame.with_columns(
            pl.when(pl.col(f"{col}_name").is_not_null()).then(pl.col(col)).alias(col),
            # An item without an English name is named by its id in English texts, never in Chinese.
            pl.when(pl.col(f"{col}_name").is_not_null()).then(pl.col(f"{col}_name_en").fill_null(pl.col(col)))
            .alias(f"{col}_name_en"),
        )
        name_cols.append(f"{col}_name")
    if item_cols:
        ids = pl.concat_list([pl.col(c) for c in item_cols]).list.drop_nulls()
        names = pl.concat_list([pl.col(c) for c in name_cols]).list.drop_nulls().list.join("、")
        names_en = pl.concat_list([pl.col(f"{c}_en") for c in name_cols]).list.drop_nulls().list.join(", ")
        item_json = pl.when(ids.list.len() > 0).then(
            pl.concat_str([pl.lit('["'), ids.list.join('","'), pl.lit('"]')])
        ).otherwise(pl.lit("[]"))
    else:
        names, names_en, item_json = pl.lit(""), pl.lit(""), pl.lit("[]")
    frame = frame.with_columns(
        item_json.alias("item_ids"),
        names.alias("item_names"),
        names_en.alias("item_names_en"),
        pl.lit(rule.id).alias("rule_id"),
        pl.lit(inp.as_of.isoformat()).alias("as_of"),
    )
    all_fields = ["subject_id", "rule_id", "as_of", "item_names", *fields]
    frame = frame.with_columns([pl.col(f).cast(pl.String) for f in fields])
    return frame.select(
        pl.col("rule_id"),
        pl.lit(rule.version, dtype=pl.Int64).alias("rule_version"),
        pl.lit(rule.kind).alias("kind"),
        pl.col("subject_id"),
        pl.lit(rule.audience.subject_type).alias("subject_type"),
        pl.col("object_id").cast(pl.String),
        pl.col("stage").cast(pl.String),
        pl.col("stage_order").cast(pl.Int64),
        pl.col("cause_date").cast(pl.String),
        pl.col("item_ids"),
        render(rule.message_zh).alias("message_zh"),
        render(rule.message_en, EN_FIELDS).alias("message_en"),
        pl.struct(all_fields).struct.json_encode().alias("fields_json"),
        pl.lit(json.dumps(list(rule.channels))).alias("channels"),
        pl.lit(rule.priority, dtype=pl.Int64).alias("priority"),
        pl.lit(int(rule.statutory), dtype=pl.Int64).alias("statutory"),
    )
