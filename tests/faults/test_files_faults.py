"""Issue 25, rows 10-16: hostile folders and file names, secrets in overrides, broken BEIR files,
damaged or untrusted run directories, two runs into one directory. One test per row,
``test_rowNN_...``; real files, real subprocesses, the real CLI."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from embedforge import cli
from embedforge.data.ingest import ingest, summary_lines
from embedforge.errors import EmbedforgeError
from tests.conftest import LEGAL, ROOT
from tests.test_runs import make_run

EN = "The tenant must notify the landlord within thirty days of any change to the premises. " * 4
ENV = {
    **os.environ,
    "PYTHONPATH": str(ROOT / "src"),
    "WANDB_MODE": "offline",
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
#: the cheapest real ``train``: tiny model, 2 steps, a slice of the legal-summarization BEIR set
TINY_TRAIN = [
    "model=tiny",
    "trainer=debug",
    "trainer.max_steps=2",
    "data=beir",
    f"data.path={LEGAL}",
    "data.val_max_docs=60",
    "data.eval_max_queries=10",
    "data.eval_max_docs=60",
    "data.batch_size=4",
    "--quiet",
]


@pytest.fixture(scope="module")
def tokenizer():
    from embedforge.models.encoder import Encoder

    return Encoder.tiny().model.tokenizer


def run_ingest(path, tokenizer, **kw):
    return ingest(path, tokenizer, chunk_tokens=64, overlap_tokens=8, min_tokens=4, **kw)


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


# ------------------------------------------------------------------------------- row 10
def test_row10_loops_bad_names_fifos_and_unreadable_folders_are_skipped_with_a_reason(
    tmp_path, tokenizer, monkeypatch
):
    root, out = tmp_path / "docs", tmp_path / "out"
    root.mkdir()
    (root / "ok.txt").write_text(EN)
    (root / "loop_a.txt").symlink_to(root / "loop_b.txt")  # a -> b -> a: resolving never ends
    (root / "loop_b.txt").symlink_to(root / "loop_a.txt")
    (root / "self").symlink_to(root, target_is_directory=True)  # a folder cycle
    bad_name = os.fsencode(root) + b"/caf\xe9.txt"  # Latin-1 name: not valid UTF-8
    Path(os.fsdecode(bad_name)).write_text(EN.replace("tenant", "lessee"))
    os.mkfifo(root / "pipe.txt")  # reading it would block forever
    locked = root / "locked"
    locked.mkdir()
    (locked / "hidden.txt").write_text(EN)
    locked.chmod(0)
    if os.geteuid() == 0:  # root reads any folder: make listing this one fail as it does for users
        real_scandir = os.scandir

        def scandir(path="."):
            if Path(path) == locked:
                raise PermissionError(13, "Permission denied", str(path))
            return real_scandir(path)

        monkeypatch.setattr(os, "scandir", scandir)
    try:
        chunks, report = run_ingest(root, tokenizer, out_dir=out)
    finally:
        locked.chmod(0o755)
    skipped = {s["path"]: (s["reason"], s["detail"]) for s in report["skipped"]}
    assert skipped["loop_a.txt"][0] == skipped["loop_b.txt"][0] == "broken_link"
    assert "loop" in skipped["loop_a.txt"][1]
    assert skipped["self"][0] == "folder_link"
    assert skipped["caf\\xe9.txt"] == ("bad_name", "file name is not valid UTF-8")
    assert skipped["pipe.txt"][0] == "not_a_file" and "FIFO" in skipped["pipe.txt"][1]
    assert skipped["locked"][0] == "unreadable" and "Permission denied" in skipped["locked"][1]
    assert report["files_read"] == 1 and {c["source"] for c in chunks} == {"ok.txt"}
    assert report["files_seen"] == 7
    assert (out / "chunks.jsonl").is_file() and (out / "ingest_report.json").is_file()
    assert json.loads((out / "ingest_report.json").read_text())["skipped_by_reason"] == {
        "bad_name": 1,
        "broken_link": 2,
        "folder_link": 1,
        "not_a_file": 1,
        "unreadable": 1,
    }


def test_row10_stable_hash_takes_any_file_name():
    from embedforge.io import stable_hash

    name = os.fsdecode(b"caf\xe9.txt")
    assert stable_hash([name]) != stable_hash(["caf.txt"]) and len(stable_hash([name])) == 16


# ------------------------------------------------------------------------------- row 11
def test_row11_file_names_with_escapes_and_newlines_are_escaped_when_printed(
    tmp_path, tokenizer, capsys
):
    root = tmp_path / "docs"
    root.mkdir()
    (root / "ok.txt").write_text(EN)
    evil = "x.bin\nerror: disk full, all data lost \x1b[31mred\x1b[0m"
    (root / evil).write_text("not a document")
    _, report = run_ingest(root, tokenizer)
    printed = "\n".join(summary_lines(report))
    assert "\x1b" not in printed and not error_lines(printed)
    assert "x.bin\\nerror: disk full, all data lost \\x1b[31mred\\x1b[0m" in printed
    rc = cli.main(["ingest", str(root), "--out", str(tmp_path / "out"), "--model", "tiny"])
    out, err = capsys.readouterr()
    assert rc == 0 and "\x1b" not in out + err and not error_lines(out + err)
    # an error line that names the file carries its name escaped, on one line
    e = EmbedforgeError(f"cannot read {evil}")
    assert "\x1b" not in str(e) and "\n" not in str(e) and "\\x1b[31m" in str(e)


# ------------------------------------------------------------------------------- row 12
SECRETS = ["sk-PLANTED0123456789", "hunter2PLANTED", "qp-PLANTED9876"]


def test_row12_a_secret_passed_as_an_override_is_in_no_file_of_the_run(tmp_path):
    """A real tiny run with W&B offline: every byte of every file of the run dir is searched."""
    run_dir = tmp_path / "run"
    url = f"https://bob:{SECRETS[1]}@example.com/v1?api_key={SECRETS[2]}&a=1"
    r = subprocess.run(
        [sys.executable, "-m", "embedforge", "train", *TINY_TRAIN, "logger=wandb",
         f"hydra.run.dir={run_dir}", f"paths.cache_dir={tmp_path / 'cache'}",
         f"+x.api_key={SECRETS[0]}", f'+x.endpoint="{url}"'],
        cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert (run_dir / "metrics.json").is_file() and (run_dir / "model" / "README.md").is_file()
    assert any(
        (run_dir / "wandb").rglob("*.wandb")
    )  # W&B's offline record, what `wandb sync` sends
    leaks = [
        f"{p.relative_to(run_dir)}: {s}"
        for p in run_dir.rglob("*")
        if p.is_file()
        for s in SECRETS
        if s.encode() in p.read_bytes()
    ]
    assert not leaks
    for s in SECRETS:
        assert s not in r.stdout + r.stderr
    saved = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    assert saved.x.api_key == "***" and saved.x.endpoint.startswith("https://***@example.com")
    assert "+x.api_key=***" in OmegaConf.load(run_dir / ".hydra" / "overrides.yaml")


def test_row12_query_string_secrets_are_redacted():
    from embedforge.secrets import redact_override, redact_value

    assert redact_value("https://h/x?api_key=abc&page=2&token=t&key=k") == (
        "https://h/x?api_key=***&page=2&token=***&key=***"
    )
    assert redact_override("+generator.api_key='sk-1'") == "+generator.api_key=***"
    assert redact_override("data.batch_size=4") == "data.batch_size=4"


# ------------------------------------------------------------------------------- row 13
def beir_dir(root: Path, corpus: bytes, queries: bytes, qrels: bytes) -> Path:
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_bytes(corpus)
    (root / "queries.jsonl").write_bytes(queries)
    (root / "qrels" / "test.tsv").write_bytes(qrels)
    return root


def lines(*rows) -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in rows)


DOCS = [{"_id": "d1", "text": "first doc"}, {"_id": "d2", "text": "second doc"}]
QUERIES = [{"_id": "q1", "text": "which doc"}]
QRELS = b"query-id\tcorpus-id\tscore\nq1\td1\t1\n"


@pytest.mark.parametrize(
    "corpus,queries,qrels,where,needle",
    [
        (lines(*DOCS, {"_id": "d1", "text": "other"}), lines(*QUERIES), QRELS,
         "corpus.jsonl:3", "duplicate _id 'd1' (first on line 1)"),
        (lines(*DOCS), lines(*QUERIES, {"_id": "q1", "text": "x"}), QRELS,
         "queries.jsonl:2", "duplicate _id 'q1'"),
        (lines(*DOCS), lines(*QUERIES), b"q1\td1\tinf\n", "test.tsv:1", "not a finite"),
        (lines(*DOCS), lines(*QUERIES), b"q1\td1\t1e400\n", "test.tsv:1", "not a finite"),
        (lines(*DOCS, b'{"_id": "d3", "text": "caf\xe9"}'), lines(*QUERIES), QRELS,
         "corpus.jsonl:3", "not valid UTF-8"),
        (lines(*DOCS), lines(*QUERIES), QRELS + b"q1\td2\t\xff1\n", "test.tsv:3", "UTF-8"),
        (lines({"_id": "d1", "text": "a", "title": 5}), lines(*QUERIES), QRELS,
         "corpus.jsonl:1", "'title' must be a string"),
        (lines({"_id": "d1", "text": "a", "title": ["x"]}), lines(*QUERIES), QRELS,
         "corpus.jsonl:1", "'title' must be a string"),
    ],
    ids=["dup-doc", "dup-query", "inf", "1e400", "latin1-corpus", "latin1-qrels", "num-title",
         "list-title"],
)  # fmt: skip
def test_row13_bad_beir_files_are_one_line_errors_naming_file_and_line(
    tmp_path, corpus, queries, qrels, where, needle
):
    from embedforge.data.beir import load_beir

    root = beir_dir(tmp_path / "beir", corpus, queries, qrels)
    with pytest.raises(EmbedforgeError) as e:
        load_beir(root)
    msg = str(e.value)
    assert "\n" not in msg and where in msg and needle in msg, msg


def test_row13_a_utf8_bom_is_accepted(tmp_path):
    from embedforge.data.beir import load_beir

    bom = b"\xef\xbb\xbf"
    root = beir_dir(tmp_path / "beir", bom + lines(*DOCS), bom + lines(*QUERIES), bom + QRELS)
    ds = load_beir(root)
    assert set(ds.corpus) == {"d1", "d2"} and set(ds.queries) == {"q1"}
    assert ds.qrels["test"] == {"q1": {"d1": 1}}
    root2 = beir_dir(tmp_path / "beir2", lines(*DOCS), lines(*QUERIES), bom + b"q1\td2\t2\n")
    assert load_beir(root2).qrels["test"] == {"q1": {"d2": 2}}


# ------------------------------------------------------------------------------- row 14
def test_row14_compare_marks_a_broken_run_and_shows_the_good_ones(tmp_path, capsys):
    make_run(tmp_path / "runs" / "good", 1e-5, "MultipleNegativesRankingLoss", 0.6)
    torn = make_run(tmp_path / "runs" / "torn", 1e-4, "MultipleNegativesRankingLoss", 0.7)
    data = (torn / "metrics.json").read_bytes()
    (torn / "metrics.json").write_bytes(data[: len(data) // 2])
    yaml = make_run(tmp_path / "runs" / "yaml", 1e-4, "TripletLoss", 0.5)
    (yaml / ".hydra" / "config.yaml").write_text("seed: [42\noptim: {lr: \n")
    rc = cli.main(["compare", str(tmp_path / "runs")])
    out, err = capsys.readouterr()
    assert rc == 1 and "Traceback" not in err
    rows = {r.split("|")[1].strip(): r for r in out.splitlines() if r.startswith("| ")}
    assert "| ok | 0.3000 | 0.5000 | 0.6000 |" in rows["good"]
    assert "broken" in rows["torn"] and "broken" in rows["yaml"]
    assert len(error_lines(err)) == 2
    assert f"{torn / 'metrics.json'}" in err and f"{yaml / '.hydra' / 'config.yaml'}" in err


DAMAGED_RUN_CASES = [
    (command, damage)
    for command in ("export", "reproduce")
    for damage in ("metrics", "config", "overrides", "metrics_list")
    if (command, damage) != ("export", "overrides")  # export does not read overrides.yaml
]


@pytest.mark.parametrize(("command", "damage"), DAMAGED_RUN_CASES)
def test_row14_export_and_reproduce_of_a_damaged_run_are_one_line_errors(
    tmp_path, capsys, tiny_dir, command, damage
):
    run = make_run(tmp_path / "run", 1e-5, "MultipleNegativesRankingLoss", 0.6)
    shutil.copytree(tiny_dir, run / "model")
    path, text = {
        "metrics": (run / "metrics.json", '{"baseline": {"ndcg@10": 0.'),
        "metrics_list": (run / "metrics.json", "[1, 2]"),
        "config": (run / ".hydra" / "config.yaml", "optim:\n  lr: [1e-5\n"),
        "overrides": (run / ".hydra" / "overrides.yaml", "- a\nb: c\n  - d: [\n"),
    }[damage]
    path.write_text(text)
    rc = cli.main([command, str(run)])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert len(error_lines(err)) == 1 and str(path) in error_lines(err)[0], err


# ------------------------------------------------------------------------------- row 15
def untrusted_run(tmp_path: Path, marker: Path) -> Path:
    """A run dir whose saved config builds ``subprocess.getoutput`` as its data source."""
    from tests.conftest import compose_config

    cfg = compose_config("model=tiny", "trainer=debug", "logger=none", "data=beir")
    raw = OmegaConf.to_container(cfg, resolve=False)
    # built before the data source it is an argument of; then the source fails at once
    raw["data"]["path"] = {"_target_": "subprocess.getoutput", "cmd": f"touch {marker}"}
    run = tmp_path / "evil"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(raw)))
    (run / ".hydra" / "overrides.yaml").write_text("[]\n")
    (run / "metrics.json").write_text(json.dumps({"monitor": "val/ndcg@10"}))
    return run


@pytest.mark.parametrize("command", ["reproduce", "resume"])
def test_row15_a_saved_config_cannot_run_arbitrary_targets_without_trust(tmp_path, capsys, command):
    marker = tmp_path / "PWNED"
    run = untrusted_run(tmp_path, marker)
    extra = ["--out", str(tmp_path / "new")] if command == "reproduce" else []
    rc = cli.main([command, str(run), *extra])
    err = capsys.readouterr().err
    assert not marker.exists()
    assert rc == 2 and len(error_lines(err)) == 1
    assert "subprocess.getoutput" in err and "data.path._target_" in err and "--trust" in err
    cli.main([command, str(run), *extra, "--trust"])  # trusted: the user's call
    assert marker.exists()


def test_row15_the_packaged_configs_targets_are_all_allowed():
    from embedforge.config import untrusted_targets
    from tests.conftest import compose_config

    for group in ["model=minilm", "model=tiny", "logger=wandb", "logger=csv", "generator=openai"]:
        assert untrusted_targets(compose_config(group)) == []


# ------------------------------------------------------------------------------- row 16
HOLD_LOCK = """
import fcntl, os, sys, time
f = open(sys.argv[1], "a+")
fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
f.seek(0); f.truncate(); f.write(str(os.getpid())); f.flush()
print("locked", flush=True)
time.sleep(120)
"""


def test_row16_a_second_train_into_a_busy_run_dir_refuses_at_once(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    owner = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(run_dir / "train.lock")],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert owner.stdout.readline().strip() == "locked"
        r = subprocess.run(
            [sys.executable, "-m", "embedforge", "train", *TINY_TRAIN, "logger=none",
             f"hydra.run.dir={run_dir}", f"paths.cache_dir={tmp_path / 'cache'}"],
            cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    finally:
        owner.kill()
        owner.wait()
    assert r.returncode == 2, r.stderr[-2000:]
    assert error_lines(r.stderr) == [
        f"error: {run_dir} is in use by another train (pid {owner.pid}, lock file"
        f" {run_dir / 'train.lock'}): choose another hydra.run.dir"
    ]
    assert "Traceback" not in r.stderr
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "train.lock"
    ]  # nothing of the owner's touched


def test_row16_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    from embedforge.runs import run_dir_lock

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "train.lock").write_text(str(dead.pid))
    with run_dir_lock(tmp_path):
        assert (tmp_path / "train.lock").read_text() == str(os.getpid())
        with run_dir_lock(tmp_path):  # the same process again (the pipeline inside the CLI)
            pass
        probe = subprocess.run(
            [sys.executable, "-c", f"import fcntl; f = open({str(tmp_path / 'train.lock')!r});"
             " fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)"],
            capture_output=True, text=True,
        )  # fmt: skip
        assert probe.returncode != 0  # still held by us
    f = open(tmp_path / "train.lock")
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released on exit
    f.close()
