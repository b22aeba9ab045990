"""Active preference learning (DPO / RLHF): which pairs to label, who labels them, and iterative DPO.

* pairs: :func:`pairs_from_preferences`, :func:`sample_pairs` (candidates from a policy), readers
  for HH-RLHF and AlpacaEval;
* which pairs: :func:`make_preference_strategy` — DPO implicit-reward margin, reward-model ensemble
  disagreement, the entropy + certainty hybrid of Muldrew et al. 2024, prompt diversity, random;
* who labels: :class:`PairwiseJudge` (an LLM, both orders, ties), or curate's gold, human-queue and
  hybrid annotators with the labels ``a`` / ``b`` / ``tie``;
* learners: :class:`RewardModelLearner` (Bradley–Terry on embeddings, bootstrap ensemble),
  :class:`DPOLearner` (TRL's DPOTrainer, LoRA optional, iterative), :class:`TRLRewardLearner`;
* out: :func:`preference_dataset` (``prompt``/``chosen``/``rejected`` with provenance); CLI ``curate prefs``.

Importing this package loads no torch, transformers or TRL; they load when a model is used.
``PARADIGM`` plugs it into curate (``curate prefs run | export | judge | select``, ``curate resume``).
"""

from curate.plugins import Paradigm

from .candidates import sample_pairs
from .data import load_pair_pool, read_alpaca_eval, read_hh_rlhf
from .dpo import DPOLearner
from .export import journal_provenance, preference_dataset
from .judge import PairwiseJudge, Verdicts
from .pairs import LABELS, chosen_rejected, pair_pool, pairs_from_preferences, split_dialogue
from .reward import RewardModelLearner, embed_pairs, reward_features
from .scores import bt_probs, dpo_margin, pair_logprobs
from .strategies import (
    SPECS,
    STRATEGIES,
    EnsembleDisagreement,
    EntropyCertainty,
    MarginUncertainty,
    make_preference_strategy,
)
from .trl_reward import TRLRewardLearner

__all__ = [
    "LABELS", "STRATEGIES", "DPOLearner", "EnsembleDisagreement", "EntropyCertainty", "MarginUncertainty",
    "PairwiseJudge", "RewardModelLearner", "TRLRewardLearner", "Verdicts", "bt_probs", "chosen_rejected", "dpo_margin",
    "embed_pairs", "journal_provenance", "load_pair_pool", "make_preference_strategy", "pair_logprobs", "pair_pool",
    "pairs_from_preferences", "preference_dataset", "read_alpaca_eval", "read_hh_rlhf", "reward_features",
    "sample_pairs", "split_dialogue", "PARADIGM",
]


PARADIGM = Paradigm(name="prefs", summary="active preference pairs: judge, select, run a DPO/reward-model loop",
                    load_config="curate.paradigms.preference.config:load_prefs_config",
                    build="curate.paradigms.preference.run:build", report="curate.paradigms.preference.cli:report",
                    actions="curate.paradigms.preference.cli:add_actions", strategies=SPECS,
                    also=("preference",))
