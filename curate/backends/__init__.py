"""LM backends: one protocol (:class:`LMBackend`), three implementations.

``load_backend("hf", model)`` (transformers, the default), ``load_backend("vllm", model)`` (extra
``vllm``) and ``load_backend("openai", model, base_url=...)`` (any OpenAI-compatible server).
Implementations are imported on use, so importing curate never imports torch or vllm.
"""

from __future__ import annotations

from typing import Any

from curate.backends.base import BaseBackend, Generation, LMBackend, TokenLogprobs, Usage
from curate.errors import ConfigError, did_you_mean
from curate.models import DEFAULT_LM

__all__ = ["KINDS", "BaseBackend", "Generation", "LMBackend", "TokenLogprobs", "Usage", "load_backend"]

KINDS = ("hf", "vllm", "openai")


def load_backend(kind: str = "hf", model: str = DEFAULT_LM, **kwargs: Any) -> LMBackend:
    """Create a backend of ``kind`` for ``model``; extra keyword arguments go to its constructor."""
    if kind == "hf":
        from curate.backends.hf import TransformersBackend

        return TransformersBackend(model, **kwargs)
    if kind == "vllm":
        from curate.backends.vllm import VLLMBackend

        return VLLMBackend(model, **kwargs)
    if kind == "openai":
        from curate.backends.openai_compat import OpenAICompatibleBackend

        return OpenAICompatibleBackend(model, **kwargs)
    raise ConfigError(f"Unknown backend '{kind}'. Known: {', '.join(KINDS)}.{did_you_mean(kind, KINDS)}")
