"""Uncertainty-driven distillation: ask the teacher only where the student is unsure.

``TeacherProbe`` (student-teacher disagreement on the teacher's first tokens, paid through the
loop's purse), ``student_learner`` (sequence- or token-level training), ``train_token`` (TRL GKD /
DistillationTrainer), and the ``curate distill`` recipe runner (``run.start_distill``).
"""

from curate.paradigms.distill.kd import check_shared_tokenizer, token_trainer, train_token
from curate.paradigms.distill.learner import student_learner
from curate.paradigms.distill.probe import TeacherProbe

__all__ = ["TeacherProbe", "check_shared_tokenizer", "student_learner", "token_trainer", "train_token"]
