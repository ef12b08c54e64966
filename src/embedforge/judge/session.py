"""A judging session over one run: pooled candidates, blind grades saved as they are made, scores.

``embedforge judge RUN`` pools, for each query a person writes, the top ``k`` documents of the base
model and of the fine-tuned model (and BM25 with ``bm25=True``), shuffles the union per query with a
seeded RNG and shows it without saying which system found what (TREC pooling). Every grade is saved
at once: ``judged/state.json`` (the session: queries, pools, grades, undo history) and what it
implies, ``judged/queries.jsonl`` and ``judged/qrels/test.tsv`` (BEIR layout, graded 2 relevant / 1
partly / 0 not), each written atomically; ``judged/corpus.jsonl`` links the corpus, so ``judged/``
is a BEIR dataset ``embedforge evaluate --data`` reads. Reopening resumes from ``state.json``.
"""

from __future__ import annotations

import json
import os
import random
import threading
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from embedforge.errors import EmbedforgeError
from embedforge.eval.metrics import DEFAULT_METRICS, compute_metrics, parse_metric
from embedforge.eval.retrieval import search
from embedforge.eval.ship import SHIP_METRIC, verdict
from embedforge.eval.significance import delta_significance, queries_needed
from embedforge.io import atomic_write_text, file_hash, read_jsonl, stable_hash, write_json
from embedforge.runs import RunMetrics, load_run

#: the keys of the page and the grades they write into the qrels
GRADES = {"relevant": 2, "partly": 1, "not": 0}
#: the systems pooled; their names never reach the page
SYSTEMS = ("base", "finetuned")
JUDGED_DIR = "judged"
STATE_FILE = "state.json"


