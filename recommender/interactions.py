"""Load any user/item[/timestamp][/rating] file in its original form into (subject_id, item_id, ts[, rating]).

Two layouts (``format``):

- ``pairs``: one interaction per row (MovieLens ``u.data``, RecBole ``.inter``, any CSV);
- ``sequences``: one user per line followed by that user's items in time order, ``user item1 item2 ...``
  (the S3Rec/ICLRec files). The order within the line is the time: ``ts`` is the item's position.

Without ``format`` a file whose lines (space- or tab-separated, no quotes) hold different numbers of fields is
read as sequences; any other file as pairs.

Options: delimiter (default: guessed from the first line among tab, comma, semicolon, pipe, space),
header yes/no, columns by name or 0-based index, optional rating column with a threshold. Whatever is
left out is counted in ``LoadedInteractions.skips`` (rating below threshold, duplicate user-item pairs,
users with a single interaction); an unknown column, an unreadable file or nothing left is a ContractError
naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from data.errors import ContractError

SEPARATORS = ("\t", ",", ";", "|", " ")
FORMATS = ("pairs", "sequences")
#: lines looked at to tell a sequence file from a pairs file
SNIFF_LINES = 2000
SEP_NAMES = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|", "space": " "}


@dataclass
class LoadedInteractions:
    frame: pl.DataFrame  # subject_id str, item_id str, ts datetime[us, UTC] (or null), rating f64 (or null)
    path: Path
    skips: dict[str, int] = field(default_factory=dict)
    rows_read: int = 0  # rows (pairs) or lines (sequences)
    format: str = "pairs"


def _sep(path: Path, sep: str | None) -> str:
    if sep is not None:
        sep = SEP_NAMES.get(sep, sep)
        if len(sep) != 1:
            raise ContractError(f"{path}: separator must be one character (or tab/comma/semicolon/pipe/space), got {sep!r}")
        return sep
    try:
        with path.open("r", encoding="utf-8") as f:
            first = f.readline()
    except UnicodeDecodeError:
        raise ContractError(f"{path}: not UTF-8 text") from None
    for s in SEPARATORS:
        if s in first:
            return s
    raise ContractError(f"{path}: cannot guess the separator from the first line; pass --sep")


def _resolve(path: Path, columns: list[str], spec, role: str) -> str | None:
    """A column given by name or 0-based index -> its name in the frame."""
    if spec is None or spec == "":
        return None
    if isinstance(spec, int) or (isinstance(spec, str) and spec.isdigit()):
        i = int(spec)
        if not 0 <= i < len(columns):
            raise ContractError(f"{path}: {role} column index {i} is out of range (the file has {len(columns)} columns)")
        return columns[i]
    if spec not in columns:
        raise ContractError(f"{path}: unknown {role} column {spec!r}; columns: {', '.join(columns)} "
                            "(or give a 0-based index)")
    return spec


def _to_datetime(path: Path, s: pl.Series, name: str) -> pl.Series:
    """Numbers are Unix seconds; text is parsed as ISO dates/datetimes. Unparseable values are an error."""
    if s.dtype.is_numeric():
        out = (s.cast(pl.Float64) * 1e6).cast(pl.Int64).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    elif isinstance(s.dtype, pl.Datetime):
        out = s.cast(pl.Datetime("us", s.dtype.time_zone)) if s.dtype.time_zone else s.dt.replace_time_zone("UTC")
        out = out.dt.convert_time_zone("UTC").cast(pl.Datetime("us", "UTC"))
    elif isinstance(s.dtype, pl.Date):
        out = s.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    else:
        txt = s.cast(pl.String).str.strip_chars()
        if txt.str.contains(r"^\d+(\.\d+)?$").all():
            return _to_datetime(path, txt.cast(pl.Float64), name)
        out = txt.str.to_datetime(time_unit="us", strict=False)
        if out.dtype.time_zone is None:
            out = out.dt.replace_time_zone("UTC")
        out = out.dt.convert_time_zone("UTC")
        bad = int(out.is_null().sum() - s.is_null().sum())
        if bad:
            first = txt.filter(out.is_null() & s.is_not_null()).head(1).to_list()
            raise ContractError(f"{path}: time column {name!r}: {bad} value(s) are not a date/time or Unix seconds "
                                f"(first: {first[0]!r})")
    return out


def _head(path: Path, n: int) -> list[str]:
    try:
        with path.open("r", encoding="utf-8") as f:
            return [line for _, line in zip(range(n), f)]
    except UnicodeDecodeError:
        raise ContractError(f"{path}: not UTF-8 text") from None


def _looks_like_sequences(path: Path, sep: str) -> bool:
    """Lines with different numbers of whitespace-separated fields: a pairs file has a fixed column count."""
    if sep not in (" ", "\t"):
        return False
    lines = [line.strip() for line in _head(path, SNIFF_LINES)]
    lines = [line for line in lines if line]
    if len(lines) < 2 or any('"' in line for line in lines):
        return False
    counts = {len(line.split(sep)) if sep == "\t" else len(line.split()) for line in lines}
    return len(counts) > 1 and max(counts) > 2


def detect_format(path, sep: str | None = None) -> str:
    """``sequences`` for a file whose whitespace-separated lines differ in length, else ``pairs``."""
    path = Path(path)
    if not path.is_file():
        raise ContractError(f"{path}: no such file")
    return "sequences" if _looks_like_sequences(path, _sep(path, sep)) else "pairs"


def _read_sequences(path: Path, sep: str, header: bool) -> tuple[pl.DataFrame, int, dict[str, int]]:
    """``user item1 item2 ...`` per line -> (subject_id, item_id, ts) with ts the position in the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ContractError(f"{path}: not UTF-8 text") from None
    lines = pl.DataFrame({"line": pl.Series(text.splitlines(), dtype=pl.String)})
    if header and lines.height:
        lines = lines.slice(1)
    n_lines = lines.height
    tokens = pl.col("line").str.strip_chars().str.split(sep)
    if sep == " ":
        # runs of spaces (and stray tabs) separate fields too
        tokens = pl.col("line").str.strip_chars().str.replace_all(r"\s+", " ").str.split(" ")
    toks = lines.select(tok=tokens.list.eval(pl.element().filter(pl.element() != "")))
    skips: dict[str, int] = {}
    blank = toks.filter(pl.col("tok").list.len() == 0).height
    if blank:
        skips["blank lines"] = blank
    userless = toks.filter(pl.col("tok").list.len() == 1).height
    if userless:
        skips["lines with a user and no item"] = userless
    df = (toks.filter(pl.col("tok").list.len() > 1)
          .select(subject_id=pl.col("tok").list.first(), item_id=pl.col("tok").list.slice(1))
          .explode("item_id")
          # file order is time order (each line in order, lines in order): one second per position
          .with_columns(ts=(pl.int_range(pl.len(), dtype=pl.Int64) * 1_000_000).cast(pl.Datetime("us"))
                        .dt.replace_time_zone("UTC"),
                        rating=pl.lit(None, dtype=pl.Float64)))
    if df.height == 0:
        raise ContractError(f"{path}: no line holds a user and at least one item (expected `user item1 item2 ...`)")
    return df, n_lines, skips


