"""Meta-evaluation of label-free signals: which one predicts a run's real test change?

    nice -n 10 python scripts/meta_eval_signals.py [--sets icd10 legal cuad medquad]
        [--recipes default lr2e-5 ...] [--work outputs/bench/meta_eval] [--force]

A label-free run (offline pairs, no real queries: validation on held-out generated pairs) must
decide alone whether its fine-tuned weights are better than the base model. This harness measures
how well each candidate signal would have decided, on four sets that do have real test queries
(the labels only judge):

1. Runs: for every set (:data:`SETS`, each a label-free configuration a user would type, its dev
   split unused) and every recipe (:data:`RECIPES`: learning rates 2e-5 ... 1e-3, steps, strategy,
   negatives), ``embedforge train`` in a subprocess with ``eval.keep_best=false`` (the base model is
   never chosen: the run's selection between its last weights and best checkpoint ships, and is
   judged) on the same subsets (:data:`COMMON`: 200 test queries over <= 1,500 documents, 128
   tokens, B=16). A run with a ``metrics.json`` is reused.
2. Signals, per run, from its own files and its corpus (never its labels), base vs fine-tuned:
   - ``val_synth``: the run's own held-out generated validation (today's selection signal),
     NDCG@10 of the weights the run shipped (``monitor_value``: the last weights or, when it
     validated higher, the best checkpoint) - base; with its paired 95% interval and p-value over
     the validation queries (``val_synth_low/high/p``: the run's validation set rebuilt from its
     config and scored per query, checked against the run's own numbers).
   - ``xstrat``: cross-strategy validation: offline pairs of the strategies the run did *not*
     train on, from a seeded sample of the corpus documents, searched among all probe positives;
     NDCG@10 fine-tuned - base: exactly what a run's own guard computes (same sample, seed and
     caps: ``eval.label_free_guard``; checked against its ``label_free`` record).
   - ``pseudo``: pseudo-qrels: for generated queries of every strategy, the documents both BM25
     and the base model rank in their top 10 count as relevant; NDCG@10 fine-tuned - base.
   - ``overlap``: how much of each probe document's 10 nearest documents stay the same after
     fine-tuning (mean share; 1 = the neighbourhoods did not move).
   - ``wise``: the WiSE curve on the cross-strategy set: NDCG@10 at alpha 1 minus alpha 0.5 (< 0:
     the half-way weights are better than the end; the fine-tuning overshot).
   - ``lexical``: BM25's lead over the base model (NDCG@10, every probe query, with its paired
     interval: ``lexical_low/high`` of base - BM25), before training and the same for every
     run of a set: what a run's ``lexical_margin`` guard computes. It "ships" where BM25 is
     significantly ahead. Filled in for rows from before it without rescoring the others.
3. Per signal: Spearman correlation with the test delta NDCG@10 (with a bootstrap interval over
   runs) and the ship/no-ship table (ship when the signal says the model got better: delta > 0,
   wise >= 0; ``overlap`` at its best in-sample threshold, marked so), and what a guard built on
   it keeps: harmful models shipped (test delta < -0.005) and the share of the total positive gain.

Writes ``<work>/meta_eval.json`` after every run (a killed harness keeps what it measured) and
prints the tables of docs/offline-pairs.md ("Label-free signals"). Run on a quiet machine.
``--rescore`` computes the signals of finished runs again (no training: their embeddings are in
the store), e.g. after a signal's definition changed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchenv import add_load_arguments, loadavg, machine  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("EMBEDFORGE_DATA", ROOT.parent / "shared" / "data"))
#: each set's label-free run: offline pairs only, validation on held-out generated pairs
SETS: dict[str, list[str]] = {
    "icd10": [  # offline pairs from the code descriptions; the inclusion terms unused
        "data.train_queries=false",
        "data.generate=true",
        "data.val_split=null",
        "data.group_negatives=0",
        "generator.strategies=[title_terms]",
    ],
    "legal": ["experiment=legal_summarization"],  # the probe picks the strategies
    "cuad": [
        "experiment=offline_domain_adaptation",  # title; heading -> section, 1 same-contract neg.
        "data.group_negatives=1",  # the recipe the table was measured with (before group batches)
        "data.group_batches=false",
        "data.val_split=null",
        "data.gen_max_docs=1500",
    ],
    "medquad": [  # the generic default strategies
        "data=beir",
        f"data.path={DATA / 'medquad-qa'}",
        "data.name=medquad",
        "data.train_queries=false",
        "data.generate=true",
        "data.val_split=null",
        "data.gen_max_docs=1000",
    ],
}
#: the same subsets and budget for every run (sized for 2 cores: ~1.5 min a run)
COMMON = [
    "data.eval_max_queries=200",
    "data.eval_max_docs=1500",
    "data.val_max_docs=400",
    "data.batch_size=16",
    "model.max_seq_length=128",
    "eval.keep_best=false",
    "logger=none",
    "trainer.max_epochs=100",
    "trainer.val_check_interval=1.0",
    "trainer.check_val_every_n_epoch=1",
    "optim.lr=1e-4",
    "trainer.max_steps=30",
]
#: recipes spanning helpful and harmful: each row changes what it names
RECIPES: dict[str, list[str]] = {
    "default": [],
    "lr2e-5": ["optim.lr=2e-5"],
    "lr1e-3": ["optim.lr=1e-3"],
    "lr3e-4_90steps": ["optim.lr=3e-4", "trainer.max_steps=90"],
    "90steps": ["trainer.max_steps=90"],
    "ict": ["generator.strategies=[ict]"],
    "bm25_negative": ["data.hard_negatives.num=1", "data.hard_negatives.method=bm25"],
}
#: ``ict`` needs passages of >= 20 words: ICD-10's one-line descriptions have none; CUAD's recipe
#: already trains with a negative (same contract): its negatives row is the recipe without it
SUBSTITUTES = {
    ("icd10", "ict"): ["generator.strategies=[title_body]"],
    ("cuad", "bm25_negative"): ["data.group_negatives=0"],
}
#: WiSE interpolations (alpha * fine-tuned + (1 - alpha) * base) scored on each run's test set
TEST_ALPHAS = {"test_delta_half": 0.5, "test_delta_quarter": 0.25, "test_delta_eighth": 0.125}
SIGNALS = ("val_synth", "xstrat", "pseudo", "overlap", "wise", "lexical")
HARM = -0.005  # the bound: no shipped model below this test delta NDCG@10


def run_one(set_name: str, recipe: str, work: Path, env: dict[str, str]) -> Path:
    """``embedforge train`` for one (set, recipe) in a subprocess; reused when it finished."""
    run_dir = work / set_name / recipe
    if (run_dir / "metrics.json").is_file():
        return run_dir
    overrides = SETS[set_name] + COMMON + SUBSTITUTES.get((set_name, recipe), RECIPES[recipe])
    cmd = [sys.executable, "-m", "embedforge", "train", *overrides, f"hydra.run.dir={run_dir}"]
    run_dir.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    with open(run_dir.parent / f"{recipe}.log", "w") as f:
        rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    if rc != 0:
        raise SystemExit(
            f"{set_name}/{recipe}: train exited {rc}; see {run_dir.parent}/{recipe}.log"
        )
    print(f"{set_name}/{recipe}: {time.perf_counter() - t:.0f} s", flush=True)
    return run_dir


class Probe:
    """A set's :class:`~embedforge.generate.label_free.ProbeSet` with the base model (its embeddings
    kept in the store) and pseudo-qrels; built once per set from a run's config."""

    def __init__(self, run_dir: Path, cache: Path):
        from omegaconf import OmegaConf

        from embedforge.config import build
        from embedforge.generate.label_free import lexical_margin, probe_set, pseudo_qrels_set
        from embedforge.models.store import EmbeddingStore
        from embedforge.runs import load_run

        self.cfg, _ = load_run(run_dir)
        self.store = EmbeddingStore(root=str(cache))
        # the documents, sample and caps a run's own guard uses (eval.label_free_guard, seed)
        settings = (
            self.cfg.eval.get("label_free_guard")
            or OmegaConf.load(ROOT / "conf" / "train.yaml").eval.label_free_guard
        )  # runs from before the guard: today's defaults
        self.max_queries = int(settings.max_queries)
        chunks = build(self.cfg.data).chunks()
        self.probe = probe_set(chunks, int(settings.probe_docs), int(self.cfg.seed))
        self.base = self.encoder(self.cfg.model.name_or_path)
        self.base_state = {k: v.clone() for k, v in self.base.model.state_dict().items()}
        self.pseudo = pseudo_qrels_set(self.probe, self.base, self.max_queries)
        self.lexical = lexical_margin(self.probe, self.base, seed=int(self.cfg.seed))

    def lexical_fields(self) -> dict[str, Any]:
        """The set's lexical margin (base - BM25 on every probe query; one value per set, as a
        run's own ``lexical_margin`` guard computes it before training)."""
        m = self.lexical
        return {
            "lexical": -m["margin"],  # BM25's lead over the base model (the signal's direction)
            "lexical_margin": m["margin"],
            "lexical_low": m["low"],
            "lexical_high": m["high"],
            "lexical_queries": m["n_queries"],
        }

    def encoder(self, path: str | Path):
        from embedforge.models.encoder import Encoder

        enc = Encoder.from_pretrained(
            str(path),
            self.cfg.model.get("query_prefix") or "",
            self.cfg.model.get("doc_prefix") or "",
            max_seq_length=int(self.cfg.model.max_seq_length),
        )
        enc.store = self.store
        return enc

    def docs(self, enc) -> np.ndarray:
        return enc.encode(self.probe.docs, "doc", 64, show_progress=False)

    def validation(self, run_dir: Path, ft, metrics: dict) -> dict[str, Any]:
        """``val_synth`` (shipped weights - base on the run's own validation set) with its paired
        interval: the set rebuilt from the run's config as the pipeline built it."""
        from embedforge.config import build
        from embedforge.eval.retrieval import evaluate
        from embedforge.eval.significance import paired_delta
        from embedforge.pipeline import build_sets, generate_pairs, mix_pairs
        from embedforge.runs import load_run

        cfg, _ = load_run(run_dir)
        data = build(cfg.data)
        generated, _ = generate_pairs(cfg, data, self.base)
        pairs = mix_pairs(data.real_pairs(), generated, data.mix_real, data.mix_synthetic, cfg.seed)
        _, val_set, _ = build_sets(data, cfg, pairs, self.base)
        scores = [
            evaluate(enc, val_set, ["ndcg@10"], 64, show_progress=False) for enc in (self.base, ft)
        ]
        ran = (metrics["val"]["base"], metrics["monitor_value"])
        for r, value in zip(scores, ran):
            if abs(r.metrics["ndcg@10"] - value) > 0.005:  # fp32 noise moves a rank or two at most
                rebuilt = r.metrics["ndcg@10"]
                print(
                    f"warning: {run_dir}: rebuilt val set scores {rebuilt:.4f}, the run {value:.4f}"
                )
        qids = sorted(scores[0].per_query)
        base_q, ft_q = ([r.per_query[q]["ndcg@10"] for q in qids] for r in scores)
        d = paired_delta(base_q, ft_q, seed=0)
        return {
            "val_synth": ran[1] - ran[0],  # what the run's guard saw
            "val_synth_low": d["low"],
            "val_synth_high": d["high"],
            "val_synth_p": d["p_value"],
        }

    def signals(self, run_dir: Path, metrics: dict) -> dict[str, Any]:
        from embedforge.generate.label_free import cross_strategy_set, neighbour_overlap, score
        from embedforge.runs import load_run, run_eval_set
        from embedforge.train.wise import interpolate

        trained = set(metrics["generation"].get("by_strategy") or {})
        ft = self.encoder(run_dir / "model")
        out: dict[str, Any] = self.validation(run_dir, ft, metrics)
        xset = cross_strategy_set(self.probe, trained, self.max_queries)
        out["xstrat_queries"] = len(xset.qrels) if xset else 0
        if xset:
            ft_x = score(ft, xset)
            out["xstrat"] = ft_x - score(self.base, xset)
            in_run = metrics.get("label_free") or {}
            if "delta" in in_run and abs(in_run["delta"] - out["xstrat"]) > 1e-4:
                print(f"warning: {run_dir}: the run's own guard gave {in_run['delta']:+.4f}")
            test_set = run_eval_set(load_run(run_dir)[0])
            for key, alpha in TEST_ALPHAS.items():
                mixed = self.encoder(run_dir / "model")
                mixed.model.load_state_dict(
                    interpolate(self.base_state, ft.model.state_dict(), alpha)
                )
                if alpha == 0.5:
                    out["wise"] = ft_x - score(mixed, xset)
                # what the interpolated weights score on the real test set (judging WiSE rules)
                out[key] = score(mixed, test_set) - metrics["baseline"]["ndcg@10"]
        out["pseudo_queries"] = len(self.pseudo.qrels)
        out["pseudo"] = score(ft, self.pseudo) - score(self.base, self.pseudo)
        out["overlap"] = neighbour_overlap(self.docs(self.base), self.docs(ft))
        return out


