"""Export to TRL's dataset formats, the real contract with its trainers.

* ``messages``: ``[{"role": "user", ...}, {"role": "assistant", ...}]`` (SFTTrainer, conversational);
* ``prompt_completion``: ``prompt`` / ``completion`` columns (SFTTrainer, completion-only loss);
* ``preference``: ``prompt`` / ``chosen`` / ``rejected`` columns (DPOTrainer, RewardTrainer).

Columns other than the roles (provenance, scores, ids) are kept beside the TRL columns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from curate.errors import ConfigError, DataError, did_you_mean

__all__ = ["FORMATS", "save_dataset", "to_trl"]

FORMATS = ("messages", "prompt_completion", "preference")
_NEEDS = {
    "messages": ("prompt", "response"),
    "prompt_completion": ("prompt", "response"),
    "preference": ("prompt", "chosen", "rejected"),
}


def to_trl(dataset: Any, format: str, *, system_prompt: str | None = None) -> Any:
    """Convert a role-named ``datasets.Dataset`` (or a :class:`~curate.pool.Pool`) to a TRL format."""
    dataset = getattr(dataset, "dataset", dataset)
    if format not in FORMATS:
        raise ConfigError(f"Unknown export format '{format}'. Known: {', '.join(FORMATS)}.{did_you_mean(format, FORMATS)}")
    missing = [c for c in _NEEDS[format] if c not in dataset.column_names]
    if missing:
        raise DataError(
            f"Format '{format}' needs columns {', '.join(_NEEDS[format])}; missing {', '.join(missing)}. "
            f"Available columns: {', '.join(dataset.column_names)}."
        )
    if format == "prompt_completion":
        return dataset.rename_column("response", "completion")
    if format == "preference":
        return dataset
    head = [{"role": "system", "content": system_prompt}] if system_prompt else []

    def to_messages(row: dict) -> dict:
        return {"messages": head + [{"role": "user", "content": row["prompt"]},
                                    {"role": "assistant", "content": row["response"]}]}

    return dataset.map(to_messages, remove_columns=["prompt", "response"])


def save_dataset(dataset: Any, path: str | Path) -> Path:
    """Write a Dataset as JSONL (``*.jsonl``), Parquet (``*.parquet``) or a ``save_to_disk`` folder."""
    dataset = getattr(dataset, "dataset", dataset)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jsonl":
        dataset.to_json(str(path), lines=True, force_ascii=False)
    elif path.suffix == ".parquet":
        dataset.to_parquet(str(path))
    elif path.suffix == "":
        dataset.save_to_disk(str(path))
    else:
        raise ConfigError(f"Cannot save to '{path}': use a .jsonl or .parquet file, or a folder name without suffix.")
    return path
