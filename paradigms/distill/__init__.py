"""Uncertainty-driven distillation: ask the teacher only where the student is unsure.

``TeacherProbe`` (student-teacher disagreement on the teacher's first tokens, paid through the
loop's purse), ``student_learner`` (sequence- or token-level training), ``train_token`` (TRL GKD /
DistillationTrainer), and the ``curate distill`` recipe runner (``run.build``).
"""

from curate.plugins import Paradigm

from .kd import check_shared_tokenizer, token_trainer, train_token
from .learner import student_learner
from .probe import TeacherProbe
from .run import ALIASES, SPECS

__all__ = ["PARADIGM", "TeacherProbe", "check_shared_tokenizer", "student_learner", "token_trainer", "train_token"]


def _load(path=None, overrides=None, data=None):
    from .config import load_distill_config

    return load_distill_config(path, overrides, data)


def _build(config, folder, **options):
    from .run import build

    return build(config, folder, **options)


def _report(outcome) -> None:
    from .cli import report

    report(outcome)


PARADIGM = Paradigm(name="distill", summary="distil a teacher into a student, asking the teacher only where the "
                                             "student is unsure (recipes/distill-*.yaml)",
                    load_config=_load, build=_build, report=_report, strategies=SPECS, aliases=ALIASES,
                    on_existing="continue")