def spearman(x: list[float], y: list[float], rounds: int = 2000, seed: int = 0) -> dict:
    """Spearman's rho with a bootstrap 95% interval over runs."""
    from scipy.stats import spearmanr

    x, y = np.asarray(x), np.asarray(y)
    rho = float(spearmanr(x, y).statistic)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(rounds):
        i = rng.integers(0, len(x), len(x))
        if len(set(x[i])) > 1 and len(set(y[i])) > 1:
            boots.append(spearmanr(x[i], y[i]).statistic)
    lo, hi = np.percentile(boots, [2.5, 97.5]) if boots else (float("nan"),) * 2
    return {"rho": round(rho, 3), "low": round(float(lo), 3), "high": round(float(hi), 3)}


def guard(ship: list[bool], delta: list[float]) -> dict[str, Any]:
    """What shipping by ``ship`` (else the base model, delta 0) gives over these runs."""
    pos = sum(max(d, 0.0) for d in delta)
    kept = sum(max(d, 0.0) for s, d in zip(ship, delta) if s)
    return {
        "ship_good": sum(s and d > 0 for s, d in zip(ship, delta)),
        "ship_harm": sum(s and d < HARM for s, d in zip(ship, delta)),
        "hold_good": sum((not s) and d > 0 for s, d in zip(ship, delta)),
        "hold_harm": sum((not s) and d < HARM for s, d in zip(ship, delta)),
        "shipped": sum(ship),
        "worst_shipped": min([d for s, d in zip(ship, delta) if s], default=None),
        "gain_kept": round(kept / pos, 3) if pos else None,
    }


