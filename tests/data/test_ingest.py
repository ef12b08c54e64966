"""Ingestion: extraction of every format, token-bounded chunks, dedup, cache, CLI, data=folder."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from embedforge.data.ingest import ingest, near_duplicates
from embedforge.errors import EmbedforgeError

ROOT = Path(__file__).resolve().parents[2]
CHUNK, OVERLAP, MIN = 64, 16, 8
WORDS = (
    "contract party agreement license term payment notice termination liability warranty"
    " confidential data service customer provider fee renewal breach court law clause section"
    " effective date written consent assign obligation indemnify damages insurance audit"
).split()


def _sentence(rng: random.Random) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(6, 14))]
    return " ".join(words).capitalize() + "."


def _paragraph(rng: random.Random, n: int) -> str:
    return " ".join(_sentence(rng) for _ in range(n))


def make_pdf(path: Path, pages: list[list[str]]) -> Path:
    """A minimal valid PDF (Helvetica text, one line per string), written by hand: no PDF writer."""
    n = len(pages)
    page_ids = [4 + 2 * i for i in range(n)]
    kids = " ".join(f"{p} 0 R" for p in page_ids)
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {n} >>".encode(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    ]
    for i, lines in enumerate(pages):
        body = " ".join(f"({line}) Tj T*" for line in lines)
        content = f"BT /F1 11 Tf 14 TL 72 720 Td {body} ET".encode()
        objs.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >>"
            f" /Contents {page_ids[i] + 1} 0 R >>".encode()
        )
        objs.append(b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream")
    out, offsets = b"%PDF-1.4\n", []
    for k, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += f"{k} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    path.write_bytes(out)
    return path


def make_corpus(root: Path) -> Path:
    """Every supported format, plus garbage, empty, unsupported, duplicate and hidden files."""
    import docx

    rng = random.Random(0)
    root.mkdir(parents=True, exist_ok=True)
    notes = "\n\n".join(_paragraph(rng, rng.randint(1, 5)) for _ in range(12))
    notes += "\n\n" + " ".join(rng.choice(WORDS) for _ in range(150))  # no sentence end: word split
    (root / "notes.txt").write_text(notes)
    (root / "notes_copy.txt").write_text(notes)  # same bytes: skipped as a duplicate file
    (root / "notes_shouted.txt").write_text(notes.upper())  # same words: near duplicates
    (root / "sub").mkdir()
    (root / "sub" / "guide.md").write_text(
        f"# Guide\n\n{_paragraph(rng, 3)}\n\n## Installation\n\n```bash\n# not a heading\npip install x\n```\n\n"
        f"{_paragraph(rng, 3)}\n\nUsage\n-----\n\n{_paragraph(rng, 4)}\n"
    )
    (root / "page.html").write_text(
        "<html><head><title>Policy page</title><style>p {color: red}</style></head><body>"
        f"<h1>Refunds</h1><p>{_paragraph(rng, 3)}</p><script>var secretScript = 1;</script>"
        f"<h2>Shipping</h2><div>{_paragraph(rng, 3)}<br>{_paragraph(rng, 2)}</div></body></html>"
    )
    make_pdf(
        root / "report.pdf",
        [
            [_sentence(rng) for _ in range(6)],
            ["Second page about renewal fees."] + [_sentence(rng) for _ in range(5)],
        ],
    )
    d = docx.Document()
    d.add_heading("Budget", level=1)
    d.add_paragraph(_paragraph(rng, 3))
    table = d.add_table(rows=2, cols=2)
    for r, row in enumerate(table.rows):
        for c, cell in enumerate(row.cells):
            cell.text = f"cell {r} {c} audit fee"
    d.add_heading("Risks", level=2)
    d.add_paragraph(_paragraph(rng, 3))
    d.save(str(root / "memo.docx"))
    dup_text = _paragraph(rng, 3)
    (root / "records.jsonl").write_text(
        json.dumps({"id": "r1", "title": "First record", "text": _paragraph(rng, 3)}) + "\n"
        + json.dumps({"id": "r2", "text": dup_text}) + "\n"
        + "{not json\n"
        + json.dumps({"id": "r3", "title": "no text"}) + "\n"
        + json.dumps({"id": "r4", "text": dup_text}) + "\n"  # exact duplicate chunk of r2
    )  # fmt: skip
    (root / "table.csv").write_text(
        f'id,title,text\nc1,Row one,"{_paragraph(rng, 3)}"\nc2,,"{_paragraph(rng, 2)}"\n'
    )
    (root / "garbage.txt").write_bytes(random.Random(1).randbytes(5000))
    (root / "broken.pdf").write_bytes(b"%PDF-1.4\n" + random.Random(2).randbytes(3000))
    (root / "empty.md").write_text("")
    (root / "image.xyz").write_bytes(b"\x89PNG....")
    (root / ".hidden.txt").write_text("hidden files are ignored entirely")
    return root


@pytest.fixture(scope="module")
def tokenizer():
    from embedforge.models.encoder import Encoder

    return Encoder.tiny(seed=0).model.tokenizer


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("docs"))


@pytest.fixture(scope="module")
def result(corpus, tokenizer, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    chunks, report = ingest(corpus, tokenizer, CHUNK, OVERLAP, MIN, out_dir=out)
    return chunks, report, out


def _n_tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def test_bad_files_are_reported_with_path_and_reason(result):
    _, report, _ = result
    reasons = {s["path"]: s["reason"] for s in report["skipped"]}
    assert reasons == {
        "garbage.txt": "binary",
        "broken.pdf": "unreadable",
        "empty.md": "empty",
        "image.xyz": "unsupported",
        "notes_copy.txt": "duplicate",
    }
    assert all(s["detail"] for s in report["skipped"])
    assert report["skipped_by_reason"] == {
        "binary": 1,
        "duplicate": 1,
        "empty": 1,
        "unreadable": 1,
        "unsupported": 1,
    }
    assert report["files_seen"] == 13  # hidden file not listed
    assert (
        report["files_read"] == 8
        and report["files_read"] + report["files_skipped"] == report["files_seen"]
    )
    assert report["records_skipped"] == 2
    assert {r["path"] for r in report["records_skipped_detail"]} == {
        "records.jsonl:3",
        "records.jsonl:4",
    }


def test_every_format_yields_chunks_with_titles_and_provenance(result):
    chunks, report, _ = result
    by_source: dict[str, list[dict]] = {}
    for c in chunks:
        by_source.setdefault(c["source"], []).append(c)
    assert set(by_source) == {
        "notes.txt",
        "sub/guide.md",
        "page.html",
        "report.pdf",
        "memo.docx",
        "records.jsonl",
        "table.csv",
    }
    assert {c["title"] for c in by_source["sub/guide.md"]} <= {"Guide", "Installation", "Usage"}
    assert "Usage" in {c["title"] for c in by_source["sub/guide.md"]}
    install = [c for c in by_source["sub/guide.md"] if "pip install x" in c["text"]]
    assert install and install[0]["title"] == "Installation"  # '# not a heading' inside a fence
    html = " ".join(c["text"] for c in by_source["page.html"])
    assert "secretScript" not in html and "color: red" not in html
    assert {c["title"] for c in by_source["page.html"]} <= {"Refunds", "Shipping"}
    assert {c["page"] for c in by_source["report.pdf"]} | {
        c["page_end"] for c in by_source["report.pdf"]
    } == {1, 2}
    assert any(
        "Second page about renewal fees." in c["text"] and c["page_end"] == 2
        for c in by_source["report.pdf"]
    )
    docx_text = " ".join(c["text"] for c in by_source["memo.docx"])
    assert "cell 1 1 audit fee" in docx_text and {c["title"] for c in by_source["memo.docx"]} <= {
        "Budget",
        "Risks",
    }
    assert {c.get("doc_id") for c in by_source["records.jsonl"]} == {"r1", "r2"}
    assert {c["title"] for c in by_source["table.csv"]} == {"Row one", "table"}
    assert report["chunks"] == len(chunks) and len({c["id"] for c in chunks}) == len(chunks)


def test_duplicates_removed(result):
    chunks, report, _ = result
    assert report["exact_duplicates_removed"] == 1  # records.jsonl r4 == r2
    n_notes = sum(c["source"] == "notes.txt" for c in chunks)
    assert n_notes > 3
    assert not any(
        c["source"] == "notes_shouted.txt" for c in chunks
    )  # every chunk a near duplicate
    assert report["near_duplicates_removed"] == n_notes
    assert (
        report["chunks_before_dedup"]
        == report["chunks"] + report["exact_duplicates_removed"] + n_notes
    )


def test_token_bounds_overlap_and_offsets(result, corpus, tokenizer):
    chunks, _, _ = result
    for c in chunks:
        assert MIN <= c["n_tokens"] <= CHUNK
        assert c["n_tokens"] == _n_tokens(tokenizer, c["text"])
    notes_text = (corpus / "notes.txt").read_text()
    notes = [c for c in chunks if c["source"] == "notes.txt"]
    covered = set()
    for c in notes:  # offsets point into the file; the chunk is that span, whitespace-normalized
        assert c["text"].split() == notes_text[c["start"] : c["end"]].split()
        covered.update(range(c["start"], c["end"]))
    assert all(i in covered for i, ch in enumerate(notes_text) if not ch.isspace())  # nothing lost
    overlaps = 0
    for a, b in zip(notes, notes[1:]):
        assert a["start"] < b["start"]
        if b["start"] < a["end"]:
            overlaps += 1
            assert _n_tokens(tokenizer, notes_text[b["start"] : a["end"]]) <= OVERLAP
    assert overlaps >= 1


def test_rerun_is_cached_and_ids_are_stable(result, corpus, tokenizer, tmp_path):
    chunks, report, out = result
    again, report2 = ingest(corpus, tokenizer, CHUNK, OVERLAP, MIN, out_dir=out)
    assert report2["cached"] is True and again == chunks
    assert [json.loads(line) for line in (out / "chunks.jsonl").read_text().splitlines()] == chunks
    assert json.loads((out / "ingest_report.json").read_text())["cache_key"] == report["cache_key"]
    fresh, report3 = ingest(corpus, tokenizer, CHUNK, OVERLAP, MIN)  # no cache involved
    assert report3["cached"] is False and [c["id"] for c in fresh] == [c["id"] for c in chunks]
    _, other = ingest(
        corpus, tokenizer, CHUNK + 8, OVERLAP, MIN, out_dir=out
    )  # config change: rebuilt
    assert other["cached"] is False and other["cache_key"] != report["cache_key"]


def test_changed_file_invalidates_cache(tokenizer, tmp_path):
    src = tmp_path / "docs"
    src.mkdir()
    (src / "a.txt").write_text(_paragraph(random.Random(3), 6))
    _, r1 = ingest(src, tokenizer, CHUNK, OVERLAP, MIN, out_dir=tmp_path / "out")
    (src / "a.txt").write_text(_paragraph(random.Random(4), 6))
    _, r2 = ingest(src, tokenizer, CHUNK, OVERLAP, MIN, out_dir=tmp_path / "out")
    assert r2["cached"] is False and r2["cache_key"] != r1["cache_key"]


def test_paragraphs_are_packed_whole_when_they_fit(tokenizer, tmp_path):
    rng = random.Random(5)
    paras = [_paragraph(rng, 1) for _ in range(20)]  # ~10-20 tokens each
    (tmp_path / "p.txt").write_text("\n\n".join(paras))
    chunks, _ = ingest(tmp_path / "p.txt", tokenizer, CHUNK, 0, MIN)
    for c in chunks:
        for part in c["text"].split("\n\n"):
            assert part in paras  # never cut inside a paragraph
    assert len(chunks) < len(paras)  # several paragraphs per chunk


def test_near_duplicates_threshold():
    rng = random.Random(6)
    base = [rng.choice(WORDS) + str(i) for i in range(200)]
    one_word = base.copy()
    one_word[100] = "changed"  # 5 of 196 shingles differ: Jaccard 191/201 = 0.95
    half = base[:100] + [w + "x" for w in base[100:]]  # Jaccard < 0.5
    texts = [" ".join(base), " ".join(one_word), " ".join(half), " ".join(base).upper()]
    assert near_duplicates(texts, 0.9) == {1: 0, 3: 0}
    assert near_duplicates(texts, 0.96) == {3: 0}


def test_errors_are_one_line(tokenizer, tmp_path):
    with pytest.raises(EmbedforgeError, match="input path not found"):
        ingest(tmp_path / "missing", tokenizer)
    (tmp_path / "junk.txt").write_bytes(b"\x00\x01" * 100)
    with pytest.raises(EmbedforgeError, match="no chunks") as e:
        ingest(tmp_path, tokenizer, CHUNK, OVERLAP, MIN)
    assert "binary" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(EmbedforgeError, match="overlap_tokens"):
        ingest(tmp_path, tokenizer, 64, 40)


def test_cli_missing_path_exits_2(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "ingest.py"), str(tmp_path / "nope"), "--out", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith(
        "error: input path not found"
    )
    assert not (tmp_path / "o").exists()


def test_cli_prints_summary(corpus, tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import ingest as cli
    finally:
        sys.path.pop(0)
    out = tmp_path / "o"
    assert (
        cli.main(
            [
                str(corpus),
                "--out",
                str(out),
                "--model",
                "tiny",
                "--chunk-tokens",
                "64",
                "--overlap",
                "16",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert (
        "files: 13 seen, 8 read, 5 skipped" in printed and "skipped garbage.txt: binary" in printed
    )
    assert (out / "chunks.jsonl").is_file() and (out / "ingest_report.json").is_file()


def test_folder_source_composes_and_caps_chunks(compose, corpus, tmp_path):
    from hydra.utils import instantiate

    from embedforge.data.folder import FolderSource

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"query": "what is the fee", "positive": "The fee is 10."}) + "\n")
    cfg = compose(
        "data=folder", "model=tiny", f"data.path={corpus}", f"data.cache_dir={tmp_path / 'cache'}",
        f"data.pairs_path={pairs}", "data.gen_max_docs=5",
    )  # fmt: skip
    source = instantiate(cfg.data)
    assert isinstance(source, FolderSource) and source.name == corpus.name
    chunks = source.chunks()
    assert len(chunks) == 5 and len(source.all_chunks()) > 5
    assert source.report["config"]["chunk_tokens"] == 62  # tiny max_seq_length 64 - [CLS] - [SEP]
    assert max(c["n_tokens"] for c in source.all_chunks()) <= 62
    assert source.real_pairs()[0]["source"] == "real"
    assert source.eval_set() is None and source.val_set() is None
    assert source.summary()["files_read"] == 8
    with pytest.raises(EmbedforgeError, match="data.path not found"):
        FolderSource(path=str(tmp_path / "missing"))


def test_html_boilerplate_is_dropped(tokenizer, tmp_path):
    body = " ".join(["The tenant must notify the landlord within thirty days."] * 6)
    (tmp_path / "page.html").write_text(
        "<html><head><title>Lease</title></head><body><header>Site banner menu</header>"
        "<nav><a>Home</a> <a>Pricing</a></nav><main><h1>Notice</h1><p>" + body + "</p></main>"
        "<footer>Copyright footer links</footer><script>var tracking = 1;</script></body></html>"
    )
    chunks, _ = ingest(
        tmp_path, tokenizer, chunk_tokens=CHUNK, overlap_tokens=OVERLAP, min_tokens=MIN
    )
    text = " ".join(c["text"] for c in chunks)
    assert "tenant must notify" in text and chunks[0]["title"] == "Notice"
    for junk in ("banner", "Pricing", "Copyright", "tracking"):
        assert junk not in text
