"""Judge a run blind in the browser: ``embedforge judge RUN [--port 8765] [--k 10] [--bm25]``.

Serves a local page (no external assets) where a person types or loads queries, or writes them
from sampled passages, and grades the pooled, shuffled top-k documents of the base and fine-tuned
models (1 relevant, 2 partly, 3 not; j/k, u undo). Every grade is saved at once under RUN/judged/
(BEIR layout: queries.jsonl, qrels/test.tsv, corpus.jsonl); reopening resumes. ``--score`` prints
both models' metrics on the judged queries with 95% intervals and records them in the run's
metrics.json and report.md (the page's Score button does the same).
"""

from __future__ import annotations

import json


def main(argv: list[str] | None = None, prog: str = "embedforge judge") -> int:
    """Parse ``argv``; serve the page until interrupted, or score with ``--score``."""
    from embedforge.cli.common import parse, parser, require

    ap = parser(prog, __doc__)
    ap.add_argument("run", help="a run directory (with model/ and .hydra/config.yaml)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--k", type=int, default=10, help="documents each system adds to the pool")
    ap.add_argument("--bm25", action="store_true", help="also pool BM25's top k (lexical extra)")
    ap.add_argument("--seed", type=int, default=0, help="pool shuffles and sampled passages")
    ap.add_argument("--corpus", default=None, help="a BEIR corpus.jsonl (default: the run's)")
    ap.add_argument("--base", default=None, help="base model (default: the run config's model)")
    ap.add_argument("--queries", default=None, help="a file of queries (one a line, or JSONL)")
    ap.add_argument("--score", action="store_true", help="score the judged queries and exit")
    args = parse(ap, argv)
    if not args.score:
        require("judge", ["fastapi", "uvicorn"])
    from embedforge.judge.session import JudgeSession

    session = JudgeSession(
        args.run, k=args.k, bm25=args.bm25, seed=args.seed, corpus=args.corpus, base=args.base
    )
    if args.queries:
        for text in read_queries(args.queries):
            session.add_query(text)
    if args.score:
        print(json.dumps(session.score(), indent=2))
        return 0
    import uvicorn

    from embedforge.judge.app import create_app

    n = session.view()["n_judgements"]
    print(
        f"judge {args.run}: http://{args.host}:{args.port}/ ({n} judgements so far; Ctrl-C stops)"
    )
    uvicorn.run(create_app(session), host=args.host, port=args.port, log_level="warning")
    return 0


def read_queries(path: str) -> list[str]:
    """Queries of a file: one a line, or JSONL rows with ``text`` (BEIR ``queries.jsonl``)."""
    from embedforge.io import iter_jsonl, require_file

    p = require_file(path, "queries file")
    lines = [line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    if lines and lines[0].startswith("{"):
        return [str(r.get("text", "")) for r in iter_jsonl(p) if r.get("text")]
    return lines
