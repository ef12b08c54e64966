"""The ``embedforge`` command: subcommands, defaults from the config, config overlay, extras."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from embedforge import cli
from embedforge.cli import common
from tests.conftest import ROOT


def test_usage_lists_every_stage(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ["train", "ingest", "generate", "mine", "evaluate", "export", "serve",
                 "compare", "reproduce", "resume", "judge"]:  # fmt: skip
        assert f"\n  {name} " in out


def test_unknown_command_is_one_line_error(capsys):
    assert cli.main(["trian"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown command 'trian'") and err.count("\n") == 1


@pytest.mark.parametrize(
    "name",
    ["ingest", "mine", "evaluate", "export", "serve", "compare", "reproduce", "resume", "judge"],
)
def test_every_argparse_stage_has_help(name, capsys):
    with pytest.raises(SystemExit) as e:
        cli.run_command(name, ["--help"])
    assert e.value.code == 0
    assert f"usage: embedforge {name}" in capsys.readouterr().out


def test_checkout_uses_the_top_level_conf():
    assert common.config_dir() == ROOT / "conf"


def test_option_defaults_are_composed_from_the_config(tmp_path, monkeypatch, capsys):
    conf = shutil.copytree(ROOT / "conf", tmp_path / "conf")
    folder = (conf / "data" / "folder.yaml").read_text()
    (conf / "data" / "folder.yaml").write_text(
        folder.replace("chunk_tokens: 384", "chunk_tokens: 123")
    )
    train = (conf / "train.yaml").read_text()
    (conf / "train.yaml").write_text(train.replace("min_gain: 0.01", "min_gain: 0.25"))
    monkeypatch.setattr(common, "config_dir", lambda: conf)
    for name, needle in [("ingest", "per chunk (default: 123)"), ("export", "(default: 0.25)")]:
        with pytest.raises(SystemExit):
            cli.run_command(name, ["--help"])
        assert needle in " ".join(capsys.readouterr().out.split())


def test_missing_extra_is_one_line(monkeypatch, capsys):
    monkeypatch.setattr(common, "_installed", lambda module: module not in {"fastapi", "uvicorn"})
    assert cli.main(["serve", "some/model"]) == 2
    assert (
        capsys.readouterr().err
        == "error: embedforge serve needs: pip install 'embedforge[serve]'\n"
    )


@pytest.mark.parametrize(
    "override, module, extra",
    [
        ("generator=anthropic", "anthropic", "llm"),
        ("generator=openai", "openai", "llm"),
        ("logger=wandb", "wandb", "wandb"),
    ],
)
def test_missing_extra_of_a_composed_config(compose, monkeypatch, override, module, extra):
    monkeypatch.setattr(common, "_installed", lambda m: m != module)
    common.require_for_config("train", compose("model=tiny"))  # the default needs nothing missing
    cfg = compose("model=tiny", override)
    with pytest.raises(common.EmbedforgeError) as e:
        common.require_for_config("train", cfg)
    key = {"llm": "generator._target_", "wandb": "logger._target_"}[extra]
    target = OmegaConf.select(cfg, key)
    assert (
        str(e.value)
        == f"embedforge train needs: pip install 'embedforge[{extra}]' ({key}={target})"
    )


def test_hydra_args_quiet_and_local_overlay(tmp_path, monkeypatch):
    packaged = str(ROOT / "conf")
    monkeypatch.chdir(tmp_path)
    assert common.hydra_args(["model=tiny", "--quiet"]) == (
        ROOT / "conf",
        ["model=tiny", "progress=false"],
    )
    (tmp_path / "conf").mkdir()
    (tmp_path / "other").mkdir()
    overlaid = (tmp_path / "conf", ["--config-dir", packaged, "-m", "x=1"])
    assert common.hydra_args(["-m", "x=1"]) == overlaid
    assert common.hydra_args(["-m", "--config-dir", "other", "x=1"])[0] == tmp_path / "other"
    with pytest.raises(common.EmbedforgeError, match="config folder not found"):
        common.hydra_args(["--config-dir=nowhere"])
    monkeypatch.chdir(ROOT)  # a checkout's conf/ is the packaged one: no overlay
    assert common.hydra_args(["x=1"]) == (ROOT / "conf", ["x=1"])


def test_a_conf_folder_in_the_working_directory_overlays_the_packaged_one(tmp_path):
    """`embedforge train --cfg job` composes without running: a new group option and a replaced one."""
    (tmp_path / "conf" / "model").mkdir(parents=True)
    (tmp_path / "conf" / "loss").mkdir()
    tiny = (ROOT / "conf" / "model" / "tiny.yaml").read_text()
    (tmp_path / "conf" / "model" / "mine.yaml").write_text(
        tiny.replace("hidden_size: 32", "hidden_size: 48")
    )
    mnrl = (ROOT / "conf" / "loss" / "mnrl.yaml").read_text()
    assert "scale: 20.0" in mnrl
    (tmp_path / "conf" / "loss" / "mnrl.yaml").write_text(mnrl.replace("scale: 20.0", "scale: 7.0"))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    r = subprocess.run(
        [sys.executable, "-m", "embedforge", "train", "--cfg", "job", "model=mine"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert "hidden_size: 48" in r.stdout and "scale: 7.0" in r.stdout
    assert "name: icd10" in r.stdout  # everything else from the packaged config