class JudgeSession:
    """The state of judging one run, thread-safe (the web server calls it from worker threads).

    Args:
        run_dir: a run directory (``.hydra/config.yaml``, ``model/``).
        k: documents each system contributes to a query's pool.
        bm25: also pool BM25's top ``k`` (``bm25s``, the ``lexical`` extra).
        seed: seeds the pool shuffles and the sampled passages.
        corpus: a BEIR ``corpus.jsonl`` to judge on instead of the run's eval corpus.
        base: the base model (name or dir) instead of the run config's ``model``.
        batch_size: encoding batch size.
    """

    def __init__(
        self,
        run_dir: str | Path,
        k: int = 10,
        bm25: bool = False,
        seed: int = 0,
        corpus: str | Path | None = None,
        base: str | None = None,
        batch_size: int = 64,
    ) -> None:
        self.run = Path(run_dir)
        self.cfg, _ = load_run(self.run)
        if not (self.run / "model" / "modules.json").is_file():
            raise EmbedforgeError(
                f"{self.run} has no model/ (not a finished run): nothing to judge"
            )
        self.dir = self.run / JUDGED_DIR
        self.k, self.seed, self.batch_size = int(k), int(seed), int(batch_size)
        self.lock = threading.Lock()
        self.corpus, corpus_file = _corpus(self.cfg, corpus)
        self.doc_ids = list(self.corpus)
        self.doc_row = {d: i for i, d in enumerate(self.doc_ids)}
        _link_corpus(self.dir / "corpus.jsonl", corpus_file, self.corpus)
        self.encoders = _encoders(self.cfg, self.run, base)
        self.doc_emb = {name: self._corpus_embeddings(name) for name in SYSTEMS}
        self.bm25 = _BM25(list(self.corpus.values())) if bm25 else None
        self.state = self._load_state()

    # ------------------------------------------------------------------ setup
    def _corpus_embeddings(self, name: str) -> np.ndarray:
        """The corpus encoded once per model, cached in ``judged/cache/`` by content."""
        enc = self.encoders[name]
        key = stable_hash(
            name, self.doc_ids, stable_hash(list(self.corpus.values())), _model_key(self, name)
        )
        path = self.dir / "cache" / f"{name}-{key}.npy"
        if path.is_file():
            return np.load(path)
        emb = enc.encode(list(self.corpus.values()), "doc", self.batch_size, True)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp.npy")
        np.save(tmp, emb)
        os.replace(tmp, path)
        return emb

    def _load_state(self) -> dict[str, Any]:
        path = self.dir / STATE_FILE
        if path.is_file():
            state = json.loads(path.read_text())
            unknown = {d for q in state["queries"] for d in q["pool"] if d not in self.doc_row}
            if unknown:
                raise EmbedforgeError(
                    f"{path}: judged documents not in the corpus ({sorted(unknown)[:3]}...);"
                    " judge with the corpus the session started with (--corpus)"
                )
            return state
        return {"k": self.k, "seed": self.seed, "queries": [], "grades": {}, "history": []}

    # ------------------------------------------------------------------ actions
    def add_query(self, text: str, passage: str | None = None) -> dict[str, Any]:
        """Add a query and its shuffled pool; with ``passage`` (a doc the person wrote the question
        for) that document is in the pool and graded relevant. Returns the page's view."""
        text = " ".join(str(text).split())
        if not text:
            raise EmbedforgeError("empty query")
        if passage is not None and passage not in self.doc_row:
            raise EmbedforgeError(f"unknown passage id {passage!r}")
        with self.lock:
            if any(q["text"] == text for q in self.state["queries"]):
                return self._view()
            qid = f"judged-{len(self.state['queries']) + 1:04d}"
            pool = self._pool(qid, text, passage)
            self.state["queries"].append(
                {"qid": qid, "text": text, "source": "passage" if passage else "typed",
                 "passage": passage, "pool": pool}
            )  # fmt: skip
            if passage is not None:
                self.state["grades"].setdefault(qid, {})[passage] = GRADES["relevant"]
            self._save()
            return self._view()

    def judge(self, qid: str, did: str, grade: int) -> dict[str, Any]:
        """Grade one pooled document (2 relevant, 1 partly, 0 not) and save at once."""
        if grade not in GRADES.values():
            raise EmbedforgeError(f"grade must be one of {sorted(GRADES.values())}, got {grade!r}")
        with self.lock:
            query = next((q for q in self.state["queries"] if q["qid"] == qid), None)
            if query is None or did not in query["pool"]:
                raise EmbedforgeError(f"{did!r} is not in the pool of query {qid!r}")
            grades = self.state["grades"].setdefault(qid, {})
            self.state["history"].append([qid, did, grades.get(did)])
            grades[did] = int(grade)
            self._save()
            return self._view()

    def undo(self) -> dict[str, Any]:
        """Take back the last grade (its previous value, or none); the view's ``undone`` names it."""
        with self.lock:
            if not self.state["history"]:
                return self._view()
            qid, did, previous = self.state["history"].pop()
            grades = self.state["grades"].setdefault(qid, {})
            if previous is None:
                grades.pop(did, None)
            else:
                grades[did] = previous
            self._save()
            return {**self._view(), "undone": [qid, did]}

    def passage(self) -> dict[str, str]:
        """The next sampled passage (seeded order) no query was written for yet."""
        with self.lock:
            used = {q["passage"] for q in self.state["queries"] if q.get("passage")}
        order = random.Random(self.seed).sample(self.doc_ids, len(self.doc_ids))
        did = next((d for d in order if d not in used), None)
        if did is None:
            raise EmbedforgeError("every passage already has a question")
        return {"did": did, "text": self.corpus[did]}

    def view(self) -> dict[str, Any]:
        with self.lock:
            return self._view()

    # ------------------------------------------------------------------ pooling and saving
    def _pool(self, qid: str, text: str, passage: str | None) -> list[str]:
        found: list[str] = []
        for name in SYSTEMS:
            q = self.encoders[name].encode([text], "query", 1, False)  # (1, D)
            idx, _ = search(q, self.doc_emb[name], self.k)
            found += [self.doc_ids[j] for j in idx[0]]
        if self.bm25 is not None:
            found += [self.doc_ids[j] for j in self.bm25.top(text, self.k)]
        if passage is not None:
            found.append(passage)
        pool = sorted(set(found))
        random.Random(stable_hash(self.seed, qid, text)).shuffle(pool)
        return pool

    def _save(self) -> None:
        """``state.json`` first (the truth), then the BEIR files it implies; each atomic."""
        write_json(self.dir / STATE_FILE, self.state)
        judged = self._qrels()
        rows = [
            {"_id": q["qid"], "text": q["text"], "source": q["source"], "passage": q["passage"]}
            for q in self.state["queries"]
        ]
        atomic_write_text(
            self.dir / "queries.jsonl",
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
        )
        lines = ["query-id\tcorpus-id\tscore"]
        lines += [f"{q}\t{d}\t{g}" for q, rels in judged.items() for d, g in rels.items()]
        atomic_write_text(self.dir / "qrels" / "test.tsv", "\n".join(lines) + "\n")

    def _qrels(self) -> dict[str, dict[str, int]]:
        """Judged documents per query, in query and pool order (queries without a grade left out)."""
        out = {}
        for q in self.state["queries"]:
            grades = self.state["grades"].get(q["qid"], {})
            rels = {d: int(grades[d]) for d in q["pool"] if d in grades}
            if rels:
                out[q["qid"]] = rels
        return out

    def _view(self) -> dict[str, Any]:
        """What the page shows: queries, their pools (text, grade), counts. No system names."""
        queries = []
        for q in self.state["queries"]:
            grades = self.state["grades"].get(q["qid"], {})
            docs = [{"did": d, "text": self.corpus[d], "grade": grades.get(d)} for d in q["pool"]]
            queries.append({"qid": q["qid"], "text": q["text"], "docs": docs})
        n = sum(len(v) for v in self._qrels().values())
        return {"queries": queries, "n_judgements": n, "can_undo": bool(self.state["history"])}

    # ------------------------------------------------------------------ scoring
    def score(self, metrics: list[str] | None = None) -> dict[str, Any]:
        """Both models on the judged queries, with intervals; recorded in ``metrics.json``
        (``judged``) and ``report.md`` when the run has them.

        Queries without any document graded relevant or partly are left out of the mean (they
        cannot rank anything above anything). Returns the ``judged`` record of
        :class:`~embedforge.runs.RunMetrics`.
        """
        metrics = list(metrics or self.cfg.get("eval", {}).get("metrics") or DEFAULT_METRICS)
        with self.lock:
            qrels = self._qrels()
            texts = {q["qid"]: q["text"] for q in self.state["queries"]}
        top_k = max(parse_metric(m)[1] for m in metrics)
        per_system = {}
        for name in SYSTEMS:
            qids = list(qrels)
            q_emb = self.encoders[name].encode([texts[q] for q in qids], "query", 64, False)
            idx, val = search(q_emb, self.doc_emb[name], top_k)
            run = {
                q: {self.doc_ids[j]: float(s) for j, s in zip(idx[i], val[i])}
                for i, q in enumerate(qids)
            }
            per_system[name] = compute_metrics(run, qrels, metrics, "skip")
        (base, base_pq, skipped), (tuned, tuned_pq, _) = per_system["base"], per_system["finetuned"]
        if not tuned_pq:
            raise EmbedforgeError(
                f"nothing to score yet: none of the {len(qrels)} judged queries has a document"
                " graded relevant or partly"
            )
        rows = [{"baseline": base_pq[q], "finetuned": tuned_pq[q]} for q in tuned_pq]
        significance = delta_significance(rows, metrics, seed=self.seed)
        record = {
            "n_queries": len(qrels),
            "n_scored": len(tuned_pq),
            "n_skipped": skipped,
            "n_judgements": sum(len(v) for v in qrels.values()),
            "pool_k": self.k,
            "baseline": {m: round(v, 6) for m, v in base.items()},
            "finetuned": {m: round(v, 6) for m, v in tuned.items()},
            "delta": {m: round(tuned[m] - base[m], 6) for m in metrics},
            "significance": significance,
            "queries_needed": {
                m: queries_needed(s["delta"], s["std"]) for m, s in significance.items()
            },
        }
        ship = self.cfg.get("ship") or {}
        record["ship"] = verdict(
            record["delta"].get(SHIP_METRIC, 0.0),
            float(ship.get("min_gain", 0.0)),
            significance.get(SHIP_METRIC),
            bool(ship.get("require_significant", False)),
        )
        self._record(record)
        return record

    def _record(self, record: dict[str, Any]) -> None:
        write_json(self.dir / "score.json", record)
        path = self.run / "metrics.json"
        if not path.is_file():
            return
        from embedforge.report import write_report

        m = RunMetrics.load(path)
        m.judged = record
        m.write(path)
        write_report(self.run, m)


