"""Reasons a citizen can read: 1-3 per recommended item, in zh and en, each traceable to its source.

Every reason is ``{"source", "zh", "en", "ref"}``: ``source`` is the candidate source behind it (licence, tag,
similar_item, history, similar_people, popular) and ``ref`` the fact it rests on (licence type and expiry, tag code,
item id, group). Reasons come in a fixed order of strength (a statutory licence expiry first, popularity last) and
are built as Polars expressions over the whole feed, never row by row.

A sensitive tag (hardship, disability) never shapes a reason: any key that reads feeds reads them, and a reason
only its holders receive would name them (see :func:`_without_sensitive`).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from data.reference import DISTRICT_NAMES_EN, LICENSE_TYPES_FILE, load_taxonomy, read_reference_table

SOURCES = ("licence", "tag", "similar_item", "history", "similar_people", "popular")


def _reference_rows(data_dir: Path, file_name: str) -> list[dict]:
    """A reference file's rows as text (empty cells as ""), none when the file is absent."""
    table = read_reference_table(data_dir, file_name)
    return [] if table is None else [{k: v or "" for k, v in r.items()} for r in table.iter_rows(named=True)]


def sensitive_codes(data_dir: Path) -> set[str]:
    """Tag codes the taxonomy marks sensitive (hardship, disability): never named in a reason."""
    return set(load_taxonomy(Path(data_dir)).filter(pl.col("sensitive"))["code"])


def reference_names(data_dir: Path) -> dict[str, dict[str, tuple[str, str]]]:
    """Display names of licence types and tag codes (code itself when absent), and the tags' reason phrases
    (``tag_reason``: the taxonomy's ``reason_zh`` / ``reason_en``, e.g. a life event read as something that
    happened to the citizen rather than a label put on them)."""
    data_dir = Path(data_dir)
    lic = {r["license_type"]: (r.get("name_zh") or r["license_type"], r.get("name_en") or r["license_type"])
           for r in _reference_rows(data_dir, LICENSE_TYPES_FILE)}
    taxonomy = load_taxonomy(data_dir)
    tags = {code: (zh or code, en or code) for code, zh, en in taxonomy.select("code", "name_zh", "name_en").iter_rows()}
    phrases = taxonomy.drop_nulls(["reason_zh", "reason_en"]).select("code", "reason_zh", "reason_en")
    return {"license": lic, "tag": tags, "tag_reason": {code: (zh, en) for code, zh, en in phrases.iter_rows()},
            "sensitive": set(taxonomy.filter(pl.col("sensitive"))["code"])}


def _lookup(col: str, table: dict[str, tuple[str, str]], lang: int) -> pl.Expr:
    if not table:
        return pl.col(col)
    return pl.col(col).replace_strict({k: v[lang] for k, v in table.items()}, default=pl.col(col),
                                      return_dtype=pl.String)


def _reason(cond: pl.Expr, source: str, zh: pl.Expr, en: pl.Expr, ref: pl.Expr) -> pl.Expr:
    """One reason as a JSON object string, or null when ``cond`` does not hold."""
    return pl.when(cond).then(
        pl.struct(pl.lit(source).alias("source"), zh.alias("zh"), en.alias("en"), ref.cast(pl.String).alias("ref"))
        .struct.json_encode()
    )


