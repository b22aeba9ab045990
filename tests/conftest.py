"""Shared fixtures: offline, quiet, tiny models built from configs in code, real data when present."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("CURATE_QUIET", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CORPUS = [
    "the film was wonderful and moving", "the food was cold and the service rude",
    "a great phone with a long battery life", "terrible plot and a boring ending",
    "positive negative neutral yes no maybe", "what is the capital of france? paris.",
    "the cat sat on the mat", "numbers 0 1 2 3 4 5 6 7 8 9",
] * 20


def build_tiny_tokenizer():
    """A byte-level BPE tokenizer trained in code on a few sentences (no hub)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   bos_token="<|endoftext|>")
    fast.chat_template = CHATML
    return fast


def build_tiny_model(vocab_size: int, seed: int = 0):
    """A 2-layer Llama of real shape conventions, tiny sizes, random weights."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=True, bos_token_id=0, eos_token_id=2, pad_token_id=0)
    return LlamaForCausalLM(config).eval()


def save_lm(model, tokenizer, folder: Path) -> Path:
    """Save a model and its tokenizer to ``folder`` as a loadable checkpoint (generation stops and
    pads with the tokenizer's own tokens)."""
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


class HashEmbedder:
    """An embedder fake: bag of words hashed into 16 dimensions, unit length."""

    name = "hash16"
    dim = 16

    def encode(self, texts):
        out = np.zeros((len(texts), 16), dtype=np.float32)
        for r, text in enumerate(texts):
            for word in text.split():
                out[r, sum(map(ord, word)) % 16] += 1
            out[r, 15] += 0.01  # no all-zero rows
        return out / np.linalg.norm(out, axis=1, keepdims=True)


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory) -> Path:
    """A tiny causal LM and its tokenizer saved to a folder, loadable by id-or-path like any model."""
    tokenizer = build_tiny_tokenizer()
    return save_lm(build_tiny_model(len(tokenizer)), tokenizer, tmp_path_factory.mktemp("tiny-lm"))


@pytest.fixture
def tiny_backend(tiny_lm_dir):
    from curate.backends.hf import TransformersBackend

    return TransformersBackend(str(tiny_lm_dir), device="cpu", max_batch_size=3, max_batch_tokens=64)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real datasets not found at {SHARED_DATA} (../shared/data beside the repo)")
    return SHARED_DATA


# The unit layer: numpy / FAISS only, no model, seconds in all (`./run test -m unit`). A test of these
# modules that takes a tiny model or real data belongs to the integration layer instead.
UNIT_MODULES = {"test_acquire_contract", "test_contracts", "test_diversity", "test_index", "test_ledger_stopping",
                "test_registry", "test_uncertainty", "test_pool", "test_journal"}
_MODEL_FIXTURES = {"tiny_lm_dir", "tiny_backend", "shared_data", "teacher_dir", "other_tokenizer_dir"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        module = getattr(item.module, "__name__", "").rsplit(".", 1)[-1]
        if (module in UNIT_MODULES and not _MODEL_FIXTURES & set(getattr(item, "fixturenames", ()))
                and item.get_closest_marker("real") is None and item.get_closest_marker("data") is None):
            item.add_marker(pytest.mark.unit)
