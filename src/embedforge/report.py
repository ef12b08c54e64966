"""``report.md``: a run's ``metrics.json`` (:class:`~embedforge.runs.RunMetrics`) for a reader."""

from __future__ import annotations

from pathlib import Path

from embedforge.eval.ship import SHIP_METRIC
from embedforge.eval.significance import interval_text
from embedforge.generate.label_free import LEXICAL, trust_text
from embedforge.io import atomic_write_text
from embedforge.runs import RunMetrics


def write_report(run_dir: Path, m: RunMetrics) -> Path:
    """Write ``run_dir/report.md``: results, the shipped model and the gate, data, training, time."""
    lines = [f"# embedforge run: {m.task}", ""]
    if m.eval_note:  # the headline says what the numbers below can and cannot say
        lines += [f"**{m.eval_note[0].upper()}{m.eval_note[1:]}.**", ""]
    if m.label_free:  # and what chose the model when no real query could
        text = trust_text(m.label_free)
        lines += [f"**Model {text}.**", ""]
    lines += _results(m)
    lines += _dims(m)
    if m.per_query is not None:
        from embedforge.per_query import changes_markdown

        lines += changes_markdown(m.per_query)
    lines += _data(m) + _training(m)
    lines += [
        "",
        f"Reproduce: `python train.py --config-path {run_dir.resolve()}/.hydra --config-name config`",
        "",
    ]
    return atomic_write_text(run_dir / "report.md", "\n".join(lines))


def _results(m: RunMetrics) -> list[str]:
    how = "scored 0, as BEIR" if m.empty_queries == "zero" else "not scored"
    empty = f"; {m.n_skipped} without a relevant document, {how}" if m.n_skipped else ""
    kind = "generated " if m.eval_note else ""
    lines = [
        f"Eval set **{m.eval_set['name']}**: {m.n_queries} {kind}queries scored, each metric"
        f" their mean{empty}; {m.n_docs} documents searched{_backend(m)}.",
        "",
    ]
    lines += delta_table(m.baseline, m.finetuned, m.delta, m.significance)
    best = (
        f"best checkpoint {m.val['best']:.4f}"
        if m.val.get("best") is not None
        else "no validation ran during training (trainer.max_steps below"
        " trainer.val_check_interval), so no best checkpoint"
    )
    lines += [
        "",
        f"Model shipped as `model/`: **{m.selected}** (validation {m.monitor}: base"
        f" {m.val['base']:.4f}, {best}, last {m.val['last']:.4f}).",
        "",
    ]
    if m.mix_choice:
        lines += _mix_choice(m.mix_choice)
    if m.label_free:
        lines += _label_free(m.label_free)
    if m.wise:
        lines += _wise(m)
    if m.selected == "base":
        lines += [
            "**No checkpoint beat the base model on validation; the base model is kept"
            " (fine-tuned = baseline).**",
            "",
        ]
    verdict = "pass" if m.ship["passed"] else "FAIL (export will refuse without --force)"
    gated = m.ship.get("gated_on") or f"{SHIP_METRIC} on the eval set"
    noise = " The gain is **within noise** (not significant)." if m.ship.get("within_noise") else ""
    lines += [
        f"Ship gate on {gated}: gain {m.ship_gain:+.4f} vs required"
        f" {m.ship['min_gain']:+.4f}"
        f"{', significance required' if m.ship.get('require_significant') else ''}:"
        f" **{verdict}**"
        + (" (generated queries only: not evidence on real ones)." if m.eval_note else ".")
        + noise,
        "",
    ]
    return lines + (_judged(m.judged) if m.judged else [])


def delta_table(
    baseline: dict[str, float],
    finetuned: dict[str, float],
    delta: dict[str, float],
    significance: dict[str, dict],
) -> list[str]:
    """Baseline / fine-tuned / delta per metric, with the delta's 95% interval and paired p-value
    (:mod:`embedforge.eval.significance`) where the run has them."""
    if not significance:
        lines = ["| metric | baseline | fine-tuned | delta |", "|---|---:|---:|---:|"]
    else:
        lines = [
            "| metric | baseline | fine-tuned | delta | 95% CI (paired bootstrap) | p (paired) |",
            "|---|---:|---:|---:|---:|---:|",
        ]
    for k in finetuned:
        row = (
            f"| {k} | {baseline.get(k, float('nan')):.4f} | {finetuned[k]:.4f}"
            f" | {delta.get(k, 0):+.4f} |"
        )
        if significance:
            s = significance.get(k)
            row += f" {interval_text(s)} | {s['p_value']:.3g} |" if s else " | |"
        lines.append(row)
    return lines


