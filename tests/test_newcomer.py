"""A newcomer's first hour, scripted: the README's set-up in a fresh copy of the checkout, then the
error table of issue 26 through the installed ``embedforge`` (each one line, exit 2).

Slow (``make venv`` installs ``[all,dev]`` into a fresh ``.venv``: minutes); ``.ci/run`` runs it
after ``make demo`` and ``make test``, which cover the demo and the suite.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.test_cli_errors import ROWS

pytestmark = pytest.mark.slow


def _run(args: list, cwd: Path, env: dict, timeout: int = 1800) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> tuple[Path, dict]:
    """The tracked files (and new, not ignored ones) copied to a fresh directory, set up by make."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    fresh = tmp_path_factory.mktemp("newcomer") / "embedforge"
    for name in files:
        if (ROOT / name).is_file():
            (fresh / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, fresh / name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["EMBEDFORGE_CACHE"] = str(fresh.parent / "cache")
    made = _run(["make", "venv"], fresh, env)
    assert made.returncode == 0, made.stdout[-2000:] + made.stderr[-3000:]
    return fresh, env


def test_readme_quickstart_is_the_two_make_commands():
    quickstart = ROOT.joinpath("README.md").read_text().split("## Quickstart", 1)[1]
    quickstart = quickstart.split("\n## ", 1)[0]
    assert "make demo" in quickstart and "make test" in quickstart
    ci = ROOT.joinpath(".ci", "run").read_text()
    assert "\nmake demo" in ci and "\nmake test" in ci


def test_setup_is_idempotent_and_rebuilds_when_the_pins_change(checkout):
    fresh, env = checkout
    assert _run(["make", "-q", "venv"], fresh, env).returncode == 0  # nothing to do twice
    os.utime(fresh / "constraints.txt")  # newer pins -> the stamp is stale
    assert _run(["make", "-q", "venv"], fresh, env).returncode == 1


@pytest.mark.parametrize("args, line", ROWS, ids=[" ".join(a) for a, _ in ROWS])
def test_error_table_from_the_installed_command(checkout, args, line):
    fresh, env = checkout
    r = _run([fresh / ".venv" / "bin" / "embedforge", "train", *args], fresh, env, timeout=300)
    assert (r.returncode, r.stderr) == (2, line + "\n")


@pytest.mark.parametrize("command", ["export", "compare"])
def test_help_from_the_installed_command(checkout, command):
    fresh, env = checkout
    r = _run([fresh / ".venv" / "bin" / "embedforge", command, "--help"], fresh, env, timeout=300)
    assert r.returncode == 0 and f"usage: embedforge {command}" in r.stdout
