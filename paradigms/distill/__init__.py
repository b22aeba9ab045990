"""Uncertainty-driven distillation: ask the teacher only where the student is unsure.

``TeacherProbe`` (student-teacher disagreement on the teacher's first tokens, paid through the
loop's purse), ``student_learner`` (sequence- or token-level training), ``train_token`` (TRL GKD /
DistillationTrainer), and the ``curate distill`` recipe runner (``run.build``).
"""

from curate.plugins import Paradigm

from .kd import check_shared_tokenizer, token_trainer, train_token
from .learner import student_learner
from .probe import TeacherProbe
from .run import SPECS

__all__ = ["PARADIGM", "TeacherProbe", "check_shared_tokenizer", "student_learner", "token_trainer", "train_token"]


PARADIGM = Paradigm(name="distill", summary="distil a teacher into a student, asking the teacher only where the "
                                             "student is unsure (recipes/distill-*.yaml)",
                    load_config="curate.paradigms.distill.config:load_distill_config",
                    build="curate.paradigms.distill.run:build", report="curate.paradigms.distill.cli:report",
                    strategies=SPECS,
                    on_existing="continue")