def load_interactions(path, *, format: str | None = None, sep: str | None = None, header: bool | None = None,
                      user_col=0, item_col=1, time_col=None, rating_col=None, min_rating: float | None = None,
                      min_user_interactions: int = 2) -> LoadedInteractions:
    """Read an interaction file; see the module docstring for what is counted and what is an error.

    ``header`` defaults to yes for pairs and no for sequences.
    """
    path = Path(path)
    if not path.is_file():
        raise ContractError(f"{path}: no such file")
    if format is not None and format not in FORMATS:
        raise ContractError(f"{path}: unknown format {format!r}; known: {', '.join(FORMATS)}")
    s = _sep(path, sep)
    if format is None:
        format = "sequences" if _looks_like_sequences(path, s) else "pairs"
    if format == "sequences":
        if rating_col not in (None, "") or min_rating is not None:
            raise ContractError(f"{path}: a sequence file (`user item1 item2 ...`) has no rating column")
        df, rows_read, skips = _read_sequences(path, s, bool(header) if header is not None else False)
        return _kept(path, df, skips, rows_read, min_user_interactions, format)
    header = True if header is None else bool(header)
    try:
        raw = pl.read_csv(path, separator=s, has_header=header, infer_schema_length=10000,
                          quote_char='"', truncate_ragged_lines=False)
    except (pl.exceptions.ComputeError, pl.exceptions.NoDataError, UnicodeDecodeError) as exc:
        raise ContractError(f"{path}: cannot read as a {s!r}-separated file: {str(exc).splitlines()[0]}") from None
    if raw.height == 0:
        raise ContractError(f"{path}: no interaction rows")
    cols = raw.columns
    u = _resolve(path, cols, user_col, "user")
    i = _resolve(path, cols, item_col, "item")
    t = _resolve(path, cols, time_col, "time")
    r = _resolve(path, cols, rating_col, "rating")
    if u is None or i is None:
        raise ContractError(f"{path}: a user column and an item column are required")
    if min_rating is not None and r is None:
        raise ContractError(f"{path}: a rating threshold ({min_rating}) needs a rating column")
    skips: dict[str, int] = {}
    df = pl.DataFrame({
        "subject_id": raw[u].cast(pl.String),
        "item_id": raw[i].cast(pl.String),
        "ts": _to_datetime(path, raw[t], t) if t else pl.Series([None] * raw.height, dtype=pl.Datetime("us", "UTC")),
        "rating": raw[r].cast(pl.Float64, strict=False) if r else pl.Series([None] * raw.height, dtype=pl.Float64),
    })
    nulls = df.filter(pl.col("subject_id").is_null() | pl.col("item_id").is_null()).height
    if nulls:
        skips["rows with an empty user or item"] = nulls
        df = df.drop_nulls(["subject_id", "item_id"])
    if r is not None:
        bad = int(df["rating"].is_null().sum() - raw[r].is_null().sum())
        if bad:
            raise ContractError(f"{path}: rating column {r!r} has {bad} non-numeric value(s)")
    if min_rating is not None:
        low = df.filter(pl.col("rating") < float(min_rating)).height
        if low:
            skips[f"ratings below {min_rating}"] = low
        df = df.filter(pl.col("rating") >= float(min_rating))
    # every user on exactly one row of three or more fields: most likely `user item1 item2 ...`
    one_line_users = len(cols) > 2 and raw[u].n_unique() == raw.height
    return _kept(path, df, skips, raw.height, min_user_interactions, "pairs", one_line_users)


