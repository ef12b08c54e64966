"""Text extraction: one file -> documents made of paragraphs with headings and char offsets.

Each supported suffix has one reader returning :class:`Document` objects. A paragraph (``Block``)
knows its character span in the document's extracted text (``Document.text``), the nearest
heading above it (``title``) and, for PDFs, its 1-based page. For ``.txt``/``.md`` the extracted
text is the decoded file itself, so offsets point into the file. A file that cannot be used raises
:class:`Unusable` with a short reason key (``empty``, ``binary``, ``garbage``, ``unreadable``,
``encrypted``, ``no_text``, ``unsupported``, ``too_large``) and a human-readable detail.

Text that is not UTF-8 is decoded with the encoding ``charset-normalizer`` detects (not a fixed
fallback, which turned other scripts into mojibake). A DOCX (a zip) whose members would decompress
to more than ``MAX_UNZIPPED_BYTES`` is refused before anything is decompressed.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

_PARA_SPLIT = re.compile(r"\n[ \t\r\f\v]*\n")
_ATX = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)[ \t#]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")
MAX_UNZIPPED_BYTES = 256 * 2**20  # a DOCX's declared decompressed size (zip members stop there)


class Unusable(Exception):
    """A file (or record) that yields no text: ``reason`` is a short key, ``detail`` says why."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass
class Block:
    """A paragraph: ``text[start:end]`` of its document, under heading ``title``."""

    start: int
    end: int
    title: str = ""
    page: int | None = None


@dataclass
class Document:
    """Extracted text of a file (or of one JSONL/CSV record) split into paragraphs."""

    text: str
    blocks: list[Block]
    title: str
    record: int | None = None
    doc_id: str | None = None
    meta: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------- decoding & checks
def printable_ratio(text: str) -> float:
    """Fraction of characters that are printable or ordinary whitespace."""
    if not text:
        return 1.0
    bad = sum(1 for c in text if not (c.isprintable() or c in "\n\r\t\f\v"))
    return 1.0 - bad / len(text)


def check_text(text: str, what: str = "text") -> str:
    """Reject extracted text that is empty or mostly control characters (binary garbage)."""
    if not text.strip():
        raise Unusable("no_text", f"no {what} found")
    sample = text[:20000]
    ratio = printable_ratio(sample)
    if ratio < 0.95 or sample.count("\ufffd") > 0.05 * len(sample):
        raise Unusable(
            "garbage", f"{what} is mostly non-printable characters ({ratio:.0%} printable)"
        )
    return text


