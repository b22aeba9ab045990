"""Classification: label a pool with a closed label set, one round at a time, for the cheapest
labels that teach a classifier most (the paradigm of ``curate run`` recipes that name no other).

``curate classify run RECIPE`` (or ``curate run RECIPE``), ``curate resume RUN_DIR``, ``curate demo``;
the benchmark runner ``paradigms.classify.bench:ClassificationRunner``.
"""

from __future__ import annotations

from curate.plugins import Paradigm

__all__ = ["PARADIGM"]


def _load(path=None, overrides=None, data=None):
    from .config import load_classify_config

    return load_classify_config(path, overrides, data)


def _build(config, folder, **options):
    from .run import build

    return build(config, folder, **options)


def _report(outcome) -> None:
    from .cli import report

    report(outcome)


def _commands(subparsers):
    from .cli import add_demo

    return add_demo(subparsers)


PARADIGM = Paradigm(name="classify", summary="label a pool with a closed label set (logistic regression on embeddings)",
                    load_config=_load, build=_build, report=_report, commands=_commands,
                    bench_runner="curate.paradigms.classify.bench:ClassificationRunner", default=True,
                    also=("classification",))
