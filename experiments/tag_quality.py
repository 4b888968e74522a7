"""Tag quality against the synthetic city's ground truth (DIR/truth, which the pipeline never reads).

    .venv/bin/python experiments/tag_quality.py --city DIR --as-of 2026-01-20 [--home HOME] [--no-run]

Runs ingest (into an empty HOME), profile and tag at --as-of (the synth's as-of), then measures:

- life events: a truth event counts as live when it happened within the tag's validity (taxonomy
  default_validity_days) before as-of, which is exactly when a correct tag is still in force;
  registry-backed events (targets P >= 0.98, R >= 0.95) and behaviour-only ones are reported apart;
- crowds (same targets) and enterprise traits;
- occupation: macro-F1 over the eight occupations on persons the registry has no occupation for, for the
  learned tagger, a majority-class baseline and a rules-only baseline (licences, then the most used
  occupation-linked items, then the majority class).

Prints a table and writes experiments/out/tag_quality.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import date
from pathlib import Path

import polars as pl

REPO = Path(__file__).resolve().parent.parent
REGISTRY_BACKED = ("birth", "second_child", "marriage", "school_entry", "retirement")
BEHAVIOUR_ONLY = ("job_seeking", "home_purchase", "graduation", "bereavement")
TARGET_P, TARGET_R = 0.98, 0.95
OCCUPATIONS = (
    "student", "teacher", "security_guard", "medical_worker", "driver", "it_professional", "self_employed", "office_worker",
)
LICENCE_OCCUPATION = {
    "teacher_qualification": "teacher",
    "security_guard_certificate": "security_guard",
    "physician_licence": "medical_worker",
    "nurse_licence": "medical_worker",
    "ride_hailing_driver_permit": "driver",
    "road_transport_qualification": "driver",
}


def prf(pred: set, truth: set) -> dict:
    tp = len(pred & truth)
    p = tp / len(pred) if pred else (1.0 if not truth else 0.0)
    r = tp / len(truth) if truth else (1.0 if not pred else 0.0)
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(f, 4), "support": len(truth), "predicted": len(pred)}


def macro_f1(pred: pl.Series, truth: pl.Series) -> float:
    """Macro-F1 over the eight occupations. No prediction ("no tag") is wrong for a person who has an
    occupation; any prediction is wrong for a person who has none (children, retirees, the unemployed)."""
    pred, truth = pred.fill_null("none"), truth.fill_null("none")
    scores = []
    for c in OCCUPATIONS:
        tp = int(((pred == c) & (truth == c)).sum())
        fp = int(((pred == c) & (truth != c)).sum())
        fn = int(((pred != c) & (truth == c)).sum())
        if tp + fp + fn == 0:
            continue
        scores.append(2 * tp / (2 * tp + fp + fn))
    return round(sum(scores) / len(scores), 4) if scores else 0.0


def run_pipeline(settings, city: Path, as_of: date) -> dict:
    import profiler
    import taggers
    from data.ingest import ingest_export
    from data.registry import count_records
    from yiwang.migrations import open_db

    db = open_db(settings.db_path)
    timings = {}
    if count_records(db.conn, "people") == 0:
        t = time.perf_counter()
        ingest_export(settings, db, city / "export")
        timings["ingest_s"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    profiler.build_profiles(settings, db, as_of)
    timings["profile_s"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    summary = taggers.run_taggers(settings, db, as_of)
    timings["tag_s"] = round(time.perf_counter() - t, 2)
    timings["occupation_model"] = summary.occupation_model
    db.conn.close()
    return timings


def evaluate(settings, city: Path, as_of: date) -> dict:
    import taggers
    from data.eventlog import scan_events
    from data.reference import load_taxonomy
    from data.registry import scan_table

    truth_dir = city / "truth"
    tags = taggers.scan_tags(settings).collect()
    taxonomy = load_taxonomy(settings.data_dir)
    validity = dict(zip(taxonomy["code"], taxonomy["default_validity_days"]))

    def tagged(code: str) -> set:
        return set(tags.filter(pl.col("code") == code)["subject_id"])

    life = pl.read_csv(truth_dir / "life_events.csv", try_parse_dates=True)
    out: dict = {"as_of": as_of.isoformat(), "life_events": {}, "crowds": {}, "enterprise": {}}
    for short in REGISTRY_BACKED + BEHAVIOUR_ONLY:
        code = f"life_event.{short}"
        days = validity[code]
        live = life.filter(
            (pl.col("code") == code) & ((pl.lit(as_of) - pl.col("date")).dt.total_days().is_between(0, days))
        )
        row = prf(tagged(code), set(live["subject_id"]))
        row["kind"] = "registry" if short in REGISTRY_BACKED else "behaviour"
        row["meets_target"] = row["precision"] >= TARGET_P and row["recall"] >= TARGET_R if short in REGISTRY_BACKED else None
        out["life_events"][code] = row

    crowds = pl.read_csv(truth_dir / "crowds.csv")
    for code in sorted(set(crowds["code"])):
        row = prf(tagged(code), set(crowds.filter(pl.col("code") == code)["subject_id"]))
        row["meets_target"] = row["precision"] >= TARGET_P and row["recall"] >= TARGET_R
        out["crowds"][code] = row

    traits = pl.read_csv(truth_dir / "enterprise_traits.csv")
    groups = {
        "enterprise.industry_*": lambda c: c.startswith("enterprise.industry_"),
        "enterprise.size_*": lambda c: c.startswith("enterprise.size_"),
    }
    for code in ("enterprise.new_business", "enterprise.high_tech_candidate", "enterprise.food_catering", "enterprise.annual_report_due"):
        out["enterprise"][code] = prf(tagged(code), set(traits.filter(pl.col("code") == code)["enterprise_id"]))
    for name, match in groups.items():
        t = {(r["enterprise_id"], r["code"]) for r in traits.iter_rows(named=True) if match(r["code"])}
        p = {(r["subject_id"], r["code"]) for r in tags.select("subject_id", "code").iter_rows(named=True) if match(r["code"])}
        out["enterprise"][name] = prf(p, t)

    # -- occupation ------------------------------------------------------------------------------------
    people = scan_table(settings.home, "people").select("person_id", "occupation", "birth_date").collect()
    truth_occ = pl.read_csv(truth_dir / "occupations.csv").rename({"occupation": "truth"})
    unknown = people.filter(pl.col("occupation").is_null()).join(truth_occ, on="person_id", how="left")
    labelled = people.filter(pl.col("occupation").is_not_null())
    majority = labelled["occupation"].mode().sort()[0]
    model_tags = (
        tags.filter(pl.col("source").str.starts_with("model:"))
        .select(pl.col("subject_id").alias("person_id"), pl.col("code").str.strip_prefix("occupation.").alias("model"))
    )
    lic = (
        scan_table(settings.home, "licenses")
        .filter(pl.col("license_type").is_in(list(LICENCE_OCCUPATION)) & (pl.col("issued_on") <= pl.lit(as_of)))
        .select(pl.col("holder_id").alias("person_id"), pl.col("license_type").replace_strict(LICENCE_OCCUPATION).alias("by_licence"))
        .unique("person_id", keep="first")
        .collect()
    )
    catalog = scan_table(settings.home, "catalog").select("item_id", "occupations")
    usage = (
        scan_events(settings.events_dir)
        .join(catalog, on="item_id")
        .filter(pl.col("occupations").is_not_null())
        .with_columns(pl.col("occupations").str.split("|"))
        .explode("occupations")
        .group_by("subject_id", "occupations")
        .len()
        .filter(pl.col("len") >= 2)
        .sort(["subject_id", "len", "occupations"], descending=[False, True, False])
        .unique("subject_id", keep="first", maintain_order=True)
        .select(pl.col("subject_id").alias("person_id"), pl.col("occupations").str.strip_prefix("occupation.").alias("by_usage"))
        .collect()
    )
    ev = (
        unknown.join(model_tags, on="person_id", how="left")
        .join(lic, on="person_id", how="left")
        .join(usage, on="person_id", how="left")
        .with_columns(
            pl.lit(majority).alias("majority"),
            pl.coalesce("by_licence", "by_usage").alias("rules_only"),
        )
    )
    has_job = ev.filter(pl.col("truth").is_not_null())
    no_job = ev.filter(pl.col("truth").is_null())
    out["occupation"] = {
        "evaluated": ev.height,
        "with_occupation": has_job.height,
        "majority_class": majority,
        "macro_f1": {
            "learned": macro_f1(ev["model"], ev["truth"]),
            "majority_baseline": macro_f1(ev["majority"], ev["truth"]),
            "rules_only_baseline": macro_f1(ev["rules_only"], ev["truth"]),
        },
        "macro_f1_with_occupation_only": {
            "learned": macro_f1(has_job["model"], has_job["truth"]),
            "majority_baseline": macro_f1(has_job["majority"], has_job["truth"]),
            "rules_only_baseline": macro_f1(has_job["rules_only"], has_job["truth"]),
        },
        "learned_coverage": round(has_job["model"].is_not_null().mean(), 4) if has_job.height else 0.0,
        "learned_precision_when_tagged": round(
            (has_job.filter(pl.col("model").is_not_null())["model"] == has_job.filter(pl.col("model").is_not_null())["truth"]).mean() or 0.0, 4
        ),
        "tagged_without_occupation": no_job["model"].is_not_null().sum(),
        "persons_without_occupation": no_job.height,
        "min_confidence": settings.occupation_min_confidence,
    }
    f1 = out["occupation"]["macro_f1"]
    out["occupation"]["beats_both_baselines"] = f1["learned"] > max(f1["majority_baseline"], f1["rules_only_baseline"])
    return out


def render(result: dict) -> str:
    lines = [f"# Tag quality (as of {result['as_of']}, {result.get('city', '')})", ""]
    lines += ["| tag | kind | precision | recall | F1 | support | tagged | target |", "|---|---|---|---|---|---|---|---|"]
    for section, kind in (("life_events", None), ("crowds", "registry"), ("enterprise", "registry")):
        for code, r in result[section].items():
            k = r.get("kind", kind) or "registry"
            target = {True: "met", False: "MISSED", None: "-"}[r.get("meets_target")]
            lines.append(
                f"| {code} | {k} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | {r['support']} | {r['predicted']} | {target} |"
            )
    occ = result["occupation"]
    f1, f1o = occ["macro_f1"], occ["macro_f1_with_occupation_only"]
    lines += [
        "",
        f"Occupation: persons the registry has no occupation for ({occ['evaluated']}; {occ['with_occupation']} of them have one). "
        "Macro-F1 over the eight occupations; a tag on someone without an occupation is a false positive.",
        "",
        "| tagger | macro-F1 (all) | macro-F1 (those with an occupation) |",
        "|---|---|---|",
        f"| learned (LightGBM, calibrated, confidence >= {occ['min_confidence']}) | {f1['learned']:.3f} | {f1o['learned']:.3f} |",
        f"| rules-only baseline (licence, else most-used occupation items, 2+ events) | {f1['rules_only_baseline']:.3f} | {f1o['rules_only_baseline']:.3f} |",
        f"| majority-class baseline ({occ['majority_class']}) | {f1['majority_baseline']:.3f} | {f1o['majority_baseline']:.3f} |",
        "",
        f"Learned tagger: coverage {occ['learned_coverage']:.3f}, precision when it tags {occ['learned_precision_when_tagged']:.3f}, "
        f"tags on persons with no occupation {occ['tagged_without_occupation']} of {occ['persons_without_occupation']}.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--city", type=Path, required=True, help="output of `yiwang synth` (export/ and truth/)")
    ap.add_argument("--as-of", required=True, help="the as-of date the city was generated with")
    ap.add_argument("--home", type=Path, help="store to use (default CITY/home)")
    ap.add_argument("--no-run", action="store_true", help="evaluate the tags already in HOME")
    ap.add_argument("--out", type=Path, default=REPO / "experiments" / "out")
    args = ap.parse_args(argv)

    sys.path.insert(0, str(REPO))
    from data.settings import load_settings

    as_of = date.fromisoformat(args.as_of)
    settings = load_settings(home=args.home or args.city / "home")
    timings = {} if args.no_run else run_pipeline(settings, args.city, as_of)
    result = evaluate(settings, args.city, as_of)
    result["city"] = str(args.city)
    result["timings"] = timings
    text = render(result)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tag_quality.json").write_text(json.dumps(result, indent=2, ensure_ascii=False, default=str))
    (args.out / "tag_quality.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
