"""What the TRL learners share: a ``train:`` dict handed straight to TRL's own config class, a LoRA
config from a ``lora:`` dict, a trainer that keeps its logs without printing them, and one SFT round
(:func:`train_sft`) that the SFT and distillation learners both run.

Nothing here imports torch, transformers, peft or TRL until a function is called.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from curate.errors import ConfigError, did_you_mean

__all__ = ["CPU_DEFAULTS", "build_config", "lora_config", "quiet", "replace_dir", "sft_rows", "train_sft",
           "write_json_atomic"]

# TRL's defaults suit GPUs: bf16 autocast and gradient checkpointing make small CPU runs slower,
# and checkpoints and reports are the loop's business, not the trainer's. TRL's step bar stays (a
# round can train for minutes) unless progress is off: ``disable_tqdm`` is set per call, from
# :func:`curate.progress.enabled` (``--quiet``, ``CURATE_QUIET=1``).
CPU_DEFAULTS: dict[str, Any] = {
    "per_device_train_batch_size": 4,
    "num_train_epochs": 1,
    "bf16": False,
    "save_strategy": "no",
    "report_to": "none",
    "logging_steps": 1,
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
    from curate.progress import enabled as progress_enabled

    defaults = {**CPU_DEFAULTS, "disable_tqdm": not progress_enabled()}
    if not {"gradient_checkpointing", "activation_checkpointing"} & set(train):
        # transformers 5 renamed it, and TRL's configs still default the old name to True: both go off
        # (checkpointing recomputes every layer in the backward pass, pure loss on small CPU runs).
        for name in ("gradient_checkpointing", "activation_checkpointing"):
            if name in fields:
                defaults[name] = False
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
    """Keep the trainer's log history but stop it printing every step (the loop logs rounds); its
    step bar stays when progress is on (``disable_tqdm`` False), without a printed line per log."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(_training_bar())
    return trainer


def _training_bar():
    """transformers' own step bar (``ProgressCallback``), named, minus its ``write`` of every log dict:
    with ``logging_steps=1`` that is one printed line per step, and the log history keeps them."""
    from transformers.trainer_callback import ProgressCallback

    class TrainingBar(ProgressCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            from tqdm.auto import tqdm

            if state.is_world_process_zero:
                self.training_bar = tqdm(total=state.max_steps, desc="training", unit="step", dynamic_ncols=True)
            self.current_step = 0

        def on_log(self, args, state, control, logs=None, **kwargs):
            pass

    return TrainingBar()


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def read_round_state(path: Path, labelled: set[int], *, model_key: str, what: str, items: str,
                     known: tuple[str, ...] = ()) -> dict | None:
    """The ``state.json`` a crashed or paused run's learner left, if it belongs to this run.

    None when there is none. Refused (ConfigError) when the saved model was trained on ``items``
    this run has not labelled (another run's folder), or names a model folder that is gone and is
    not one of the ``known`` starting models.
    """
    if not path.exists():
        return None
    state = json.loads(path.read_text())
    extra = set(state["trained_ids"]) - set(labelled)
    if extra:
        raise ConfigError(f"{path} holds a {what} trained on {items} {sorted(extra)[:5]} that this run has not "
                          "labelled; it belongs to another run. Use a new run folder.")
    saved = state[model_key]
    if saved not in known and not Path(saved).exists():
        raise ConfigError(f"{path} names the {what} {saved}, which is gone. Use a new run folder.")
    return state


def replace_dir(tmp: Path, target: Path) -> None:
    """Move a finished folder into place (a crash leaves either the old one or the new one)."""
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)


def sft_rows(prompts: Sequence[str], completions: Sequence[str], *, chat: bool,
             system: str | None = None) -> list[dict]:
    """Prompt/completion rows in the form TRL's ``SFTTrainer`` takes as they are.

    With ``chat`` the rows are conversational (lists of messages), so TRL renders them with the
    model's own chat template; otherwise they are plain strings. Either way the trainer computes the
    loss on the completion only (``completion_only_loss`` is TRL's default for this format).
    """
    if len(prompts) != len(completions):
        raise ConfigError(f"sft_rows got {len(prompts)} prompts but {len(completions)} completions.")
    rows = []
    for k, (prompt, completion) in enumerate(zip(prompts, completions, strict=True)):
        for name, value in (("prompt", prompt), ("completion", completion)):
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"Row {k}: the {name} must be a non-empty string. Got {value!r} instead.")
        if chat:
            head = [{"role": "system", "content": system}] if system else []
            rows.append({"prompt": head + [{"role": "user", "content": prompt}],
                         "completion": [{"role": "assistant", "content": completion}]})
        else:
            rows.append({"prompt": prompt, "completion": completion})
    return rows


def train_sft(start: str | Path, rows: Sequence[Mapping[str, Any]], output_dir: str | Path, *,
              lora: Mapping[str, Any] | None = None, train: Mapping[str, Any] | None = None,
              device: str = "cpu", max_length: int = 512) -> dict:
    """Fine-tune the model at ``start`` on ``rows`` with ``trl.SFTTrainer`` and save it to ``output_dir``.

    ``rows`` come from :func:`sft_rows` (or any prompt/completion data TRL accepts). With ``lora`` the
    adapter is trained through peft and merged before saving, so every round's model loads the same
    way (a plain folder any backend can read). The save is atomic: a crash leaves either no folder
    or a whole one. Returns the trainer's numbers (steps, loss, seconds).
    """
    import time

    import datasets
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    if not rows:
        raise ConfigError("train_sft got no rows to train on.")
    output_dir = Path(output_dir)
    scratch = output_dir.with_name(output_dir.name + ".trainer")
    args = build_config(SFTConfig, scratch, train, device=device,
                        fixed={"completion_only_loss": True, "max_length": max_length})
    tokenizer = AutoTokenizer.from_pretrained(str(start))
    if tokenizer.pad_token is None:  # TRL pads batches; a model without a pad token pads with EOS
        tokenizer.pad_token = tokenizer.eos_token
    clock = time.perf_counter()
    datasets.disable_progress_bars()  # TRL's five dataset passes print a bar each; the loop logs rounds
    if args.disable_tqdm:  # quiet: transformers' weight-loading and saving bars go too
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    trainer = quiet(SFTTrainer(model=str(start), args=args, train_dataset=Dataset.from_list(list(rows)),
                               processing_class=tokenizer, peft_config=lora_config(lora)))
    result = trainer.train()
    model = trainer.model.merge_and_unload() if lora else trainer.model
    tmp = output_dir.with_name(output_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    replace_dir(tmp, output_dir)
    shutil.rmtree(scratch, ignore_errors=True)
    return {"rows": len(rows), "steps": int(trainer.state.global_step), "train_loss": float(result.training_loss),
            "seconds": round(time.perf_counter() - clock, 2)}