def _judged(j: dict) -> list[str]:
    """The person-judged set (``embedforge judge``): what the numbers rest on, with intervals."""
    lines = [
        "## Judged queries",
        "",
        f"On **{j['n_queries']} queries** judged by a person ({j['n_judgements']} judgements of"
        f" pooled documents, `judged/`), {j.get('n_scored', j['n_queries'])} with a relevant"
        " document:",
        "",
    ]
    lines += delta_table(j["baseline"], j["finetuned"], j["delta"], j.get("significance") or {})
    if j.get("ship"):
        ok = "pass" if j["ship"]["passed"] else "FAIL (export and push will refuse without --force)"
        noise = ", **within noise**" if j["ship"].get("within_noise") else ""
        lines += [
            "",
            f"Ship gate on the judged queries (export and push use these):"
            f" {SHIP_METRIC.upper()} gain {j['delta'].get(SHIP_METRIC, 0):+.4f}{noise}: **{ok}**.",
        ]
    need = (j.get("queries_needed") or {}).get(SHIP_METRIC)
    sig = (j.get("significance") or {}).get(SHIP_METRIC) or {}
    if need and not sig.get("significant"):
        more = max(0, need - int(sig.get("n", 0)))
        lines += [
            "",
            f"The {SHIP_METRIC} delta is not significant yet: about **{more} more queries** like"
            f" these ({need} in all) would make a delta of {sig.get('delta', 0):+.4f} significant"
            " (80% power, normal approximation with the observed per-query spread).",
        ]
    return lines + [""]


def _dims(m: RunMetrics) -> list[str]:
    """The ship metric of the truncated embeddings per dimension (matryoshka runs)."""
    fine = m.matryoshka.get("finetuned") or {}
    if not fine:
        return []
    base = m.matryoshka.get("baseline") or {}
    lines = [
        f"{SHIP_METRIC.upper()} per embedding dimension (first k coordinates, renormalized):",
        "",
        "| dim | baseline | fine-tuned | delta |",
        "|---:|---:|---:|---:|",
    ]
    for dim, scores in fine.items():
        b = (base.get(dim) or {}).get(SHIP_METRIC, float("nan"))
        f = scores[SHIP_METRIC]
        lines.append(f"| {dim} | {b:.4f} | {f:.4f} | {f - b:+.4f} |")
    return lines + [""]


def _mix_choice(c: dict) -> list[str]:
    """How real validation chose the training pairs (``metrics.json`` ``mix_choice``)."""
    if c.get("decided_by") == LEXICAL:
        m = c["lexical_margin"]
        return [
            f"Training pairs: **{c['chosen']}**, chosen without probes: on {m['n_queries']}"
            f" offline queries of the documents the base model scores {m['base']:.4f} and BM25"
            f" {m['bm25']:.4f} (margin {m['margin']:+.4f} [{m['low']:+.4f}, {m['high']:+.4f}]),"
            " so BM25 is not significantly ahead, where offline pairs were measured to help"
            f" ({c['seconds']:.0f} s; `data.mix_select_check=null`: probe anyway).",
            "",
        ]
    scores = ", ".join(
        f"{name} {t[f'val/{SHIP_METRIC}']:.4f} ({t['pairs']:,} pairs)"
        for name, t in c["tried"].items()
    )
    d = c["mixed_minus_real"]
    continued = (
        f"; training continued from the chosen probe's step {c['steps_each']}"
        if c.get("continue_from")
        else ""
    )
    return [
        f"Training pairs chosen on validation: **{c['chosen']}** ({SHIP_METRIC} of"
        f" {c['n_queries']} real queries ({c['val_set']}) after {c['steps_each']} steps each from"
        f" the base: {scores}; generated pairs' effect {d['delta']:+.4f}"
        f" [{d['low']:+.4f}, {d['high']:+.4f}]; {c['extra_steps']} extra steps,"
        f" {c['seconds']:.0f} s{continued}; `data.mix_select_steps=0`: off).",
        "",
    ]


def _wise(m: RunMetrics) -> list[str]:
    """The weight-interpolation curve (``eval.wise_alphas``): alpha 0 = base, 1 = fine-tuned."""
    w = m.wise or {}
    lines = [
        f"Weight interpolation (WiSE-FT) of base and {w['endpoint']}: alpha"
        f" **{w['alpha']:g}** shipped (validation {m.monitor}).",
        "",
        "| alpha | " + " | ".join(f"{a:g}" for a in w["alphas"]) + " |",
        "|---|" + "---:|" * len(w["alphas"]),
        f"| {m.monitor} | " + " | ".join(f"{v:.4f}" for v in w["val"]) + " |",
        "",
    ]
    return lines


def _data(m: RunMetrics) -> list[str]:
    by_source = ", ".join(f"{k}: {v}" for k, v in m.pairs_by_source.items())
    vs = m.val_set
    base = m.val.get("base")
    shown = f"; base {m.monitor} {base:.4f}" if isinstance(base, int | float) else ""
    lines = [
        "## Data",
        "",
        f"- training pairs: {m.n_train_pairs} ({by_source})",
        f"- validation: **{vs.get('kind', 'unrecorded')}** {vs['name']} ({vs['n_queries']} queries,"
        f" {vs['n_docs']} docs{shown})",
    ]
    if vs.get("guard"):
        lines.append(f"- validation hardness guard: {vs['guard']}")
    lines += [f"- eval {k}: {v}" for k, v in m.eval_set.items()]
    if m.hard_negatives:
        hn = m.hard_negatives
        label = (
            "group negatives (same group as the positive)"
            if hn.get("scope") == "group"
            else "hard negatives (mined with the base model)"
        )
        lines.append(f"- {label}: {hn}")
    lines += _generation(m.generation)
    if m.pair_diagnostics:
        from embedforge.data.diagnostics import diagnostics_markdown

        lines += ["", diagnostics_markdown(m.pair_diagnostics)]
    return lines


