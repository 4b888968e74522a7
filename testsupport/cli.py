"""The `yiwang` entry point run in-process, exit code and output included: quicker than a process per call."""

from __future__ import annotations

import sys


def run_in_process(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Run ``yiwang ARGS`` in this process; returns (exit code, stdout, stderr)."""
    from yiwang.cli import main

    monkeypatch.setattr(sys, "argv", ["yiwang", *args])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    out, err = capsys.readouterr()
    return code, out, err