def _kept(path: Path, df: pl.DataFrame, skips: dict[str, int], rows_read: int, min_user_interactions: int,
          format: str, one_line_users: bool = False) -> LoadedInteractions:
    """The filters both layouts share: one interaction per user-item pair, users with enough interactions."""
    # a repeated user-item pair is one interaction (binary relevance); keep the latest, which is the one
    # a leave-last-out split should see
    before = df.height
    df = df.sort("subject_id", "item_id", "ts", nulls_last=False).unique(["subject_id", "item_id"], keep="last",
                                                                          maintain_order=True)
    if before - df.height:
        skips["duplicate user-item pairs (kept the latest)"] = before - df.height
    if min_user_interactions > 1:
        n = df.group_by("subject_id").agg(n=pl.len())
        few = n.filter(pl.col("n") < min_user_interactions)
        if few.height:
            key = ("single-interaction users" if min_user_interactions == 2
                   else f"users with fewer than {min_user_interactions} interactions")
            skips[key] = few.height
            df = df.join(few.select("subject_id"), on="subject_id", how="anti")
    if df.height == 0:
        hint = ""
        if one_line_users:
            hint = ("; every user is on one line only: if each line is a user followed by that user's items in "
                    "time order (`user item1 item2 ...`), pass --format sequences (data.format: sequences)")
        raise ContractError(f"{path}: no interactions left after filtering "
                            f"({', '.join(f'{k}: {v}' for k, v in skips.items())}){hint}")
    return LoadedInteractions(df, path, skips, rows_read, format)