def bm25_ahead(r: dict) -> bool:
    """The ``lexical_margin`` guard's decision: BM25 significantly ahead of the base model (the
    upper bound of base - BM25 below 0)."""
    return r.get("lexical_high") is not None and r["lexical_high"] < 0


def policies(rows: list[dict]) -> dict[str, Any]:
    """Shipping rules over the runs, each judged by the test delta of what it ships (base: 0):
    a signal deciding whether to ship, and what (the trained weights or one of the
    :data:`TEST_ALPHAS` interpolations with the base, fixed or chosen by the same signal)."""
    have = [r for r in rows if r.get("xstrat") is not None and set(TEST_ALPHAS) <= set(r)]
    full = [r["test_delta"] for r in have]
    pos = sum(max(d, 0.0) for d in full)

    def judged(shipped: list[float]) -> dict[str, Any]:
        return {
            "harm_shipped": sum(d < HARM for d in shipped),
            "worst": round(min(shipped), 4),
            "gain_kept": round(sum(shipped) / pos, 3) if pos else None,
            "total": round(sum(shipped), 4),
        }

    def by_xstrat(r: dict) -> float:
        half = r["xstrat"] - r["wise"]  # the signal at alpha 0.5
        if max(r["xstrat"], half) <= 0:
            return 0.0
        return r["test_delta"] if r["xstrat"] >= half else r["test_delta_half"]

    return {
        "runs": len(have),
        "ship all (alpha 1)": judged(full),
        "alpha 1 if val_synth > 0, else base (before this issue)": judged(
            [r["test_delta"] if r["val_synth"] > 0 else 0.0 for r in have]
        ),
        "alpha 0.5 if val_synth > 0, else base": judged(
            [r["test_delta_half"] if r["val_synth"] > 0 else 0.0 for r in have]
        ),
        "alpha 0.5 if val_synth rose significantly (p < 0.05), else base": judged(
            [
                r["test_delta_half"]
                if r["val_synth"] > 0 and r.get("val_synth_p", 1) < 0.05
                else 0.0
                for r in have
            ]
        ),
        "xstrat > 0, else base": judged(
            [r["test_delta"] if r["xstrat"] > 0 else 0.0 for r in have]
        ),
        "xstrat picks alpha 1 / 0.5 / base": judged([by_xstrat(r) for r in have]),
        "alpha 0.5 always": judged([r["test_delta_half"] for r in have]),
        "alpha 0.25 if val_synth > 0, else base": judged(
            [r["test_delta_quarter"] if r["val_synth"] > 0 else 0.0 for r in have]
        ),
        "alpha 0.25 if val_synth > 0 and BM25 significantly ahead, else base": judged(
            [r["test_delta_quarter"] if r["val_synth"] > 0 and bm25_ahead(r) else 0.0 for r in have]
        ),
        "alpha 0.5 if val_synth > 0 and BM25 significantly ahead, else base": judged(
            [r["test_delta_half"] if r["val_synth"] > 0 and bm25_ahead(r) else 0.0 for r in have]
        ),
        "alpha 1 if val_synth > 0 and BM25 significantly ahead, else base": judged(
            [r["test_delta"] if r["val_synth"] > 0 and bm25_ahead(r) else 0.0 for r in have]
        ),
        "alpha 0.125 if val_synth > 0, else base": judged(
            [r["test_delta_eighth"] if r["val_synth"] > 0 else 0.0 for r in have]
        ),
        "alpha 0.25 if xstrat > 0, else base": judged(
            [r["test_delta_quarter"] if r["xstrat"] > 0 else 0.0 for r in have]
        ),
        "alpha 0.5 if xstrat > 0, else base": judged(
            [r["test_delta_half"] if r["xstrat"] > 0 else 0.0 for r in have]
        ),
        "alpha 0.5 if xstrat at 0.5 > 0, else base": judged(
            [r["test_delta_half"] if r["xstrat"] - r["wise"] > 0 else 0.0 for r in have]
        ),
        "alpha 1 if wise >= 0, else base": judged(
            [r["test_delta"] if r["wise"] >= 0 else 0.0 for r in have]
        ),
    }


