"""curate: active learning for LLM training data.

Choose, generate and annotate the examples worth paying for, for in-context learning, SFT,
preference tuning and distillation, and hand them to TRL trainers.

``import curate`` is light: torch, transformers, faiss and vllm load only when used.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# name -> module; resolved on first access so that importing curate stays cheap.
_LAZY = {
    "load_pool": "curate.pool",
    "Pool": "curate.pool",
    "load_embedder": "curate.embed",
    "EmbeddingIndex": "curate.index",
    "load_backend": "curate.backends",
    "to_trl": "curate.export",
    "save_dataset": "curate.export",
    # the loop in three lines: ActiveLoop(pool, strategy=make_strategy("margin"), ledger=Ledger(Prices(...)), ...)
    "ActiveLoop": "curate.loop",
    "make_strategy": "curate.acquire",
    "Ledger": "curate.budget",
    "Prices": "curate.budget",
    "GoldAnnotator": "curate.annotate",
    "EmbeddingClassifier": "curate.learners",
    "MaxRounds": "curate.stopping",
    "CurateError": "curate.errors",
    "ConfigError": "curate.errors",
    "DataError": "curate.errors",
    "BackendError": "curate.errors",
    "MissingDependencyError": "curate.errors",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'curate' has no attribute '{name}'")