def decode(data: bytes) -> str:
    """Decode text bytes: UTF-8 (with or without BOM), else the encoding charset-normalizer
    detects; binary data is rejected."""
    if not data.strip():
        raise Unusable("empty", "file is empty" if not data else "file holds only whitespace")
    if b"\x00" in data[:8192]:
        raise Unusable("binary", "binary content (NUL bytes)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        from charset_normalizer import from_bytes

        best = from_bytes(data).best()
        if best is None:
            raise Unusable("binary", "not decodable as text in any known encoding") from None
        text = str(best)
    return check_text(text.replace("\r\n", "\n").replace("\r", "\n"))


# ---------------------------------------------------------------------------- block helpers
def paragraph_spans(text: str, lo: int = 0, hi: int | None = None) -> list[tuple[int, int]]:
    """(start, end) of the blank-line-separated paragraphs of ``text[lo:hi]``, whitespace-trimmed."""
    hi = len(text) if hi is None else hi
    spans, pos = [], lo
    for m in _PARA_SPLIT.finditer(text, lo, hi):
        spans.append((pos, m.start()))
        pos = m.end()
    spans.append((pos, hi))
    out = []
    for s, e in spans:
        seg = text[s:e]
        if seg.strip():
            s2 = s + len(seg) - len(seg.lstrip())
            e2 = e - (len(seg) - len(seg.rstrip()))
            out.append((s2, e2))
    return out


def join_paragraphs(paras: list[tuple[str, str, int | None]], title: str, **kw) -> Document:
    """Build a Document from (text, heading, page) paragraphs joined by blank lines."""
    parts, blocks, pos = [], [], 0
    for text, heading, page in paras:
        text = text.strip()
        if not text:
            continue
        if parts:
            parts.append("\n\n")
            pos += 2
        parts.append(text)
        blocks.append(Block(pos, pos + len(text), heading, page))
        pos += len(text)
    return Document("".join(parts), blocks, title, **kw)


# ---------------------------------------------------------------------------- readers
def read_txt(path: Path) -> list[Document]:
    text = decode(path.read_bytes())
    return [Document(text, [Block(s, e, "") for s, e in paragraph_spans(text)], path.stem)]


def read_md(path: Path) -> list[Document]:
    """Markdown: ATX (``# h``) and setext headings set the title of the paragraphs below them."""
    text = decode(path.read_bytes())
    blocks: list[Block] = []
    heading, para_start, para_end, para_lines, in_fence, pos = "", None, 0, 0, False, 0

    def flush():
        nonlocal para_start, para_lines
        if para_start is not None:
            blocks.extend(
                Block(s, e, heading) for s, e in paragraph_spans(text, para_start, para_end)
            )
        para_start, para_lines = None, 0

    for line in text.split("\n"):
        start, end = pos, pos + len(line)
        pos = end + 1
        if _FENCE.match(line):
            in_fence = not in_fence
        if not in_fence:
            m = _ATX.match(line)
            if m:
                flush()
                heading = m.group(2).strip()
                continue
            if _SETEXT.match(line) and para_lines == 1:
                heading = text[para_start:para_end].strip()
                para_start, para_lines = None, 0
                continue
            if not line.strip() or _SETEXT.match(line):
                flush()
                continue
        if para_start is None:
            para_start = start
        para_end, para_lines = end, para_lines + 1
    flush()
    if not blocks:
        raise Unusable("no_text", "markdown holds only headings")
    return [Document(text, blocks, path.stem)]


class _HTMLText(HTMLParser):
    """Collect visible text as paragraphs; h1-h6 become the heading of what follows."""

    BLOCK = {
        "p", "div", "li", "ul", "ol", "br", "tr", "table", "section", "article", "main",
        "aside", "blockquote", "pre", "dd", "dt", "dl", "figcaption", "form", "hr", "td", "th",
    }  # fmt: skip
    # not content: code, page chrome (navigation, site header and footer) and metadata
    HIDDEN = {"script", "style", "noscript", "template", "svg", "head", "nav", "header", "footer"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.paras: list[tuple[str, str, int | None]] = []
        self.buf: list[str] = []
        self.heading, self.doc_title = "", ""
        self.hidden, self.in_heading, self.in_title = 0, False, False

    def _flush(self):
        text = " ".join("".join(self.buf).split())
        self.buf = []
        if not text:
            return
        if self.in_heading:
            self.heading = text
        else:
            self.paras.append((text, self.heading, None))

    def handle_starttag(self, tag, attrs):
        if tag == "title":
            self.in_title = True
        if tag in self.HIDDEN:
            self.hidden += 1
        elif re.fullmatch(r"h[1-6]", tag):
            self._flush()
            self.in_heading = True
        elif tag in self.BLOCK:
            self._flush()

    def handle_endtag(self, tag):
        if tag == "title":
            self.in_title = False
        if tag in self.HIDDEN:
            self.hidden = max(0, self.hidden - 1)
        elif re.fullmatch(r"h[1-6]", tag):
            self._flush()
            self.in_heading = False
        elif tag in self.BLOCK:
            self._flush()

    def handle_data(self, data):
        if self.in_title:
            self.doc_title += data
        elif not self.hidden:
            self.buf.append(data)


def read_html(path: Path) -> list[Document]:
    parser = _HTMLText()
    parser.feed(decode(path.read_bytes()))
    parser.close()
    parser._flush()
    doc = join_paragraphs(parser.paras, " ".join(parser.doc_title.split()) or path.stem)
    check_text(doc.text, "visible text")
    return [doc]


def read_pdf(path: Path) -> list[Document]:
    """PDF via pypdf, one paragraph per blank-line-separated block, with 1-based page numbers."""
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    if not path.stat().st_size:
        raise Unusable("empty", "file is empty")
    pypdf_log = logging.getLogger("pypdf")
    level = pypdf_log.level
    pypdf_log.setLevel(logging.ERROR)  # a corrupt file is reported once, in the ingest report
    try:
        reader = PdfReader(str(path))
        if reader.is_encrypted:
            try:
                if not reader.decrypt(""):
                    raise Unusable("encrypted", "PDF is password-protected")
            except Unusable:
                raise
            except Exception as e:
                raise Unusable("encrypted", f"PDF is encrypted ({e})") from None
        pages = [page.extract_text() or "" for page in reader.pages]
        meta_title = (reader.metadata.title if reader.metadata else None) or ""
    except Unusable:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, OSError, AttributeError) as e:
        raise Unusable("unreadable", f"unreadable PDF ({type(e).__name__}: {e})") from None
    finally:
        pypdf_log.setLevel(level)
    paras = []
    for number, page in enumerate(pages, 1):
        page = page.replace("\r\n", "\n").replace("\r", "\n")
        paras.extend((page[s:e], "", number) for s, e in paragraph_spans(page))
    doc = join_paragraphs(paras, str(meta_title).strip() or path.stem, meta={"pages": len(pages)})
    check_text(doc.text, "extractable text (scanned PDF?)")
    return [doc]


def read_docx(path: Path) -> list[Document]:
    """DOCX via python-docx, in body order; ``Heading n``/``Title`` styles set the heading."""
    import zipfile

    import docx
    from docx.opc.exceptions import PackageNotFoundError
    from docx.table import Table

    if not path.stat().st_size:
        raise Unusable("empty", "file is empty")
    try:
        check_unzipped_size(path)
        document = docx.Document(str(path))
        items = list(document.iter_inner_content())
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError, OSError) as e:
        raise Unusable("unreadable", f"unreadable DOCX ({type(e).__name__}: {e})") from None
    paras, heading = [], ""
    styles: dict[str | None, str] = {}  # by style id: python-docx looks a style up in O(styles)
    for item in items:
        if isinstance(item, Table):
            for row in item.rows:
                cells = [" ".join(c.text.split()) for c in row.cells]
                paras.append((" | ".join(dict.fromkeys(c for c in cells if c)), heading, None))
            continue
        style_id = item._p.style
        if style_id not in styles:
            styles[style_id] = (item.style.name if item.style is not None else "") or ""
        style = styles[style_id]
        text = item.text.strip()
        if text and (style.startswith("Heading") or style == "Title"):
            heading = " ".join(text.split())
        elif text:
            paras.append((text, heading, None))
    title = (document.core_properties.title or "").strip() or path.stem
    doc = join_paragraphs(paras, title)
    check_text(doc.text)
    return [doc]