def _corpus(cfg: DictConfig, corpus: str | Path | None) -> tuple[dict[str, str], Path | None]:
    """The documents to judge (id -> "title + text") and the file they came from, if one."""
    from embedforge.types import doc_text

    if corpus is not None:
        path = Path(corpus).expanduser().resolve()
        return {str(r["_id"]): doc_text(r) for r in read_jsonl(path)}, path
    from embedforge.runs import run_eval_set

    try:
        rset = run_eval_set(cfg)
    except EmbedforgeError as e:
        raise EmbedforgeError(f"{e}; pass --corpus corpus.jsonl to judge on") from None
    path = Path(str(cfg.data.get("path", ""))).expanduser() / "corpus.jsonl"
    whole = path.is_file() and sum(1 for line in path.open() if line.strip()) == len(rset.corpus)
    return rset.corpus, path.resolve() if whole else None


def _link_corpus(link: Path, source: Path | None, corpus: dict[str, str]) -> None:
    """``judged/corpus.jsonl``: a link to the corpus file, or the judged corpus written out."""
    link.parent.mkdir(parents=True, exist_ok=True)
    if source is not None:
        if link.is_symlink() and link.resolve() == source:
            return
        tmp = link.with_name(f".{link.name}.tmp")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(source)
        os.replace(tmp, link)
        return
    rows = ({"_id": d, "title": "", "text": t} for d, t in corpus.items())
    atomic_write_text(link, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def _encoders(cfg: DictConfig, run: Path, base: str | None) -> dict[str, Any]:
    """The base model (the run config's ``model``, or ``base``) and the fine-tuned ``model/``."""
    from embedforge.config import build
    from embedforge.models.encoder import Encoder

    max_len = cfg.model.get("max_seq_length") if "model" in cfg else None
    base_enc = Encoder.from_pretrained(base, max_seq_length=max_len) if base else build(cfg.model)
    tuned = Encoder.from_pretrained(str(run / "model"), max_seq_length=max_len)
    return {"base": base_enc, "finetuned": tuned}


def _model_key(session: JudgeSession, name: str) -> str:
    if name == "finetuned":
        weights = sorted((session.run / "model").glob("*.safetensors"))
        return ",".join(file_hash(p) for p in weights)
    return json.dumps(OmegaConf.to_container(session.cfg.model, resolve=False), sort_keys=True)


class _BM25:
    """BM25 top-k (``bm25s``: English stopwords, no stemming), the third pooled system."""

    def __init__(self, texts: list[str]) -> None:
        try:
            import bm25s
        except ImportError:
            raise EmbedforgeError(
                "--bm25 needs bm25s (an embedforge dependency): pip install bm25s"
            ) from None
        self._tokenize = lambda xs: bm25s.tokenize(
            xs, stopwords="en", return_ids=False, show_progress=False
        )
        self.index = bm25s.BM25()
        self.index.index(self._tokenize(texts), show_progress=False)
        self.n = len(texts)

    def top(self, query: str, k: int) -> list[int]:
        tokens = [t for t in self._tokenize([query])[0] if t in self.index.vocab_dict]
        scores = self.index.get_scores(tokens) if tokens else np.zeros(self.n, np.float32)
        k = min(k, int((scores > 0).sum()))
        return [int(i) for i in np.argsort(-scores, kind="stable")[:k]]
