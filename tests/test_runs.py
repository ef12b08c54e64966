"""Run registry: finding runs, config diffs, sorting, metric diffs, failures, sweep summary, CLI."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from embedforge.errors import EmbedforgeError
from embedforge.runs import (
    diff_metrics,
    differing_keys,
    find_runs,
    flatten,
    load_summary,
    record_failure,
    sort_runs,
    varying_overrides,
    write_sweep_summary,
)
from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))


def make_run(
    path: Path,
    lr: float,
    loss: str,
    ndcg: float | None,
    overrides: list[str] | None = None,
    seconds: float = 10.0,
) -> Path:
    """A run dir as train.py writes it (config, overrides, metrics.json unless ``ndcg`` is None)."""
    cfg = {
        "seed": 42,
        "monitor": "val/ndcg@10",
        "monitor_mode": "max",
        "resume": False,
        "paths": {"output_dir": "${hydra:runtime.output_dir}"},
        "optim": {"_target_": "torch.optim.AdamW", "lr": lr, "weight_decay": 0.01},
        "loss": {"_target_": f"embedforge.losses.{loss}", "scale": 20.0}
        if loss != "TripletLoss"
        else {"_target_": "embedforge.losses.TripletLoss", "margin": 0.1},
    }
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(cfg)))
    (path / ".hydra" / "overrides.yaml").write_text(
        OmegaConf.to_yaml(OmegaConf.create(overrides or [f"optim.lr={lr}"]))
    )
    if ndcg is not None:
        metrics = {
            "monitor": "val/ndcg@10",
            "monitor_value": ndcg / 2,
            "selected": "last",
            "baseline": {"ndcg@10": 0.5},
            "finetuned": {"ndcg@10": ndcg},
            "delta": {"ndcg@10": round(ndcg - 0.5, 6)},
            "val": {"base": 0.2, "best": ndcg / 2, "last": ndcg / 2},
            "n_train_pairs": 100,
            "n_queries": 10,
            "n_docs": 50,
            "seconds": {"train": seconds - 1, "total": seconds},
            "provenance": {"seed": 42, "pairs_sha": "abc", "git_sha": "x"},
        }
        (path / "metrics.json").write_text(json.dumps(metrics))
    return path


@pytest.fixture()
def sweep(tmp_path) -> Path:
    root = tmp_path / "multirun" / "2026-01-01_00-00-00"
    make_run(
        root / "0",
        1e-5,
        "MultipleNegativesRankingLoss",
        0.55,
        ["data=x", "loss=mnrl", "optim.lr=1e-05"],
    )
    make_run(
        root / "1",
        1e-4,
        "MultipleNegativesRankingLoss",
        0.60,
        ["data=x", "loss=mnrl", "optim.lr=0.0001"],
    )
    make_run(root / "2", 1e-5, "TripletLoss", 0.52, ["data=x", "loss=triplet", "optim.lr=1e-05"])
    make_run(root / "10", 1e-4, "TripletLoss", None, ["data=x", "loss=triplet", "optim.lr=0.0001"])
    try:
        raise ValueError("boom\nsecond line")
    except ValueError as e:
        record_failure(root / "10", e, ["loss=triplet"])
    return root


def test_find_runs_from_multirun_dirs_globs_and_run_dirs(sweep, tmp_path):
    assert [p.name for p in find_runs([sweep])] == ["0", "1", "2", "10"]  # natural order
    assert [p.name for p in find_runs([str(sweep / "[01]")])] == ["0", "1"]
    assert [p.name for p in find_runs([sweep / "2", sweep / "2"])] == ["2"]  # unique
    with pytest.raises(EmbedforgeError, match="no such run directory"):
        find_runs([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(EmbedforgeError, match="no run directories"):
        find_runs([tmp_path / "empty"])


def test_summaries_statuses_and_failure_record(sweep):
    runs = [load_summary(p) for p in find_runs([sweep])]
    assert [r.status for r in runs] == ["ok", "ok", "ok", "failed"]
    failed = json.loads((sweep / "10" / "failed.json").read_text())
    assert failed["error"] == "ValueError: boom" and "Traceback" in failed["traceback"]
    assert runs[3].error == "ValueError: boom" and math.isnan(runs[3].monitor_value)
    (sweep / "10" / "failed.json").unlink()
    assert load_summary(sweep / "10").status == "incomplete"
    with pytest.raises(EmbedforgeError, match="not a run directory"):
        load_summary(sweep)


def test_differing_keys_collapse_swapped_groups_and_ignore_volatile(sweep):
    runs = [load_summary(p) for p in find_runs([sweep])]
    assert differing_keys(runs) == ["loss._target_", "optim.lr"]  # not loss.scale / loss.margin
    assert differing_keys(runs[:2]) == ["optim.lr"]
    assert differing_keys(runs[:1]) == []
    assert flatten(OmegaConf.create({"a": {"b": 1, "c": [1, 2]}, "d": {}})) == {
        "a.b": 1,
        "a.c": [1, 2],
        "d": {},
    }
    assert varying_overrides(runs[:3]) == [
        ["loss=mnrl", "optim.lr=1e-05"],
        ["loss=mnrl", "optim.lr=0.0001"],
        ["loss=triplet", "optim.lr=1e-05"],
    ]


def test_sort_best_first_failed_last(sweep):
    runs = [load_summary(p) for p in find_runs([sweep])]
    assert [r.path.name for r in sort_runs(runs)] == ["1", "0", "2", "10"]
    assert [r.path.name for r in sort_runs(runs, descending=False)] == ["2", "0", "1", "10"]


def test_diff_metrics_tolerance_and_fields():
    old = {
        "baseline": {"ndcg@10": 0.5},
        "finetuned": {"ndcg@10": 0.6},
        "selected": "last",
        "seconds": {"total": 1},
        "provenance": {"pairs_sha": "a", "git_sha": "x"},
    }
    same = json.loads(json.dumps(old)) | {
        "seconds": {"total": 99},
        "provenance": {"pairs_sha": "a", "git_sha": "y"},
    }
    assert diff_metrics(old, same) == []  # wall time and git are not results
    close = json.loads(json.dumps(old))
    close["finetuned"]["ndcg@10"] += 5e-7
    assert diff_metrics(old, close, 1e-6) == [] and len(diff_metrics(old, close, 1e-8)) == 1
    other = json.loads(json.dumps(old)) | {"selected": "base", "provenance": {"pairs_sha": "b"}}
    other["finetuned"]["ndcg@10"] = 0.7
    out = diff_metrics(old, other)
    assert [line.split(":")[0] for line in out] == [
        "finetuned.ndcg@10",
        "selected",
        "provenance.pairs_sha",
    ]


def test_sweep_summary_lists_every_job(sweep):
    path = write_sweep_summary(sweep)
    text = path.read_text()
    assert "4 jobs: 3 ok, 1 failed" in text and "ValueError: boom" in text
    data = json.loads((sweep / "sweep_summary.json").read_text())
    assert [j["overrides"] for j in data["jobs"]] == [
        "loss=mnrl optim.lr=0.0001",
        "loss=mnrl optim.lr=1e-05",
        "loss=triplet optim.lr=1e-05",
        "loss=triplet optim.lr=0.0001",
    ]
    assert write_sweep_summary(sweep / "nothing-here") is None


def test_compare_runs_cli_table_json_csv_plot(sweep, tmp_path, capsys):
    import compare_runs

    assert compare_runs.main([str(sweep)]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ")][1:]
    assert [r.split("|")[1].strip() for r in rows] == ["1", "0", "2", "10"]
    assert (
        "| 1 | ok | 0.3000 | 0.5000 | 0.6000 | 0.1000 | 10.0 | MultipleNegativesRankingLoss | 0.0001 |"
        in out
    )
    assert "differing keys: loss._target_, optim.lr" in out
    assert (
        compare_runs.main(
            [str(sweep), "--csv", str(tmp_path / "t.csv"), "--json", str(tmp_path / "t.json")]
        )
        == 0
    )
    assert (
        (tmp_path / "t.csv")
        .read_text()
        .splitlines()[0]
        .startswith("run,status,val/ndcg@10,baseline ndcg@10")
    )
    assert len(json.loads((tmp_path / "t.json").read_text())["runs"]) == 4
    assert (
        compare_runs.main([str(sweep / "0"), str(sweep / "1"), "--plot", str(tmp_path / "lr.png")])
        == 0
    )  # line
    assert compare_runs.main([str(sweep), "--plot", str(tmp_path / "bar.png")]) == 0  # bar chart
    for png in ("lr.png", "bar.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    assert compare_runs.main([str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.startswith("error: no such run directory")


def test_reproduce_refuses_a_run_without_metrics(sweep, capsys):
    import reproduce

    assert reproduce.main([str(sweep / "10")]) == 2
    assert "no metrics.json" in capsys.readouterr().err


def test_compare_plot_names_runs_by_the_overrides_as_typed(sweep, tmp_path, monkeypatch):
    import compare_runs

    import embedforge.plots as plots

    labels, save = [], plots.save_figure

    def keep(fig, path):
        labels.extend(t.get_text() for t in fig.axes[0].get_xticklabels())
        return save(fig, path)

    monkeypatch.setattr(plots, "save_figure", keep)
    assert compare_runs.main([str(sweep), "--plot", str(tmp_path / "bar.png")]) == 0
    assert labels == ["loss=mnrl optim.lr=0.0001", "loss=mnrl optim.lr=1e-05",
                      "loss=triplet optim.lr=1e-05"]  # fmt: skip
    assert not any("_target_" in label for label in labels)


def test_compare_shows_the_delta_interval_of_runs_that_have_one(tmp_path, capsys):
    from embedforge.cli import compare

    old = make_run(tmp_path / "old", 1e-4, "MultipleNegativesRankingLoss", 0.6)
    new = make_run(tmp_path / "new", 2e-4, "MultipleNegativesRankingLoss", 0.7)
    m = json.loads((new / "metrics.json").read_text())
    m["significance"] = {
        "ndcg@10": {"delta": 0.2, "low": 0.05, "high": 0.31, "p_value": 0.004, "significant": True}
    }
    (new / "metrics.json").write_text(json.dumps(m))
    assert compare.main([str(old), str(new), "--metric", "ndcg@10"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "| delta ndcg@10 95% CI | delta ndcg@10 p |" in lines[0]
    row = next(line for line in lines if line.startswith("| new "))
    assert "| [+0.0500, +0.3100] | 0.0040 |" in row
    assert "|  |  |" in next(line for line in lines if line.startswith("| old "))  # older run: none