def reason_exprs(names: dict, as_of) -> list[pl.Expr]:
    """One optional reason struct per source, strongest first (see module docstring for the columns used)."""
    lic_zh, lic_en = _lookup("license_type", names["license"], 0), _lookup("license_type", names["license"], 1)
    exp = pl.col("license_expires_on").cast(pl.String)
    expired = pl.col("license_expires_on") < pl.lit(as_of)
    licence = _reason(
        pl.col("f_renew").fill_null(0) == 1, "licence",
        pl.when(expired).then(pl.concat_str([pl.lit("您的"), lic_zh, pl.lit("已于"), exp, pl.lit("到期")]))
        .otherwise(pl.concat_str([pl.lit("您的"), lic_zh, pl.lit("将于"), exp, pl.lit("到期")])),
        pl.when(expired).then(pl.concat_str([pl.lit("Your "), lic_en, pl.lit(" expired on "), exp]))
        .otherwise(pl.concat_str([pl.lit("Your "), lic_en, pl.lit(" expires on "), exp])),
        pl.concat_str([pl.col("license_type"), pl.lit("@"), exp]),
    )

    code = pl.col("tag_code")
    tag_names = names["tag"]
    # The taxonomy's phrase; a code it has none for reads as a group the subject is in.
    phrases = names.get("tag_reason", {})
    phrase_zh = code.replace_strict({k: v[0] for k, v in phrases.items()}, default=None, return_dtype=pl.String)
    phrase_en = code.replace_strict({k: v[1] for k, v in phrases.items()}, default=None, return_dtype=pl.String)
    industry = code.str.strip_prefix("industry:")
    tag_zh = (
        pl.when(phrase_zh.is_not_null()).then(phrase_zh)
        .when(code.str.starts_with("industry:")).then(pl.concat_str([pl.lit("与贵企业所属行业（"), industry, pl.lit("）相关")]))
        .otherwise(pl.concat_str([pl.lit("因为您属于「"), _lookup("tag_code", tag_names, 0), pl.lit("」")]))
    )
    tag_en = (
        pl.when(phrase_en.is_not_null()).then(phrase_en)
        .when(code.str.starts_with("industry:")).then(pl.concat_str([pl.lit("Relevant to your industry ("), industry, pl.lit(")")]))
        .otherwise(pl.concat_str([pl.lit("Because you are in the group '"), _lookup("tag_code", tag_names, 1), pl.lit("'")]))
    )
    tag = _reason(code.is_not_null(), "tag", tag_zh, tag_en, code)

    similar = _reason(
        pl.col("nbr_src_name").is_not_null(), "similar_item",
        pl.concat_str([pl.lit("因为您近期关注了「"), pl.col("nbr_src_name"), pl.lit("」")]),
        pl.concat_str([pl.lit("Because you recently looked at “"), pl.col("nbr_src_name"), pl.lit("”")]),
        pl.col("nbr_src_id"),
    )
    history = _reason(
        pl.col("src_hist").fill_null(0) == 1, "history",
        pl.lit("您近期浏览过此事项"), pl.lit("You looked at this service recently"), pl.col("item_id"),
    )
    people = _reason(
        pl.col("f_implicit_present"), "similar_people",
        pl.lit("与您情况相似的用户也办理了此事项"), pl.lit("People in a situation like yours used this service"),
        pl.lit("implicit"),
    )

    gtype = pl.col("pop_group").str.split_exact(":", 1).struct.field("field_0")
    gkey = pl.col("pop_group").str.split_exact(":", 1).struct.field("field_1")
    gkey_en_district = gkey.replace_strict(DISTRICT_NAMES_EN, default=gkey, return_dtype=pl.String)
    is_industry_band = gkey.str.starts_with("industry ")
    popular_zh = (
        pl.when(gtype == "district").then(pl.concat_str([pl.lit("在"), gkey, pl.lit("很受欢迎")]))
        .when((gtype == "band") & is_industry_band).then(pl.lit("在同行业、同规模的企业中很受欢迎"))
        .when(gtype == "band").then(pl.concat_str([pl.lit("在您的年龄段（"), gkey, pl.lit("岁）很受欢迎")]))
        .when(gtype == "crowd").then(
            pl.concat_str([pl.lit("在「"), gkey.replace_strict({k: v[0] for k, v in tag_names.items()}, default=gkey,
                                                                 return_dtype=pl.String), pl.lit("」中很受欢迎")]))
        .otherwise(pl.lit("全市热门事项"))
    )
    popular_en = (
        pl.when(gtype == "district").then(pl.concat_str([pl.lit("Popular in "), gkey_en_district]))
        .when((gtype == "band") & is_industry_band).then(pl.lit("Popular with enterprises of your industry and size"))
        .when(gtype == "band").then(pl.concat_str([pl.lit("Popular in your age group ("), gkey, pl.lit(")")]))
        .when(gtype == "crowd").then(
            pl.concat_str([pl.lit("Popular with '"), gkey.replace_strict({k: v[1] for k, v in tag_names.items()},
                                                                         default=gkey, return_dtype=pl.String),
                           pl.lit("'")]))
        .otherwise(pl.lit("Popular across the city"))
    )
    popular = _reason(pl.lit(True), "popular", popular_zh, popular_en, pl.col("pop_group").fill_null("global:"))
    return [licence, tag, similar, history, people, popular]


