"""What every command shares: settings (read once), the store, consoles, the --as-of parser, progress."""

from __future__ import annotations

import json
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import sqlite_utils
import typer
from rich.console import Console
from rich.table import Table
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from data.errors import ConfigError, StateError
from data.registry import has_ingested_data
from data.settings import Settings, load_settings
from yiwang.migrations import open_db

console = Console()
# soft_wrap: an error naming a long file path must stay on one line, copy-pasteable.
err_console = Console(stderr=True, soft_wrap=True)


@dataclass
class AppContext:
    home: Path | None = None
    _settings: Settings | None = field(default=None, repr=False)
    _db: sqlite_utils.Database | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(home=self.home)
        return self._settings

    @property
    def db(self) -> sqlite_utils.Database:
        """The store, created in HOME if there is none yet (for commands that work on a new home)."""
        if self._db is None:
            home = self.settings.home
            _refuse_non_directory(home)
            try:
                self._db = open_db(self.settings.db_path)
            except (OSError, sqlite3.OperationalError) as exc:
                reason = getattr(exc, "strerror", None) or str(exc)
                raise ConfigError(f"store home {home} (--home or YIWANG_HOME): cannot create or open the store "
                                  f"there: {reason}") from None
        return self._db

    @property
    def ingested_db(self) -> sqlite_utils.Database:
        """The store, for commands that work on ingested data: a home holding none is refused (exit 5).

        A home that does not exist is not created here: a mistyped --home must not become a new, empty store.
        """
        home = self.settings.home
        _refuse_non_directory(home)
        empty = StateError(f"no data ingested in {home} yet: run `yiwang ingest DIR` first "
                           "(or check --home / YIWANG_HOME)")
        if self._db is None and not self.settings.db_path.is_file():
            raise empty
        db = self.db
        if not has_ingested_data(db.conn):
            raise empty
        return db


def _refuse_non_directory(home: Path) -> None:
    if home.exists() and not home.is_dir():
        raise ConfigError(f"store home {home} (--home or YIWANG_HOME) is not a directory")


def app_context(ctx: typer.Context) -> AppContext:
    return ctx.find_root().obj


def parse_as_of(value: str | None) -> date:
    """--as-of DATE (YYYY-MM-DD); default today in Asia/Shanghai."""
    if value is None:
        from datetime import datetime
        from zoneinfo import ZoneInfo

        return datetime.now(ZoneInfo("Asia/Shanghai")).date()
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"--as-of {value!r} is not a date (expected YYYY-MM-DD)") from None


AS_OF_HELP = "Run as if today were this date (YYYY-MM-DD, Asia/Shanghai); default today. Makes runs reproducible."


class StageProgress(Progress):
    """A rich progress display that is also the library's progress callable ``progress(stage, done, total)``.

    Library stages take either form (docs/architecture.md). Callable reports share one line that names the
    current stage, so a command shows where it is rather than a stack of half-finished bars.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._stage_task = None

    def __call__(self, stage: str, done: int, total: int | None) -> None:
        if self._stage_task is None:
            self._stage_task = self.add_task(stage, total=total)
        self.update(self._stage_task, description=stage, completed=done, total=total)


def progress() -> StageProgress:
    """The progress display for long work (on stderr, so --json output stays clean)."""
    return StageProgress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=False,
    )


@contextmanager
def stage_progress(title: str, quiet: bool = False):
    """The progress callable for one library stage, its reports prefixed by ``title``; None when quiet."""
    if quiet:
        yield None
        return
    with progress() as bar:
        yield lambda stage, done, total: bar(f"{title}: {stage}", done, total)


def print_summary(title: str, summary: dict, as_json: bool) -> None:
    """A stage summary as JSON, or as a two-column table with nested detail folded onto one line."""
    if as_json:
        console.print_json(json.dumps(summary, ensure_ascii=False, default=str))
        return
    table = Table(title=title, show_header=False)
    for key, value in summary.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in list(value.items())[:8]) or "-"
        table.add_row(str(key), str(value))
    console.print(table)
