"""The DPO learner: a round of TRL's ``DPOTrainer`` (LoRA optional) on the labelled pairs, and the
policy's implicit-reward margins for the next round's acquisition.

Iterative (online) DPO under a label budget: each round trains the current policy on the pairs
labelled since the last round and saves it to ``run_dir/policy/round-<n>``; the next round scores
the pool with it. The reference stays the initial model, so that margins of different rounds
measure the same thing (the cumulative change of the policy). ``mode="retrain"`` trains the
initial model on every label each round instead.

Margins come from the hf backend's ``completion_logprobs`` (summed log-probs of each response's
tokens; TRL also trains on the EOS token it appends, which the margin leaves out) under the policy
and the reference; the reference's are computed once per pair and cached. A
run resumed after a crash finds the saved policy and the ids it was trained on in
``run_dir/policy/state.json`` and trains only on what is new.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from curate.errors import ConfigError
from curate.train import build_config, lora_config, quiet, read_round_state, replace_dir, write_json_atomic

from .pairs import check_pair_labels, chosen_rejected
from .scores import bt_probs, dpo_margin

__all__ = ["DPOLearner"]

logger = logging.getLogger(__name__)

MODES = ("iterative", "retrain")


class DPOLearner:
    """The loop's learner seam for pairs (``classes = ["a", "b"]``), trained with ``trl.DPOTrainer``.

    Args:
        pool: the pair pool (``prompt``, ``response_a``, ``response_b``).
        model: path (or hub id) of the initial policy. Pass a saved folder, not a model in memory:
            TRL loads the reference by the model's name.
        run_dir: where each round's policy is saved (``policy/round-<n>``) with ``state.json``.
        reference: the reference model (default: ``model``).
        policy: the policy to start from, e.g. one trained earlier (default: ``model``).
        beta: DPO's β, used for training and for the margins (``train.beta`` may not differ).
        mode: ``"iterative"`` (continue from the last policy on the new labels) or ``"retrain"``.
        lora: a ``peft.LoraConfig`` as a dict (e.g. ``{"r": 8, "lora_alpha": 16}``); None = full fine-tuning.
        train: keyword arguments for ``trl.DPOConfig``, passed as they are (over CPU-friendly defaults).
        chat: wrap each prompt as a user turn in the model's chat template (training and scoring alike).
        device: ``"cpu"``, ``"cuda"``, ... for scoring (and ``use_cpu`` for training on ``"cpu"``).
        scoring: keyword arguments for the scoring hf backend (``max_batch_tokens``, ...).
        keep_rounds: keep every round's policy folder (default: only the latest, to save disk).
    """

    classes = ["a", "b"]

    capabilities = frozenset({"probs", "arrays:margin", "arrays:prompt_entropy"})

    def __init__(self, pool, model: str, *, run_dir: str | Path, reference: str | None = None,
                 policy: str | None = None, beta: float = 0.1,
                 mode: str = "iterative", lora: Mapping[str, Any] | None = None, train: Mapping[str, Any] | None = None,
                 chat: bool = True, device: str = "cpu", scoring: Mapping[str, Any] | None = None,
                 keep_rounds: bool = False) -> None:
        if mode not in MODES:
            raise ConfigError(f"The 'mode' parameter of DPOLearner must be one of {', '.join(MODES)}. Got {mode!r} instead.")
        if not (isinstance(beta, (int, float)) and beta > 0):
            raise ConfigError(f"The 'beta' parameter of DPOLearner must be a positive number. Got {beta!r} instead.")
        if not isinstance(model, (str, Path)):
            raise ConfigError("The 'model' parameter of DPOLearner must be a path or hub id (save a model built in "
                              "memory with save_pretrained first: TRL loads the reference by the model's name).")
        self.pool = pool
        self.model = str(model)
        self.run_dir = Path(run_dir)
        self.reference = str(reference) if reference is not None else str(model)
        self.beta = float(beta)
        self.mode = mode
        self.lora = dict(lora) if lora else None
        self.train = dict(train or {})
        self.chat = chat
        self.device = device
        self.scoring = dict(scoring or {})
        self.keep_rounds = keep_rounds
        self.policy = str(policy) if policy is not None else None
        self.policy_ = self.policy or self.model
        self.trained_ids_: list[int] = []
        self.rounds_ = 0
        self.history_: list[dict] = []
        self._restored = False
        self._backends: dict[str, Any] = {}
        self._cache: dict[str, dict[tuple[str, str], tuple[float, float]]] = {}

    # ---------------------------------------------------------------- training

    def fit(self, ids: np.ndarray, labels: Sequence[Any]) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) != len(labels):
            raise ConfigError(f"fit got {len(ids)} ids but {len(labels)} labels.")
        check_pair_labels(labels, "DPOLearner")
        if not self._restored:
            self._restore(set(ids.tolist()))
            self._restored = True
        by_id = dict(zip(ids.tolist(), labels, strict=True))
        trained = set(self.trained_ids_)
        if self.mode == "iterative":
            todo = [i for i in ids.tolist() if i not in trained]
            start = self.policy_
        else:
            todo = ids.tolist() if set(by_id) != trained else []
            start = self.model
        if not todo:
            return
        rows = chosen_rejected(self.pool, todo, [by_id[i] for i in todo])
        if rows:
            metrics = self._train(rows, start)
        else:
            metrics = {"pairs": 0, "note": "only ties: nothing to train on"}
        self.trained_ids_ = sorted(trained | set(todo)) if self.mode == "iterative" else sorted(by_id)
        self.history_.append({"round": self.rounds_, "policy": self.policy_, **metrics})
        write_json_atomic(self._state_path(), {"policy": self.policy_, "trained_ids": self.trained_ids_,
                                               "rounds": self.rounds_, "history": self.history_})
        logger.info("dpo round %d: %d pair(s) (%d tie(s) left out) -> %s", self.rounds_, len(rows),
                    len(todo) - len(rows), self.policy_)

    def _train(self, rows: list[dict], start: str) -> dict:
        from datasets import Dataset
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from trl import DPOConfig, DPOTrainer

        n = self.rounds_ + 1
        folder = self.run_dir / "policy"
        folder.mkdir(parents=True, exist_ok=True)
        args = build_config(DPOConfig, self.run_dir / "trainer", self.train, device=self.device,
                            fixed={"beta": self.beta})
        tokenizer = AutoTokenizer.from_pretrained(start)
        data = Dataset.from_list([{"prompt": self.render(r["prompt"]), "chosen": r["chosen"], "rejected": r["rejected"]}
                                  for r in rows])
        # TRL builds the reference from the policy's own name (or disables the adapter); after the
        # first round the policy is no longer the reference, so it is passed explicitly.
        ref_model = None if start == self.reference else AutoModelForCausalLM.from_pretrained(self.reference)
        trainer = quiet(DPOTrainer(model=start, ref_model=ref_model, args=args, train_dataset=data,
                                   processing_class=tokenizer, peft_config=lora_config(self.lora)))
        result = trainer.train()
        model = trainer.model.merge_and_unload() if self.lora else trainer.model
        tmp = folder / f".round-{n}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        target = folder / f"round-{n}"
        replace_dir(tmp, target)
        previous = self.policy_
        self.policy_, self.rounds_ = str(target), n
        self._forget_policy()
        if not self.keep_rounds and previous not in (self.model, self.reference) and Path(previous).parent == folder:
            shutil.rmtree(previous, ignore_errors=True)
        logged = [h for h in trainer.state.log_history if "rewards/margins" in h]
        last = logged[-1] if logged else {}
        return {"pairs": len(rows), "steps": int(trainer.state.global_step), "train_loss": float(result.training_loss),
                "reward_margin": last.get("rewards/margins"), "reward_accuracy": last.get("rewards/accuracies")}

    def _state_path(self) -> Path:
        return self.run_dir / "policy" / "state.json"

    def _restore(self, ids: set[int]) -> None:
        """Adopt the policy a crashed or paused run saved, if it was trained on labels we still have."""
        state = read_round_state(self._state_path(), ids, model_key="policy", what="policy", items="pairs",
                                 known=(self.model, self.reference))
        if state is None:
            return
        self.policy_, self.trained_ids_ = state["policy"], list(state["trained_ids"])
        self.rounds_, self.history_ = int(state["rounds"]), list(state["history"])
        self._forget_policy()
        logger.info("dpo: resumed policy %s (trained on %d pair(s))", self.policy_, len(self.trained_ids_))

    # ---------------------------------------------------------------- scoring

    def render(self, prompt: str) -> str:
        """The prompt as the policy sees it, in training and in scoring."""
        if not self.chat:
            return prompt
        return self._backend(self.reference).chat_prompt([{"role": "user", "content": prompt}])

    def _backend(self, path: str):
        if path not in self._backends:
            from curate.build import backend_from
            from curate.config import LMConfig

            self._backends[path] = backend_from(LMConfig(backend="hf", model=path, device=self.device,
                                                         options=dict(self.scoring)))
        return self._backends[path]

    def _forget_policy(self) -> None:
        for path in list(self._backends):
            if path != self.reference:
                del self._backends[path]
        self._cache = {k: v for k, v in self._cache.items() if k == self.reference}

    def _logprobs(self, path: str, prompts: list[str], a: list[str], b: list[str]):
        """Summed log-probs and entropies of both responses under the model at ``path``, cached by text."""
        cache = self._cache.setdefault(path, {})
        keys = [(p, r) for p, r in zip(prompts + prompts, a + b, strict=True)]
        todo = list(dict.fromkeys(k for k in keys if k not in cache))
        if todo:
            runs = self._backend(path).completion_logprobs([k[0] for k in todo], [k[1] for k in todo])
            for key, run in zip(todo, runs, strict=True):
                entropy = float(np.sum(run.entropy)) if run.entropy is not None else float("nan")
                cache[key] = (run.total, entropy)
        values = np.array([cache[k] for k in keys], dtype=np.float64).reshape(2, len(prompts), 2)
        return values[0, :, 0], values[1, :, 0], values[0, :, 1], values[1, :, 1]

    def score_pairs(self, prompts: Sequence[str], responses_a: Sequence[str],
                    responses_b: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """DPO margins and the policy's prompt entropies for any pairs (raw prompts, rendered here)."""
        rendered = [self.render(p) for p in prompts]
        a, b = list(responses_a), list(responses_b)
        pol_a, pol_b, ent_a, ent_b = self._logprobs(self.policy_, rendered, a, b)
        if self.policy_ == self.reference:
            margin = np.zeros(len(rendered))  # the same model: every log-ratio is exactly zero
        else:
            ref_a, ref_b, _, _ = self._logprobs(self.reference, rendered, a, b)
            margin = dpo_margin(pol_a, pol_b, ref_a, ref_b, self.beta)
        return margin, (ent_a + ent_b) / 2.0

    def _pool_scores(self, ids: np.ndarray | None):
        ids = np.arange(len(self.pool)) if ids is None else np.asarray(ids, dtype=np.int64)
        rows = self.pool.select(ids)
        return self.score_pairs(rows["prompt"], rows["response_a"], rows["response_b"])

    def margin(self, ids: np.ndarray | None = None) -> np.ndarray:
        return self._pool_scores(ids)[0]

    def predict_proba(self, ids: np.ndarray | None = None) -> np.ndarray:
        return bt_probs(self.margin(ids))

    def arrays(self) -> dict[str, np.ndarray]:
        """``margin`` and ``prompt_entropy`` for every pool id (the loop's ``extra_arrays``)."""
        margin, entropy = self._pool_scores(None)
        return {"margin": margin, "prompt_entropy": entropy}
