"""Active SFT: buy responses for the instructions the model is least sure how to answer, let it
answer the easy rest itself (self-training), and LoRA-tune it with TRL's ``SFTTrainer`` each round;
or curate an existing instruction set in one shot (``curate sft curate``: IFD / Ask-LLM scores
with DEITA's diversity rule).
"""

from __future__ import annotations

from curate.plugins import Paradigm

__all__ = ["PARADIGM"]


def _load(path=None, overrides=None, data=None):
    from .config import load_sft_config

    return load_sft_config(path, overrides, data)


def _build(config, folder, **options):
    from .run import build

    return build(config, folder, **options)


def _report(outcome) -> None:
    from .cli import report

    report(outcome)


def _actions(sub):
    from .cli import add_actions

    return add_actions(sub)


# The short names of SFT recipes for the registry's answer-uncertainty strategies.
_ALIASES = {"entropy": "answer_entropy", "perplexity": "answer_perplexity", "semantic": "answer_semantic",
            "loss": "answer_loss", "ifd": "answer_ifd"}

PARADIGM = Paradigm(name="sft", summary="active SFT: uncertainty queries + self-training, or one-shot curation",
                    load_config=_load, build=_build, report=_report, actions=_actions, aliases=_ALIASES,
                    bench_runner="curate.paradigms.sft.bench:SFTRunner")
