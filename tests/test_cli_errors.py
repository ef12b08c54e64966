"""A mistyped command line is one ``error:`` line, exit code 2, before torch or a model loads.

The rows of issue 26's table, each run through the real ``embedforge`` command in a subprocess;
the command-line check itself is asserted torch-free (a subprocess that runs it and then looks at
``sys.modules``), which is what makes these errors arrive in seconds.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1"}

ROWS = [
    (["optim.lr=abc"], "error: optim.lr: expected a number, got 'abc'"),
    (["data.batch_size=big"], "error: data.batch_size: expected a number, got 'big'"),
    (
        ["data=folder", "data.path=/does/not/exist"],
        "error: data.path: no such file or folder: /does/not/exist",
    ),
    (["data=folder"], "error: data.path is required: add data.path=/path/to/your/data"),
    (
        ["trainer.max_step=3"],
        "error: unknown key trainer.max_step (did you mean trainer.max_steps?)",
    ),
    (
        ["loss=nonexistent"],
        "error: loss=nonexistent: no such option; loss options: cosent, cosine, matryoshka,"
        " mnrl, mnrl_symmetric, triplet",
    ),
]


def embedforge(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "embedforge", *args],
        cwd=cwd, env=ENV, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.mark.parametrize("args, line", ROWS, ids=[" ".join(a) for a, _ in ROWS])
def test_train_command_line_errors_are_one_line_exit_2(args, line, tmp_path):
    r = embedforge("train", *args, cwd=tmp_path)
    assert (r.returncode, r.stderr) == (2, line + "\n")
    assert not (tmp_path / "outputs").exists()  # failed before Hydra made a run directory


@pytest.mark.parametrize("args, line", ROWS, ids=[" ".join(a) for a, _ in ROWS])
def test_the_check_raises_before_torch_is_imported(args, line):
    code = (
        "import sys\n"
        "from embedforge.cli.common import check_command_line\n"
        "from embedforge.errors import EmbedforgeError\n"
        f"try:\n    check_command_line({args!r})\n"
        "except EmbedforgeError as e:\n    print('error:', e)\n"
        "print('torch' in sys.modules)\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=120
    )
    assert r.stdout.splitlines() == [line, "False"], r.stderr[-2000:]


@pytest.mark.parametrize("command", ["export", "compare", "evaluate", "mine", "ingest"])
def test_help_imports_no_torch(command):
    code = (
        "import sys\n"
        "from embedforge.cli import main\n"
        f"try:\n    main([{command!r}, '--help'])\n"
        "except SystemExit:\n    pass\n"
        "print('torch' in sys.modules)\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0 and r.stdout.splitlines()[-1] == "False", r.stderr[-2000:]


def test_a_valid_command_line_composes(compose):
    from embedforge.cli.common import check_command_line

    cfg = check_command_line(["model=tiny", "optim.lr=3e-5", "trainer.devices=auto"])
    assert cfg.optim.lr == 3e-5 and cfg.model.hidden_size == compose("model=tiny").model.hidden_size
    assert check_command_line(["-m", "optim.lr=abc,1e-4"]) is None  # sweeps: each job validates


def test_errors_with_your_own_conf_folder_overlaid(tmp_path):
    """A ``conf/`` in the working directory is composed as Hydra does: first, then the packaged one."""
    (tmp_path / "conf" / "model").mkdir(parents=True)
    tiny = (ROOT / "conf" / "model" / "tiny.yaml").read_text()
    (tmp_path / "conf" / "model" / "mine.yaml").write_text(tiny)
    r = embedforge("train", "model=mine", "optim.lr=abc", cwd=tmp_path)
    assert (r.returncode, r.stderr) == (2, "error: optim.lr: expected a number, got 'abc'\n")
    r = embedforge("train", "model=nope", cwd=tmp_path)
    assert r.returncode == 2 and "model options: bge," in r.stderr and ", mine, " in r.stderr