def within_set(rows: list[dict], signal: str) -> dict[str, float]:
    """Spearman's rho of ``signal`` with the test delta among each set's runs, and their mean:
    how well it ranks one corpus's recipes (its zero point aside)."""
    from scipy.stats import spearmanr

    per = {}
    for name in sorted({r["set"] for r in rows}):
        mine = [r for r in rows if r["set"] == name]
        if len(mine) >= 3:
            rho = spearmanr([r[signal] for r in mine], [r["test_delta"] for r in mine]).statistic
            per[name] = round(float(rho), 2)
    return per | {"mean": round(float(np.mean(list(per.values()))), 2)} if per else {}


def analyse(rows: list[dict]) -> dict[str, Any]:
    delta = [r["test_delta"] for r in rows]
    out: dict[str, Any] = {"runs": len(rows), "unguarded": guard([True] * len(rows), delta)}
    out["policies"] = policies(rows)
    for s in SIGNALS:
        have = [r for r in rows if r.get(s) is not None]
        if len(have) < 4:
            continue
        xs, ds = [r[s] for r in have], [r["test_delta"] for r in have]
        rec: dict[str, Any] = {"n": len(have), "spearman": spearman(xs, ds)}
        rec["within_set"] = within_set(have, s) if s != "lexical" else {}  # one value a set
        if s == "lexical":
            rec["guard"] = guard([bm25_ahead(r) for r in have], ds)
        elif s == "overlap":  # no natural zero: the best in-sample threshold (optimistic)
            best = max(
                (guard([x >= t for x in xs], ds) | {"threshold": t} for t in sorted(set(xs))),
                key=lambda g: (-g["ship_harm"], g["gain_kept"] or 0),
            )
            rec["guard"] = best
        else:
            rec["guard"] = guard([x > 0 if s != "wise" else x >= 0 for x in xs], ds)
        out[s] = rec
    return out


