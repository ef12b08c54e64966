import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from embedforge.cli.generate import run
from embedforge.errors import EmbedforgeError
from embedforge.generate.anthropic_backend import AnthropicGenerator
from embedforge.generate.openai_backend import OpenAIGenerator

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / ".." / "shared" / "data" / "legal-summarization"


def cfg_for(tmp_path, *overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        return compose(
            "train",
            overrides=["data=beir", f"data.path={DATA}", "data.gen_max_docs=4", *overrides],
        )


def test_llm_generator_configs_compose_and_instantiate(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBEDFORGE_CACHE", str(tmp_path))
    for name, cls, model in [
        ("anthropic", AnthropicGenerator, "claude-haiku-4-5"),
        ("openai", OpenAIGenerator, "gpt-4o-mini"),
    ]:
        cfg = cfg_for(tmp_path, f"generator={name}")
        g = instantiate(cfg.generator)
        s = g.settings
        assert isinstance(g, cls) and s.model == model and s.cache_dir == tmp_path / "generate"
        assert g.prompts.queries_per_chunk == 3 and s.style == "search" and s.max_usd == 5.0
        assert s.filter["round_trip_k"] is None
    assert (
        instantiate(
            cfg_for(tmp_path, "generator=anthropic").generator
        ).settings.price.output_per_mtok
        == 5.0
    )


def test_script_writes_pairs_into_run_dir(tmp_path):
    cfg = cfg_for(tmp_path, "generator=offline", f"paths.output_dir={tmp_path}")
    out = run(cfg)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert out == tmp_path / "pairs.jsonl" and 1 <= len(rows) <= 4
    assert (tmp_path / "generate_stats.json").exists()


def test_script_missing_key_is_one_line_error(tmp_path, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    cfg = cfg_for(
        tmp_path,
        "generator=anthropic",
        f"paths.output_dir={tmp_path}",
        f"generator.cache_dir={tmp_path}",
    )
    with pytest.raises(EmbedforgeError, match="ANTHROPIC_API_KEY"):
        run(cfg)
    assert not (tmp_path / "pairs.jsonl").exists()