# The columns each reason of reason_exprs() reads, in the same order.
REASON_INPUTS = [
    ["f_renew", "license_type", "license_expires_on"],
    ["tag_code"],
    ["nbr_src_name", "nbr_src_id"],
    ["src_hist", "item_id"],
    ["f_implicit_present"],
    ["pop_group"],
]


def _without_sensitive(names: dict) -> list[pl.Expr]:
    """tag_code and pop_group with every sensitive tag taken out, as if the subject did not hold it.

    A reason of its own for a hardship or disability tag (even in neutral words, even under a neutral ref) would
    be one that only its holders receive, and so name them to anyone who can read feeds: a tag reason resting on
    such a tag is dropped, and popularity within such a crowd reads as city-wide popularity, the reason every
    subject gets when no group of theirs stands out.
    """
    sensitive = sorted(names.get("sensitive", set()))
    return [
        pl.when(pl.col("tag_code").is_in(sensitive)).then(None).otherwise(pl.col("tag_code")).alias("tag_code"),
        pl.when(pl.col("pop_group").is_in([f"crowd:{c}" for c in sensitive])).then(None)
        .otherwise(pl.col("pop_group")).alias("pop_group"),
    ]


def attach_reasons(feed: pl.DataFrame, items: pl.DataFrame, names: dict, as_of, max_reasons: int = 3) -> pl.DataFrame:
    """Add ``reasons_json`` (a JSON list of 1-``max_reasons`` reasons) to a feed frame (see :func:`reason_exprs`).

    ``items`` maps iidx -> item_id and name (for the similar-item reason and the history reference).
    """
    for col, dtype in (("f_renew", pl.Int8), ("license_type", pl.String), ("license_expires_on", pl.Date),
                       ("tag_code", pl.String), ("nbr_src", pl.UInt32), ("src_hist", pl.Int8),
                       ("f_implicit", pl.Float32), ("pop_group", pl.String)):
        if col not in feed.columns:
            feed = feed.with_columns(pl.lit(None, dtype=dtype).alias(col))
    src = items.select(pl.col("iidx").alias("nbr_src"), pl.col("item_id").alias("nbr_src_id"),
                       pl.col("name").alias("nbr_src_name"))
    f = feed.join(src, on="nbr_src", how="left", maintain_order="left")
    if "item_id" not in f.columns:
        f = f.join(items.select("iidx", "item_id"), on="iidx", how="left", maintain_order="left")
    f = f.with_columns(pl.col("f_implicit").is_not_null().alias("f_implicit_present"), *_without_sensitive(names))
    # Each reason depends on a few low-cardinality columns: build its JSON once per distinct input and join it
    # back, instead of formatting millions of identical strings.
    cols = []
    for i, (expr, inputs) in enumerate(zip(reason_exprs(names, as_of), REASON_INPUTS)):
        distinct = f.select(inputs).unique().with_columns(expr.alias(f"r{i}"))
        f = f.join(distinct, on=inputs, how="left", nulls_equal=True, maintain_order="left")
        cols.append(f"r{i}")
    # Keep a reason while fewer than max_reasons stronger ones are present.
    present = [pl.col(c).is_not_null().cast(pl.Int32) for c in cols]
    kept = [pl.when(pl.sum_horizontal(present[: i + 1]) <= max_reasons).then(pl.col(c)) for i, c in enumerate(cols)]
    json_list = f.select(
        pl.concat_str([pl.lit("["), pl.concat_str(kept, separator=",", ignore_nulls=True), pl.lit("]")]).alias("j")
    ).to_series()
    return feed.with_columns(json_list.alias("reasons_json"))
