"""``write_model_card``: model_dir/README.md with provenance, metrics and how to load the model.

The card sentence-transformers writes on save is kept; its Hub metadata gains ``base_model`` (a
Hub id), ``license``, ``tags``, ``datasets`` and a ``model-index`` with NDCG@10 / Recall@5 on the
eval set, and our section (between ``SECTION_START`` / ``SECTION_END``, replaced on a rewrite) adds
the baseline-vs-fine-tuned table, usage and the training config.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from embedforge.eval.metrics import DEFAULT_METRICS
from embedforge.eval.significance import interval_text
from embedforge.io import atomic_write_text
from embedforge.runs import RunMetrics

SECTION_START, SECTION_END = "<!-- embedforge -->", "<!-- /embedforge -->"
#: the metrics of the card's model-index: (our name, the Hub's metric type, its display name)
CARD_METRICS = (("ndcg@10", "ndcg_at_10", "NDCG@10"), ("recall@5", "recall_at_5", "Recall@5"))


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _metrics_table(metrics: RunMetrics) -> str:
    base, tuned = metrics.baseline, metrics.finetuned
    keys = [k for k in DEFAULT_METRICS if k in base or k in tuned]
    keys += sorted(k for k in {**base, **tuned} if k not in keys)
    sig = metrics.significance  # paired bootstrap 95% interval of each delta (newer runs)
    rows = ["| metric | baseline | fine-tuned | delta |" + (" 95% CI |" if sig else "")]
    rows.append("|---|---:|---:|---:|" + ("---:|" if sig else ""))
    for k in keys:
        b, t = base.get(k), tuned.get(k)
        d = t - b if isinstance(b, (int, float)) and isinstance(t, (int, float)) else ""
        row = f"| {k} | {_fmt(b)} | {_fmt(t)} | {f'{d:+.4f}' if d != '' else ''} |"
        rows.append(row + (f" {interval_text(sig.get(k))} |" if sig else ""))
    return "\n".join(rows)


def _data_lines(data: Any) -> str:
    if isinstance(data, dict):
        return "\n".join(f"- **{k}**: {v}" for k, v in data.items()) or "- (none recorded)"
    if isinstance(data, (list, tuple)):
        return "\n".join(f"- {v}" for v in data) or "- (none recorded)"
    return f"- {data}" if data else "- (none recorded)"


def _usage(model_dir: Path, name: str) -> str:
    """How to load, export and serve the model."""
    export_source = model_dir.parent if (model_dir.parent / "metrics.json").exists() else model_dir
    return f"""## Usage
```python
from sentence_transformers import SentenceTransformer

model = SentenceTransformer("{model_dir}")
q = model.encode_query(["what happens to my data if I delete my account?"])
d = model.encode_document(["We delete your personal data within 30 days ..."])
print(model.similarity(q, d))
```

### ONNX
```bash
python scripts/export.py {export_source}   # also writes onnx/ here, in sentence-transformers' layout
```
```python
model = SentenceTransformer("{model_dir}", backend="onnx",
                            model_kwargs={{"file_name": "onnx/model_qint8_avx512_vnni.onnx"}})  # int8
```

### Server (OpenAI-compatible)
```bash
python scripts/serve.py {model_dir} --backend torch        # or: <export dir> --backend onnx
```
```python
import openai

client = openai.OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="x")
client.embeddings.create(input=["..."], model="{name}-query")  # or {name}-document
```

