"""Issue 12, rows 12-16: ingestion of hostile folders, a damaged cache, and config redaction."""

from __future__ import annotations

import json
import logging
import zipfile

import pytest
from omegaconf import OmegaConf

from embedforge.data.ingest import ingest
from embedforge.secrets import redacted_container

RU = (
    "Арендатор обязан уведомить арендодателя в течение тридцати дней о любом изменении. Договор"
    " аренды расторгается по соглашению сторон. Стороны несут ответственность за нарушение"
    " условий договора и возмещают причинённые убытки в полном объёме."
)
JA = (
    "借主は三十日以内に貸主に通知しなければならない。賃貸借契約は当事者の合意により解除される。"
    "当事者は契約条件の違反について責任を負い、生じた損害を賠償する。"
)
EN = "The tenant must notify the landlord within thirty days of any change to the premises. " * 4


@pytest.fixture(scope="module")
def tokenizer():
    from embedforge.models.encoder import Encoder

    return Encoder.tiny().model.tokenizer


def run(path, tokenizer, **kw):
    return ingest(path, tokenizer, chunk_tokens=64, overlap_tokens=8, min_tokens=4, **kw)


def test_row12_links_outside_the_folder_are_skipped_and_reported(tmp_path, tokenizer):
    secret = tmp_path / "outside" / "private.txt"
    secret.parent.mkdir()
    secret.write_text("PRIVATE salary list of every employee with their home address. " * 5)
    (tmp_path / "outside" / "more.txt").write_text("PRIVATE board minutes. " * 10)
    root = tmp_path / "docs"
    root.mkdir()
    (root / "ok.txt").write_text(EN)
    (root / "leak.txt").symlink_to(secret)
    (root / "leakdir").symlink_to(secret.parent, target_is_directory=True)
    chunks, report = run(root, tokenizer)
    assert all("PRIVATE" not in c["text"] for c in chunks) and len(chunks) >= 1
    skipped = {s["path"]: s["reason"] for s in report["skipped"]}
    assert skipped["leak.txt"] == "outside_root"
    assert report["skipped_by_reason"]["outside_root"] >= 1


def test_row13_docx_guards_size_bomb_and_many_paragraphs(tmp_path, tokenizer):
    import docx

    root = tmp_path / "docs"
    root.mkdir()
    d = docx.Document()
    for i in range(20_000):  # style lookups were O(styles) per paragraph: minutes of CPU
        d.add_paragraph(f"clause {i} applies")
    d.save(root / "many.docx")
    with zipfile.ZipFile(root / "bomb.docx", "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("word/document.xml", "w", force_zip64=True) as f:
            for _ in range(260):  # 260 MB of zeros in a ~260 KB file
                f.write(bytes(2**20))
    (root / "big.txt").write_text(EN * 4000)  # ~1.4 MB, over the 1 MB limit below
    chunks, report = run(root, tokenizer, max_file_mb=1)
    skipped = {s["path"]: (s["reason"], s["detail"]) for s in report["skipped"]}
    assert (
        skipped["bomb.docx"][0] == "too_large"
        and "decompresses to 260 MB" in skipped["bomb.docx"][1]
    )
    assert skipped["big.txt"][0] == "too_large"
    assert report["files_read"] == 1 and "clause 19999 applies" in chunks[-1]["text"]


def test_row14_truncated_cache_is_rebuilt_with_a_warning(tmp_path, tokenizer, caplog):
    root, out = tmp_path / "docs", tmp_path / "out"
    root.mkdir()
    (root / "a.txt").write_text(EN + "\n\n" + EN.replace("tenant", "lessee"))
    chunks, _ = run(root, tokenizer, out_dir=out)
    data = (out / "chunks.jsonl").read_bytes()
    (out / "chunks.jsonl").write_bytes(data[: len(data) // 2])  # a crash or full disk
    with caplog.at_level(logging.WARNING, logger="embedforge.data.ingest"):
        again, report = run(root, tokenizer, out_dir=out)
    assert again == chunks and "cache_rebuilt" in report and not report["cached"]
    assert "rebuilding" in caplog.text
    assert run(root, tokenizer, out_dir=out)[1]["cached"]  # the rebuilt cache is whole again


def test_row15_non_western_encodings_are_detected(tmp_path, tokenizer):
    root = tmp_path / "docs"
    root.mkdir()
    (root / "ru.txt").write_bytes(RU.encode("cp1251"))
    (root / "ja.txt").write_bytes(JA.encode("shift_jis"))
    chunks, report = run(root, tokenizer)
    first = {}
    for c in chunks:
        first.setdefault(c["source"], c["text"])
    assert report["files_read"] == 2
    assert first["ru.txt"].startswith("Арендатор обязан") and first["ja.txt"].startswith("借主は")


def test_row16_redaction_hides_secrets_and_url_credentials_only(compose):
    cfg = compose(
        "generator=openai",
        "data=folder",
        "data.path=docs",
        "generator.base_url=https://bob:hunter2@llm.internal:8000/v1",
        "+generator.api_key=sk-live-123",
        "+logger.hf_token=hf_abc",
        "+logger.client_secret=xyz",
        "+logger.authorization=Bearer abc",
    )
    saved = json.dumps(redacted_container(cfg))
    for secret in ("hunter2", "bob:", "sk-live-123", "hf_abc", "xyz", "Bearer abc"):
        assert secret not in saved
    out, raw = redacted_container(cfg), OmegaConf.to_container(cfg, resolve=False)
    assert out["generator"]["base_url"] == "https://***@llm.internal:8000/v1"
    for group, key in [
        ("generator", "max_output_tokens"),
        ("data", "tokenizer"),
        ("data", "chunk_tokens"),
    ]:
        assert out[group][key] == raw[group][key] and raw[group][key] not in (None, "***")
    assert saved.count("***") == 5  # 4 secret keys + 1 URL: nothing else
