"""CLI commands: evaluate (``yiwang eval``): offline evaluation of the implicit models and baselines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from yiwang.cli.context import app_context, console, err_console
from data.errors import ConfigFileError

EVAL_HELP = """Evaluate implicit models and baselines offline; writes results.md, results.csv and PNG plots.

Either a config file (`yiwang eval experiments/ml100k.yaml`) or an interaction file with flags
(`yiwang eval --interactions u.data --no-header --sep tab --protocol recbole-random --models ease,als,pop`).
A one-user-per-line file of items in time order (`user item1 item2 ...`, the S3Rec/ICLRec format) is read with
`--format sequences` (detected when its lines differ in length); leave-last-out then scores each user's last item
from everything before it. `--protocol temporal` holds out the last `--test-days` (valid: the `--valid-days`
before them), or by default the latest 10 % of interactions as test and the 10 % before as valid.
A config with `data: {source: events}` evaluates on the store's own event log (temporal split, the last
`test_days` as test, `groups: crowd` for a per-crowd breakdown). Models with several candidate settings
are tuned on the valid split's MRR@10."""


def register(app: typer.Typer) -> None:
    @app.command("eval", help=EVAL_HELP)
    def eval_cmd(
        ctx: typer.Context,
        config: Optional[Path] = typer.Argument(None, help="Eval config (YAML): data, protocol, models, metrics, out. With a config only --out, --seed and --json apply."),
        interactions: Optional[Path] = typer.Option(None, "--interactions", help="Interaction file (user, item[, time][, rating])."),
        protocol: str = typer.Option("recbole-random", "--protocol", help="recbole-random | leave-last-out | temporal."),
        file_format: Optional[str] = typer.Option(None, "--format", help="pairs (one interaction per row) | sequences (`user item1 item2 ...` per line, in time order). Default: detected."),
        sep: Optional[str] = typer.Option(None, "--sep", help="Delimiter: one character or tab/comma/semicolon/pipe/space (default: guessed)."),
        header: Optional[bool] = typer.Option(None, "--header/--no-header", help="Does the file's first line name the columns? (default: yes for pairs, no for sequences)", show_default=False),
        user_col: str = typer.Option("0", "--user-col", help="User column: name or 0-based index."),
        item_col: str = typer.Option("1", "--item-col", help="Item column: name or 0-based index."),
        time_col: Optional[str] = typer.Option(None, "--time-col", help="Timestamp column (Unix seconds or ISO); needed by leave-last-out and temporal (not with --format sequences: the line order is the time)."),
        rating_col: Optional[str] = typer.Option(None, "--rating-col", help="Rating column (optional)."),
        min_rating: Optional[float] = typer.Option(None, "--min-rating", help="Keep only interactions rated at least this."),
        models: str = typer.Option("ease,als,bpr,itemknn,pop", "--models", help="Comma-separated models: ease, als, bpr, itemknn, pop."),
        metrics: str = typer.Option("recall,ndcg,mrr,hit,precision,map,coverage", "--metrics", help="Comma-separated metrics."),
        k: int = typer.Option(10, "--k", help="Cut-off K of every metric."),
        test_days: Optional[int] = typer.Option(None, "--test-days", help="temporal protocol: the last N days are test (default: the latest 10 % of interactions)."),
        valid_days: Optional[int] = typer.Option(None, "--valid-days", help="temporal protocol: the N days before the test window are valid (default: as many as --test-days; without --test-days the 10 % of interactions before test)."),
        out: Optional[Path] = typer.Option(None, "--out", help="Output directory (default: the config's out, else ./out/eval)."),
        seed: Optional[int] = typer.Option(None, "--seed", help="Random seed of the split (default 2020)."),
        as_json: bool = typer.Option(False, "--json", help="Print the results table as JSON."),
    ) -> None:
        from recommender.evaluation import DEFAULT_GRIDS, load_eval_config, run_eval_config
        from recommender.interactions import FORMATS

        if (config is None) == (interactions is None):
            raise ConfigFileError("give either a CONFIG file or --interactions FILE (exactly one)")
        if config is not None:
            cfg = load_eval_config(config)
            if seed is not None:
                cfg["seed"] = seed
        else:
            names = [m.strip() for m in models.split(",") if m.strip()]
            unknown = [m for m in names if m not in DEFAULT_GRIDS]
            if unknown or not names:
                raise ConfigFileError(f"--models: unknown model(s) {', '.join(unknown) or '(none given)'}; "
                                      f"known: {', '.join(DEFAULT_GRIDS)}")
            if file_format is not None and file_format not in FORMATS:
                raise ConfigFileError(f"--format: expected one of {', '.join(FORMATS)}, got {file_format!r}")
            if valid_days is not None and test_days is None:
                raise ConfigFileError("--valid-days needs --test-days (without both, the latest 10 % of interactions "
                                      "are test and the 10 % before them valid)")
            cfg = {
                "_source": "--interactions",
                "title": f"Evaluation of {interactions.name} ({protocol})",
                "data": {"interactions": str(interactions.resolve()), "format": file_format, "sep": sep,
                         "header": header,
                         "user_col": user_col, "item_col": item_col, "time_col": time_col,
                         "rating_col": rating_col, "min_rating": min_rating},
                "protocol": protocol, "k": k, "metrics": metrics.split(","), "test_days": test_days,
                "valid_days": valid_days, "seed": 2020 if seed is None else seed,
                # BPR's multi-threaded SGD is not repeatable, so it runs on one thread; ALS uses every core
                "models": {m: dict(DEFAULT_GRIDS[m], **({"num_threads": 1} if m == "bpr" else {})) for m in names},
            }
        out_dir = out if out is not None else (None if cfg.get("out") else Path("out/eval"))
        needs_store = cfg["data"].get("source") == "events"
        actx = app_context(ctx)
        run = run_eval_config(cfg, out_dir=out_dir, progress=lambda msg: err_console.print(msg, highlight=False),
                              settings=actx.settings if needs_store else None, db=actx.db if needs_store else None)
        table = run.report.table()
        if as_json:
            console.print_json(json.dumps({"rows": table.to_dicts(), "notes": run.report.notes,
                                           "written": [str(p) for p in run.written]}))
            return
        cols = ["system", *run.report.metrics, "fit_s"]
        if not console.is_terminal:
            # piped or redirected: tab-separated full values, nothing cut to fit a width
            print("\t".join([*cols, "params"]))
            for row in table.iter_rows(named=True):
                print("\t".join("" if row[c] is None else str(row[c]) for c in [*cols, "params"]))
        else:
            from rich.table import Table

            t = Table(title=f"{run.report.protocol}, K={run.report.k}, {run.report.catalogue_size} items")
            for c in cols:
                # fold rather than cut: a narrow terminal wraps a value, never truncates it
                t.add_column(c, justify="left" if c == "system" else "right", overflow="fold")
            for row in table.iter_rows(named=True):
                t.add_row(*[f"{row[c]:.4f}" if isinstance(row[c], float) else str(row[c]) for c in cols])
            console.print(t)
            for row in table.iter_rows(named=True):
                if row["params"]:
                    console.print(f"{row['system']}: {row['params']}", highlight=False, soft_wrap=True)
        for n in run.report.notes:
            console.print(f"- {n}", highlight=False, markup=False, soft_wrap=True)
        for p in run.written:
            console.print(f"wrote {p}", highlight=False, soft_wrap=True)
