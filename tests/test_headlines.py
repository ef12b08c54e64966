"""Headlines that cannot mislead (issue 26): a run measured on generated queries says so in the
report's first line, its final log line and ``metrics.json``, and the ship gate says what it gated
on; a run without in-training validation says so instead of "best checkpoint nan"."""

from __future__ import annotations

import json
import logging

import pytest

from embedforge.data.validation import GENERATED_EVAL_NOTE

TOPICS = [
    "payment", "termination", "warranty", "liability", "notice", "assignment", "insurance",
    "audit", "renewal", "escrow", "indemnity", "arbitration", "confidentiality", "licensing",
    "delivery", "acceptance", "subcontracting", "publicity", "severability", "jurisdiction",
]  # fmt: skip


@pytest.fixture()
def documents(tmp_path):
    """A folder of short titled documents: no labelled queries at all."""
    root = tmp_path / "docs"
    root.mkdir()
    for i, t in enumerate(TOPICS * 2):
        (root / f"{t}_{i}.md").write_text(
            f"# {t.title()} terms of agreement {i}\n\nThe {t} provisions of contract {i} require"
            f" each party to act within {i + 3} business days of a written request, and the {t}"
            f" obligations survive expiry for {i + 1} years unless both parties agree otherwise"
            " in a signed amendment delivered to the registered office.\n"
        )
    return root


def test_generated_eval_set_says_so_everywhere(compose, documents, tmp_path, caplog):
    from embedforge.pipeline import train

    run = tmp_path / "run"
    cfg = compose(
        "model=tiny", "trainer=debug", "logger=none", "data=folder", f"data.path={documents}",
        f"paths.output_dir={run}", f"paths.cache_dir={tmp_path / 'cache'}", "data.batch_size=4",
        "trainer.max_steps=1", "trainer.val_check_interval=5",
    )  # fmt: skip
    with caplog.at_level(logging.INFO, logger="embedforge"):
        train(cfg)
    m = json.loads((run / "metrics.json").read_text())
    assert m["eval_set"]["kind"] == "held-out synthetic"
    assert m["eval_note"] == GENERATED_EVAL_NOTE
    assert m["ship"]["gated_on"].startswith(f"ndcg@10 of {m['n_queries']} generated queries")
    report = (run / "report.md").read_text().splitlines()
    assert report[2] == "**Measured on queries generated from your documents, not on real" \
        " queries: give data.eval_path for a real number.**"
    gate = next(line for line in report if line.startswith("Ship gate"))
    assert "generated queries" in gate and "not evidence on real ones" in gate
    final = [r.getMessage() for r in caplog.records if "report:" in r.getMessage()]
    assert final and GENERATED_EVAL_NOTE in final[-1]
    # max_steps 1 < val_check_interval 5: no validation ran during training
    assert m["val"]["best"] is None and "nan" not in " ".join(report[:12])
    assert any("no validation ran during training" in line for line in report)
    # one pass is not complete: the fraction and the whole passes agree
    assert m["training"]["epochs_completed"] == int(m["training"]["epochs"]) == 0
