"""``write_model_card``: model_dir/README.md with provenance, metrics and how to load the model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from embedforge.eval.metrics import DEFAULT_METRICS
from embedforge.io import atomic_write_text
from embedforge.runs import RunMetrics


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _metrics_table(metrics: RunMetrics) -> str:
    base, tuned = metrics.baseline, metrics.finetuned
    keys = [k for k in DEFAULT_METRICS if k in base or k in tuned]
    keys += sorted(k for k in {**base, **tuned} if k not in keys)
    rows = ["| metric | baseline | fine-tuned | delta |", "|---|---:|---:|---:|"]
    for k in keys:
        b, t = base.get(k), tuned.get(k)
        d = t - b if isinstance(b, (int, float)) and isinstance(t, (int, float)) else ""
        rows.append(f"| {k} | {_fmt(b)} | {_fmt(t)} | {f'{d:+.4f}' if d != '' else ''} |")
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

### ONNX (pooling and normalization are inside the graph)
```bash
python scripts/export.py {export_source}
```
```python
from embedforge.export.onnx_encoder import OnnxEncoder

enc = OnnxEncoder("<export dir>/int8")  # or fp32; see export_report.json for parity and metrics
emb = enc.encode(["..."], "query")       # (N, D) float32, normalized
```

### Server (OpenAI-compatible)
```bash
python scripts/serve.py {model_dir} --backend torch        # or: <export dir> --backend onnx
```
```python
import openai

client = openai.OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="x")
client.embeddings.create(input=["..."], model="{name}", extra_body={{"input_type": "query"}})
```

"""


def write_model_card(model_dir: str | Path, info: dict[str, Any]) -> Path:
    """Write ``model_dir/README.md``.

    Args:
        model_dir: the SentenceTransformer dir (``run_dir/model``).
        info: ``base_model`` (str), ``data`` (summary: sources and counts, dict or list),
            ``config`` (the composed config as a YAML string), ``metrics`` (the run's
            :class:`~embedforge.runs.RunMetrics`); optional ``name``, ``prompts``
            ({"query", "document"}).

    Returns:
        The README path.
    """
    model_dir = Path(model_dir)
    name = info.get("name") or model_dir.resolve().parent.name or model_dir.name
    metrics: RunMetrics = info.get("metrics") or RunMetrics()
    prompts = info.get("prompts") or {}
    if not prompts:
        from embedforge.export.onnx_encoder import read_prompts

        prompts = read_prompts(model_dir)
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
    text = f"""---
library_name: sentence-transformers
pipeline_tag: sentence-similarity
base_model: {info.get("base_model", "unknown")}
tags: [sentence-transformers, feature-extraction, embedforge]
---

# {name}

A text-embedding model fine-tuned with embedforge from **{info.get("base_model", "unknown")}**.
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
    return atomic_write_text(model_dir / "README.md", text)