def table(rows: list[dict], analysis: dict) -> str:
    lines = [
        "| set | recipe | test ΔNDCG@10 [95% CI] | α 0.5 test Δ | α 0.25 test Δ | α 0.125 test Δ"
        " | val_synth [95% CI] (queries) | xstrat | pseudo | overlap | wise"
        " | BM25 lead [95% CI] |",
        "|---|---|---|---:|---:|---:|---|---:|---:|---:|---:|---|",
    ]
    f = lambda v: "–" if v is None else f"{v:+.4f}"  # noqa: E731
    neg = lambda v: None if v is None else -v  # noqa: E731
    two = lambda v: "–" if v is None else f"{v:+.2f}"  # noqa: E731
    for r in rows:
        lines.append(
            f"| {r['set']} | {r['recipe']} | {r['test_delta']:+.4f} [{r['test_low']:+.3f},"
            f" {r['test_high']:+.3f}] | {f(r.get('test_delta_half'))}"
            f" | {f(r.get('test_delta_quarter'))} | {f(r.get('test_delta_eighth'))}"
            f" | {f(r.get('val_synth'))}"
            f" [{f(r.get('val_synth_low'))}, {f(r.get('val_synth_high'))}] ({r['val_queries']})"
            f" | {f(r.get('xstrat'))} |"
            f" {f(r.get('pseudo'))} | {r['overlap']:.3f} | {f(r.get('wise'))} |"
            f" {f(r.get('lexical'))} [{f(neg(r.get('lexical_high')))},"
            f" {f(neg(r.get('lexical_low')))}] |"
        )
    lines += [
        "",
        "| signal | runs | Spearman ρ with test Δ [95% CI] | ρ within a set (mean) | ship good"
        " | ship harm (<−0.005) | hold good | hold harm | gain kept |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    u = analysis["unguarded"]
    lines.append(
        f"| none (ship all) | {analysis['runs']} | – | – | {u['ship_good']} | {u['ship_harm']} | 0 | 0"
        f" | {u['gain_kept']} |"
    )
    for s in SIGNALS:
        if s not in analysis:
            continue
        a, g = analysis[s], analysis[s]["guard"]
        sp = a["spearman"]
        name = s + (f" ≥ {g['threshold']:.3f} (in-sample)" if "threshold" in g else "")
        lines.append(
            f"| {name} | {a['n']} | {sp['rho']:+.3f} [{sp['low']:+.3f}, {sp['high']:+.3f}] |"
            f" {two(a['within_set'].get('mean'))} |"
            f" {g['ship_good']} | {g['ship_harm']} | {g['hold_good']} | {g['hold_harm']} |"
            f" {g['gain_kept']} |"
        )
    lines += [
        "",
        "| shipping rule | harmful shipped (<−0.005) | worst shipped | total Δ | gain kept |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, p in analysis["policies"].items():
        if isinstance(p, dict):
            lines.append(
                f"| {name} | {p['harm_shipped']} | {p['worst']:+.4f} | {p['total']:+.4f} |"
                f" {p['gain_kept']} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    ap.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    ap.add_argument("--work", type=Path, default=ROOT / "outputs" / "bench" / "meta_eval")
    ap.add_argument(
        "--rescore", action="store_true", help="compute the signals of finished runs again"
    )
    add_load_arguments(ap)
    args = ap.parse_args(argv)
    env_info = machine(max_load=args.max_load, force=args.force)
    work = args.work.resolve()
    env = {
        **os.environ,
        "EMBEDFORGE_CACHE": str(work / "cache"),
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": "offline",
        "TOKENIZERS_PARALLELISM": "false",
    }
    os.environ.update({k: env[k] for k in ("HF_HUB_OFFLINE", "TOKENIZERS_PARALLELISM")})
    out_path = work / "meta_eval.json"
    done = json.loads(out_path.read_text()) if out_path.is_file() else {"rows": []}
    rows = {(r["set"], r["recipe"]): r for r in done["rows"]}
    for set_name in args.sets:
        probe = None
        for recipe in args.recipes:
            if set(TEST_ALPHAS) <= set(rows.get((set_name, recipe), {})) and not args.rescore:
                continue
            run_dir = run_one(set_name, recipe, work, env)
            m = json.loads((run_dir / "metrics.json").read_text())
            probe = probe or Probe(run_dir, work / "cache" / "embeddings")
            sig = m["significance"]["ndcg@10"]
            rows[(set_name, recipe)] = {
                "set": set_name,
                "recipe": recipe,
                "run_dir": str(run_dir),
                "test_base": m["baseline"]["ndcg@10"],
                "test_delta": m["delta"]["ndcg@10"],
                "test_low": sig["low"],
                "test_high": sig["high"],
                "test_queries": m["n_queries"],
                "recall5_delta": m["delta"]["recall@5"],
                "strategies": sorted(m["generation"].get("by_strategy") or {}),
                "train_pairs": m["n_train_pairs"],
                "steps": m["training"]["steps"],
                "lr": m["training"]["lr"],
                "val_queries": m["val_set"]["n_queries"],
                **probe.signals(run_dir, m),
                **probe.lexical_fields(),
                "load": loadavg(),
            }
            ordered = sorted(rows.values(), key=lambda r: (list(SETS).index(r["set"]), r["recipe"]))
            out_path.write_text(
                json.dumps(
                    {"machine": env_info, "rows": ordered, "analysis": analyse(ordered)}, indent=1
                )
            )
            print(json.dumps(rows[(set_name, recipe)]), flush=True)
        mine = [r for r in rows.values() if r["set"] == set_name]
        if mine and any("lexical_margin" not in r for r in mine):  # rows from before the check
            probe = probe or Probe(Path(mine[0]["run_dir"]), work / "cache" / "embeddings")
            for r in mine:
                r.update(probe.lexical_fields())
    ordered = sorted(rows.values(), key=lambda r: (list(SETS).index(r["set"]), r["recipe"]))
    analysis = analyse(ordered)
    out_path.write_text(
        json.dumps({"machine": env_info, "rows": ordered, "analysis": analysis}, indent=1)
    )
    print(table(ordered, analysis))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
