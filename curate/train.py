"""What the TRL learners share: a ``train:`` dict handed straight to TRL's own config class, a LoRA
config from a ``lora:`` dict, and a trainer that keeps its logs without printing them.

Nothing here imports torch, transformers, peft or TRL until a function is called.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from curate.errors import ConfigError, did_you_mean

__all__ = ["CPU_DEFAULTS", "build_config", "lora_config", "quiet", "write_json_atomic"]

# TRL's defaults suit GPUs: bf16 autocast and gradient checkpointing make small CPU runs slower,
# and checkpoints, reports and progress bars are the loop's business, not the trainer's.
CPU_DEFAULTS: dict[str, Any] = {
    "per_device_train_batch_size": 4,
    "num_train_epochs": 1,
    "bf16": False,
    "save_strategy": "no",
    "report_to": "none",
    "logging_steps": 1,
    "disable_tqdm": True,
    "seed": 0,
}


def build_config(cls, output_dir: str | Path, train: Mapping[str, Any] | None, *, device: str = "cpu",
                 fixed: Mapping[str, Any] | None = None, owner: str = "train"):
    """``cls(output_dir=..., **CPU_DEFAULTS, **train, **fixed)``; unknown keys name the closest
    field of ``cls``, and keys in ``fixed`` may only repeat the fixed value."""
    train = dict(train or {})
    fields = {f.name for f in dataclasses.fields(cls)}
    for key in train:
        if key not in fields:
            raise ConfigError(f"Unknown key '{owner}.{key}' for {cls.__name__}.{did_you_mean(key, fields)} "
                              f"The '{owner}' block is passed to trl.{cls.__name__} as it is.")
    for key, value in (fixed or {}).items():
        if key in train and train[key] != value:
            raise ConfigError(f"'{owner}.{key}' is {train[key]!r} but the learner sets it to {value!r}; "
                              f"set it on the learner instead (it is used for scoring as well as training).")
    if "output_dir" in train:
        raise ConfigError(f"'{owner}.output_dir' is chosen by the learner (inside its run folder); remove it.")
    defaults = dict(CPU_DEFAULTS)
    if not {"gradient_checkpointing", "activation_checkpointing"} & set(train):
        # transformers 5 renamed it; the old name still works but warns, and the new one wins when both are set.
        defaults["activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"] = False
    kwargs = {**defaults, **({"use_cpu": True} if device == "cpu" else {}), **train, **(fixed or {})}
    try:
        return cls(output_dir=str(output_dir), **kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"trl.{cls.__name__} rejected the '{owner}' block: {err}") from None


def lora_config(lora: Mapping[str, Any] | None):
    """A ``peft.LoraConfig`` for causal LMs from a ``lora:`` dict, or None."""
    if not lora:
        return None
    from peft import LoraConfig

    params = {"task_type": "CAUSAL_LM", **dict(lora)}
    try:
        return LoraConfig(**params)
    except TypeError as err:
        fields = [f.name for f in dataclasses.fields(LoraConfig)]
        bad = next((k for k in params if k not in fields), "")
        raise ConfigError(f"peft.LoraConfig rejected the 'lora' block: {err}.{did_you_mean(bad, fields)}") from None


def quiet(trainer):
    """Keep the trainer's log history but stop it printing every step (the loop logs rounds)."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    return trainer


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def replace_dir(tmp: Path, target: Path) -> None:
    """Move a finished folder into place (a crash leaves either the old one or the new one)."""
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
