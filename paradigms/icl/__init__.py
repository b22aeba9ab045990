"""Active in-context learning: choose few-shot demonstrations, and choose what to annotate to get them.

Two jobs, on curate's core:

* per test input, the ``k`` best demonstrations from a labelled set (:mod:`.retrieve`: k-NN from the
  shared index, re-ranked by perplexity, label-balanced or spread by MMR), in prompts rendered from
  templates (:mod:`.prompts`), scored by an evaluation harness (:mod:`.evaluate`, :mod:`.scoring`:
  option log-probs at the answer position only, heads shared, contextual calibration);
* with a labelling budget, which unlabelled examples to annotate so that they make good
  demonstrations later (:mod:`.annotate`: vote-k, k-center, LM entropy, random, through
  ``curate.loop.ActiveLoop`` and any of curate's annotators).

The command line is in :mod:`.cli` (``curate icl select | annotate | eval``); recipes are
``recipes/icl-*.yaml``. Importing this package loads neither torch nor any model.
"""

from __future__ import annotations

import importlib
from typing import Any

from curate.plugins import Paradigm

# name -> module; resolved on first access so that importing the paradigm stays cheap.
_LAZY = {
    "ICLConfig": "config", "PromptConfig": "config", "RetrieveConfig": "config", "AnnotateConfig": "config",
    "EvaluateConfig": "config", "load_icl_config": "config",
    "Demo": "prompts", "Prompt": "prompts", "PromptBuilder": "prompts",
    "DemonstrationRetriever": "retrieve",
    "score_options": "scoring", "ScoringStats": "scoring",
    "ICLResult": "evaluate", "build_prompts": "evaluate", "contextual_calibration": "evaluate",
    "evaluate_icl": "evaluate", "evaluate_prompts": "evaluate", "mean_sd": "evaluate",
    "LMEntropy": "annotate", "DemoSetLearner": "annotate", "plan_annotation": "annotate",
    "select_and_annotate": "annotate",
}

__all__ = ["PARADIGM", *sorted(_LAZY)]


# ``curate icl run RECIPE`` is selective annotation (``annotate``); re-running it into the same folder resumes.
def _specs():
    from .annotate import SPECS

    return SPECS


PARADIGM = Paradigm(name="icl", summary="in-context learning: demonstrations per input, selective annotation, eval",
                    load_config="curate.paradigms.icl.config:load_icl_config", build="curate.paradigms.icl.run:build",
                    report="curate.paradigms.icl.cli:report", actions="curate.paradigms.icl.cli:add_actions",
                    strategies=_specs(),
                    bench_runner="curate.paradigms.icl.bench:ICLRunner", on_existing="continue")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module '{__name__}' has no attribute '{name}'")