def _generation(g: dict | None) -> list[str]:
    """The generator's stats; the strategy probe's table when ``strategies=auto`` chose."""
    if not g:
        return []
    lines = [f"- generated: {', '.join(f'{k}: {v}' for k, v in g.items() if k != 'probe')}"]
    probe = g.get("probe")
    if probe:
        lo, hi = probe["mrr_band"]
        lines += [
            "",
            f"Strategy probe (base model, up to {probe['pairs']} pairs each, band"
            f" MRR@10 in [{lo}, {hi}]): chose {', '.join(probe['chosen'])}.",
            "",
            "| strategy | pairs | MRR@10 | Recall@1 | chosen |",
            "|---|---:|---:|---:|---|",
        ]
        for r in probe["table"]:
            mrr, r1 = r.get("mrr@10"), r.get("recall@1")
            lines.append(
                f"| {r['strategy']} | {r['pairs']} | {'-' if mrr is None else f'{mrr:.3f}'}"
                f" | {'-' if r1 is None else f'{r1:.3f}'} | {'yes' if r['chosen'] else ''} |"
            )
    return lines


def _training(m: RunMetrics) -> list[str]:
    lines = ["", "## Training", ""]
    lines += [f"- {k}: {v}" for k, v in m.training.items()]
    lines += ["", "## Wall time (s)", "", "| stage | seconds |", "|---|---:|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in m.seconds.items()]
    return lines


def _backend(m: RunMetrics) -> str:
    """``; encoded with onnx`` / the ONNX fallback's reason, or nothing for plain torch."""
    notes = []
    for which, rec in (m.eval_backend or {}).items():
        if rec.get("requested", "torch") == "torch":
            continue
        if rec.get("used") == rec.get("requested"):
            notes.append(f"{which} encoded with {rec['used']}")
        else:
            notes.append(f"{which} fell back to {rec.get('used')}: {rec.get('fallback')}")
    return "; " + "; ".join(notes) if notes else ""


def _label_free(r: dict) -> list[str]:
    """The label-free guard's check (``metrics.json`` ``label_free``)."""
    if not r.get("checked", True):
        margin = (
            f" (before training: base {r['base']:.4f}, BM25 {r['bm25']:.4f}, margin"
            f" {r['margin']:+.4f} [{r['low']:+.4f}, {r['high']:+.4f}])"
            if "margin" in r
            else ""
        )
        return [
            f"Label-free guard ({r['signal']}): not needed, validation already kept the base"
            f" model{margin}.",
            "",
        ]
    verdict = (
        f"the interpolation {r['alpha']:g} x fine-tuned + {1 - r['alpha']:g} x base is shipped"
        if r.get("alpha") is not None
        else "the fine-tuned model is shipped"
        if r["supports"]
        else f"**the base model is shipped** instead of {r['overruled']}"
        if r.get("overruled")
        else "the trained weights are shipped anyway (eval.keep_best=false)"
    )
    values = (
        f" ({r['n_queries']} queries): base {r['base']:.4f}, fine-tuned {r['finetuned']:.4f}"
        f" ({r['delta']:+.4f}), {'rose' if r['supports'] else 'did not rise'}"
        if "delta" in r
        else f" ({r['n_queries']} generated queries of {r['probe_docs']} documents, before"
        f" training): base {r['base']:.4f}, BM25 {r['bm25']:.4f}, margin {r['margin']:+.4f}"
        f" [{r['low']:+.4f}, {r['high']:+.4f}],"
        f" {'BM25 ahead' if r['supports'] else 'BM25 not significantly ahead'}"
        if "margin" in r
        else ""
    )
    trust = r.get("trust")
    within = (
        f" ({trust['within_set']:+.2f} within a set)"
        if trust and trust.get("within_set") is not None
        else f" (one value per corpus: {trust['corpora']} corpora, found on the same runs)"
        if trust
        else ""
    )
    measured = (
        f" Over {trust['runs']} label-free runs on sets with real test queries this signal"
        f" predicted the test change with Spearman {trust['spearman']:+.2f}"
        f" [{trust['low']:+.2f}, {trust['high']:+.2f}]{within};"
        f" shipping the {trust['alpha']:g} interpolation only when it {'held' if 'margin' in r else 'rose'} shipped"
        f" {trust['harm_shipped']}"
        f" harmful model(s) and kept {trust['gain_kept']:.0%} of the gain (docs/offline-pairs.md)."
        if trust
        else ""
    )
    return [
        f"Label-free guard: {r['signal']} ({r['measures']}){values}: {verdict}." + measured,
        "",
    ]
