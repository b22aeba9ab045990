"""Classification: label a pool with a closed label set, one round at a time, for the cheapest
labels that teach a classifier most (the paradigm of ``curate run`` recipes that name no other).

``curate classify run RECIPE`` (or ``curate run RECIPE``), ``curate resume RUN_DIR``, ``curate demo``;
the benchmark runner ``paradigms.classify.bench:ClassificationRunner``.
"""

from __future__ import annotations

from curate.plugins import Paradigm

__all__ = ["PARADIGM"]


PARADIGM = Paradigm(name="classify", summary="label a pool with a closed label set (logistic regression on embeddings)",
                    load_config="curate.paradigms.classify.config:load_classify_config",
                    build="curate.paradigms.classify.run:build", report="curate.paradigms.classify.cli:report",
                    commands="curate.paradigms.classify.cli:add_demo",
                    bench_runner="curate.paradigms.classify.bench:ClassificationRunner", default=True,
                    also=("classification",))
