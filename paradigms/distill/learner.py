"""The student: a :class:`~curate.responses.ResponseLearner` in one of two training modes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from curate.errors import ConfigError

__all__ = ["MODES", "student_learner"]

MODES = ("sequence", "token")


def student_learner(pool, model: str | Path, *, run_dir: str | Path, mode: str = "sequence",
                    teacher: str | Path | None = None, method: str = "gkd", **kwargs: Any):
    """A student trained round by round on the teacher's answers.

    Args:
        mode: ``"sequence"`` — SFT on the teacher's answers (TRL ``SFTTrainer``); ``"token"`` —
            the teacher's next-token distributions (TRL GKD or ``DistillationTrainer``, ``method``),
            which needs ``teacher`` (weights: an id or path) with the student's tokenizer.
        kwargs: the rest of :class:`~curate.responses.ResponseLearner`'s parameters (lora, train, ...).
    """
    from curate.responses import ResponseLearner

    if mode not in MODES:
        raise ConfigError(f"The 'mode' parameter must be one of {', '.join(MODES)}. Got {mode!r} instead.")
    if "trainer" in kwargs:
        raise ConfigError("student_learner chooses the trainer from 'mode'; do not pass 'trainer'.")
    trainer = None
    if mode == "token":
        from .kd import check_shared_tokenizer, token_trainer

        if teacher is None:
            raise ConfigError("mode='token' distils the teacher's token distributions: pass teacher= (its weights).")
        check_shared_tokenizer(model, teacher)
        trainer = token_trainer(teacher, method)
    return ResponseLearner(pool, model, run_dir=run_dir, trainer=trainer, **kwargs)
