"""The CLI's edge: usage errors and library errors become messages and documented exit codes, never tracebacks."""

import subprocess
import sys

CLI = [sys.executable, "-c", "from yiwang.cli import main; main()"]


def run(*args, home):
    return subprocess.run([*CLI, "--home", str(home), *args], capture_output=True, text=True, timeout=120)


def test_missing_argument_is_a_usage_error(tmp_path):
    proc = run("feed", home=tmp_path)
    assert proc.returncode == 2
    assert "Missing argument" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_library_error_names_the_path_on_one_line(tmp_path):
    missing = tmp_path / ("a-rather-long-directory-name-" * 4) / "export"
    proc = run("ingest", str(missing), home=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert str(missing) in proc.stderr.replace("\n", "") and str(missing) in proc.stderr
