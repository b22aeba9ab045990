"""Token-level distillation: the student learns the teacher's whole next-token distribution, not
just the tokens the teacher wrote. It needs the teacher's weights and a shared tokenizer.

Two TRL trainers, chosen by ``method``:

* ``"gkd"`` — ``trl.experimental.gkd.GKDTrainer`` on the bought answers: at every token of the
  teacher's answer the student's distribution is pulled toward the teacher's by a generalised
  Jensen-Shannon divergence (``beta``; 0 = forward KL). ``lmbda`` (default 0 here: off-policy, on
  the bought answers only) is the share of batches the student answers itself (on-policy GKD).
* ``"distillation"`` — ``trl.DistillationTrainer``: on-policy; the student answers the bought
  prompts and the teacher scores its tokens (the bought answers are not used).

:func:`token_trainer` returns a round trainer for :class:`~curate.responses.ResponseLearner`
(same call as :func:`curate.train.train_sft`), so rounds, LoRA merging, resume and self-training
are the learner's as in sequence mode.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from curate.errors import ConfigError
from curate.train import build_config, lora_config, quiet, replace_dir

__all__ = ["METHODS", "check_shared_tokenizer", "token_trainer", "train_token"]

METHODS = ("gkd", "distillation")


def check_shared_tokenizer(student: str | Path, teacher: str | Path) -> None:
    """Refuse (ConfigError) a teacher whose tokenizer differs from the student's."""
    from transformers import AutoTokenizer

    a = AutoTokenizer.from_pretrained(str(student))
    b = AutoTokenizer.from_pretrained(str(teacher))
    va, vb = a.get_vocab(), b.get_vocab()
    if va != vb:
        only_a, only_b = len(set(va) - set(vb)), len(set(vb) - set(va))
        moved = sum(1 for t in set(va) & set(vb) if va[t] != vb[t])
        raise ConfigError(
            f"Token-level distillation needs the student and the teacher to share a tokenizer; {student} "
            f"({len(va)} tokens) and {teacher} ({len(vb)} tokens) differ: {only_a} token(s) only in the student, "
            f"{only_b} only in the teacher, {moved} with another id. Use student.mode=sequence (SFT on the "
            f"teacher's answers), or a teacher of the student's family.")


def _messages(rows: Sequence[Mapping[str, Any]]) -> list[dict]:
    out = []
    for k, row in enumerate(rows):
        prompt, completion = row.get("prompt"), row.get("completion")
        if not (isinstance(prompt, list) and isinstance(completion, list)):
            raise ConfigError(f"Row {k}: token-level distillation takes conversational rows (chat=True); got "
                              f"{type(prompt).__name__} prompt and {type(completion).__name__} completion.")
        out.append({"messages": list(prompt) + list(completion), "prompt": list(prompt)})
    return out


def train_token(start: str | Path, rows: Sequence[Mapping[str, Any]], output_dir: str | Path, *,
                teacher: str | Path, method: str = "gkd", lora: Mapping[str, Any] | None = None,
                train: Mapping[str, Any] | None = None, device: str = "cpu", max_length: int = 512) -> dict:
    """Distil ``teacher`` into the model at ``start`` on ``rows`` (from :func:`curate.train.sft_rows`
    with ``chat=True``) and save the merged student to ``output_dir`` (atomically)."""
    import datasets
    from datasets import Dataset
    from transformers import AutoTokenizer

    if method not in METHODS:
        raise ConfigError(f"Token-level distillation method must be one of {', '.join(METHODS)}. Got {method!r}.")
    if not rows:
        raise ConfigError("train_token got no rows to train on.")
    data = _messages(rows)
    output_dir = Path(output_dir)
    scratch = output_dir.with_name(output_dir.name + ".trainer")
    tokenizer = AutoTokenizer.from_pretrained(str(start))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    train = dict(train or {})
    datasets.disable_progress_bars()
    clock = time.perf_counter()
    if method == "gkd":
        from trl.experimental.gkd import GKDConfig, GKDTrainer

        # lmbda 0: train on the bought answers (off-policy); temperature 1: the plain distributions.
        train = {"lmbda": 0.0, "temperature": 1.0, **train}
        args = build_config(GKDConfig, scratch, train, device=device, fixed={"max_length": max_length})
        trainer = GKDTrainer(model=str(start), teacher_model=str(teacher), args=args,
                             train_dataset=Dataset.from_list([{"messages": r["messages"]} for r in data]),
                             processing_class=tokenizer, peft_config=lora_config(lora))
    else:
        from trl import DistillationConfig, DistillationTrainer

        train = {"learning_rate": 5e-5, "max_completion_length": 64, **train}
        args = build_config(DistillationConfig, scratch, train, device=device,
                            fixed={"teacher_model_name_or_path": str(teacher)}, owner="train")
        tokenizer.padding_side = "left"  # it generates from the prompts
        trainer = DistillationTrainer(model=str(start), teacher_model=str(teacher), args=args,
                                      train_dataset=Dataset.from_list([{"prompt": r["prompt"]} for r in data]),
                                      processing_class=tokenizer, peft_config=lora_config(lora))
    quiet(trainer)
    result = trainer.train()
    model = trainer.model.merge_and_unload() if lora else trainer.model
    tmp = output_dir.with_name(output_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.padding_side = "right"
    tokenizer.save_pretrained(tmp)
    replace_dir(tmp, output_dir)
    shutil.rmtree(scratch, ignore_errors=True)
    return {"rows": len(rows), "steps": int(trainer.state.global_step), "train_loss": float(result.training_loss),
            "seconds": round(time.perf_counter() - clock, 2), "method": method}


def token_trainer(teacher: str | Path, method: str = "gkd") -> Callable[..., dict]:
    """A round trainer for :class:`~curate.responses.ResponseLearner` that distils ``teacher``."""
    if method not in METHODS:
        raise ConfigError(f"Token-level distillation method must be one of {', '.join(METHODS)}. Got {method!r}.")

    def trainer(start, rows, output_dir, **kwargs) -> dict:
        return train_token(start, rows, output_dir, teacher=teacher, method=method, **kwargs)

    return trainer