"""


def base_model_info(name_or_path: str) -> dict[str, Any]:
    """``{"base_model": Hub id or None, "license": the base model card's license or None}``."""
    from embedforge.models.encoder import hub_id, resolve_model_path

    info: dict[str, Any] = {"base_model": hub_id(name_or_path), "license": None}
    readme = Path(resolve_model_path(name_or_path)) / "README.md"
    if readme.is_file():
        from huggingface_hub import ModelCard

        info["license"] = ModelCard(
            readme.read_text(errors="ignore"), ignore_metadata_errors=True
        ).data.license
    return info


def card_metadata(data, name: str, info: dict[str, Any], metrics: RunMetrics) -> None:
    """Fill a ``huggingface_hub.ModelCardData`` with our metadata (in place)."""
    from huggingface_hub import EvalResult

    if info.get("base_model"):
        data.base_model = info["base_model"]
    if info.get("license"):
        data.license = info["license"]
    data.tags = list(dict.fromkeys([*(data.tags or []), "sentence-transformers", "embedforge"]))
    data.library_name = data.library_name or "sentence-transformers"
    data.pipeline_tag = data.pipeline_tag or "sentence-similarity"
    dataset = str(metrics.eval_set.get("name") or "eval").split("/")[0]
    data.datasets = list(
        dict.fromkeys([*(data.datasets or []), *(info.get("datasets") or [dataset])])
    )
    data.model_name = name
    data.eval_results = [
        EvalResult(
            task_type="information-retrieval",
            task_name="Information Retrieval",
            dataset_type=dataset,
            dataset_name=dataset,
            dataset_split=metrics.eval_split,
            metric_type=hub_type,
            metric_name=shown,
            metric_value=float(metrics.finetuned[ours]),
        )
        for ours, hub_type, shown in CARD_METRICS
        if ours in metrics.finetuned
    ] or None


def write_model_card(model_dir: str | Path, info: dict[str, Any]) -> Path:
    """Write ``model_dir/README.md``: sentence-transformers' card with our metadata and section.

    Args:
        model_dir: the SentenceTransformer dir (``run_dir/model``).
        info: ``base_model`` (a Hub id or None), ``license``, ``datasets`` (Hub dataset ids,
            default the eval set's name), ``data`` (summary: sources and counts, dict or list),
            ``config`` (the composed config as a YAML string), ``metrics`` (the run's
            :class:`~embedforge.runs.RunMetrics`); optional ``name``, ``prompts``
            ({"query", "document"}).

    Returns:
        The README path.
    """
    from huggingface_hub import ModelCard

    model_dir = Path(model_dir)
    name = info.get("name") or model_dir.resolve().parent.name or model_dir.name
    metrics: RunMetrics = info.get("metrics") or RunMetrics()
    readme = model_dir / "README.md"
    card = ModelCard(readme.read_text() if readme.is_file() else "", ignore_metadata_errors=True)
    card_metadata(card.data, name, info, metrics)
    body = re.sub(
        rf"\n*{re.escape(SECTION_START)}.*?{re.escape(SECTION_END)}\n*",
        "\n\n",
        card.text,
        flags=re.S,
    ).strip()
    section = f"{SECTION_START}\n{_section(model_dir, name, info, metrics)}\n{SECTION_END}"
    text = f"---\n{card.data.to_yaml()}\n---\n\n{section}\n\n{body}\n"
    return atomic_write_text(readme, text)


def _section(model_dir: Path, name: str, info: dict[str, Any], metrics: RunMetrics) -> str:
    """Our part of the card: what was fine-tuned from what, data, evaluation, usage, config."""
    prompts = info.get("prompts") or {}
    if not prompts:
        from embedforge.export.onnx_encoder import read_prompts

        prompts = read_prompts(model_dir)
    base = info.get("base_model") or "a local model"
    eval_line = ", ".join(
        f"{k}: {v}"
        for k, v in {
            "set": metrics.eval_set.get("name"),
            "split": metrics.eval_split,
            "queries": metrics.n_queries,
            "documents": metrics.n_docs,
        }.items()
        if v is not None
    )
    return f"""# {name}

A text-embedding model fine-tuned with embedforge from **{base}**.
Query prompt: `{prompts.get("query", "")!r}`; document prompt: `{prompts.get("document", "")!r}`
(applied by `encode_query` / `encode_document` and by the server's `input_type`).

## Training data
{_data_lines(info.get("data"))}
- **training pairs**: {metrics.n_train_pairs or "n/a"}

## Evaluation
Exact dense retrieval, cosine similarity ({eval_line or "eval set not recorded"}).
Baseline = the base model with the same prompts on the same eval set.

{_metrics_table(metrics)}

{_usage(model_dir, name)}## Training config
```yaml
{(info.get("config") or "# not recorded").rstrip()}
```
"""