def check_unzipped_size(path: Path, limit: int | None = None) -> None:
    """Refuse a zip (DOCX) whose members declare more than ``limit`` bytes decompressed; reading
    a member stops at its declared size, so nothing larger is ever inflated."""
    import zipfile

    limit = MAX_UNZIPPED_BYTES if limit is None else limit
    with zipfile.ZipFile(path) as z:
        total = sum(i.file_size for i in z.infolist())
    if total > limit:
        raise Unusable(
            "too_large", f"decompresses to {total / 2**20:.0f} MB > {limit / 2**20:.0f} MB allowed"
        )


def _record_doc(text, title, record: int, doc_id, default_title: str) -> Document:
    if not isinstance(text, str) or not text.strip():
        raise Unusable("no_text", "record has no non-empty string text")
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    title = str(title).strip() if title else default_title
    blocks = [Block(s, e, "") for s, e in paragraph_spans(text)]
    return Document(
        text, blocks, title, record=record, doc_id=None if doc_id is None else str(doc_id)
    )


def read_jsonl(path: Path, problems: list | None = None) -> list[Document]:
    """One document per line: ``text``, optional ``title`` and ``id`` (or BEIR ``_id``)."""
    docs = []
    for lineno, line in enumerate(decode(path.read_bytes()).split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise Unusable("no_text", f"expected a JSON object, got {type(row).__name__}")
            doc_id = row.get("id", row.get("_id"))
            docs.append(_record_doc(row.get("text"), row.get("title"), lineno, doc_id, path.stem))
        except json.JSONDecodeError as e:
            if problems is not None:
                problems.append((lineno, "malformed", f"malformed JSON ({e.msg})"))
        except Unusable as e:
            if problems is not None:
                problems.append((lineno, e.reason, e.detail))
    if not docs:
        raise Unusable("no_text", "no record with a non-empty 'text'")
    return docs


def read_csv(
    path: Path,
    problems: list | None = None,
    text_column: str = "text",
    title_column: str | None = "title",
    id_column: str | None = "id",
) -> list[Document]:
    """One document per row: ``text_column`` (required), optional title and id columns."""
    text = decode(path.read_bytes())
    csv.field_size_limit(1 << 30)
    try:
        reader = csv.DictReader(io.StringIO(text))
        fields = reader.fieldnames or []
        if text_column not in fields:
            raise Unusable("no_text", f"no {text_column!r} column (columns: {fields})")
        docs = []
        for row in reader:
            lineno = reader.line_num
            try:
                title = row.get(title_column) if title_column else None
                doc_id = row.get(id_column) if id_column else None
                docs.append(_record_doc(row.get(text_column), title, lineno, doc_id, path.stem))
            except Unusable as e:
                if problems is not None:
                    problems.append((lineno, e.reason, e.detail))
    except csv.Error as e:
        raise Unusable("unreadable", f"malformed CSV ({e})") from None
    if not docs:
        raise Unusable("no_text", f"no row with a non-empty {text_column!r}")
    return docs


READERS: dict[str, Callable[..., list[Document]]] = {
    ".txt": read_txt,
    ".text": read_txt,
    ".md": read_md,
    ".markdown": read_md,
    ".html": read_html,
    ".htm": read_html,
    ".pdf": read_pdf,
    ".docx": read_docx,
    ".jsonl": read_jsonl,
    ".csv": read_csv,
}


def extract(
    path: Path,
    problems: list | None = None,
    csv_text_column: str = "text",
) -> list[Document]:
    """Documents of one file; raises :class:`Unusable` when it yields none.

    ``problems`` collects ``(line, reason, detail)`` of records skipped inside JSONL/CSV files.
    """
    suffix = path.suffix.lower()
    if suffix not in READERS:
        raise Unusable("unsupported", f"unsupported file type {suffix or '(no suffix)'!r}")
    if not path.stat().st_size:
        raise Unusable("empty", "file is empty")
    try:
        if suffix == ".csv":
            return read_csv(path, problems, text_column=csv_text_column)
        if suffix == ".jsonl":
            return read_jsonl(path, problems)
        return READERS[suffix](path)
    except (PermissionError, IsADirectoryError) as e:
        raise Unusable("unreadable", f"cannot read file ({e.strerror})") from None
