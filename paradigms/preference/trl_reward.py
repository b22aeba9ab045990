"""A reward-model round with TRL's ``RewardTrainer``: the alternative learner to DPO.

Each round trains a sequence-classification head (one output: the reward) on the labelled pairs,
from the initial model, and saves it to ``run_dir/reward/round-<n>``; the pool's margins
``r(x, a) − r(x, b)`` then feed the strategies as the DPO margins do. Retraining from the initial
model each round keeps rounds comparable and a resumed run exact (the same labels give the same
model for a fixed ``train.seed``).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from curate.train import build_config, lora_config, quiet, replace_dir

from .pairs import check_pair_labels, chosen_rejected
from .scores import bt_probs

__all__ = ["TRLRewardLearner"]

logger = logging.getLogger(__name__)


class TRLRewardLearner:
    """The loop's learner seam for pairs (``classes = ["a", "b"]``), trained with ``trl.RewardTrainer``.

    Args:
        pool: the pair pool.
        model: path or hub id of the base model (a causal LM gets a fresh one-output score head).
        run_dir: where each round's reward model is saved.
        train: keyword arguments for ``trl.RewardConfig``, passed as they are.
        lora: a ``peft.LoraConfig`` as a dict (task type ``SEQ_CLS``), or None.
        chat: wrap each prompt as a user turn in the chat template.
        device: ``"cpu"``, ``"cuda"``, ...
        batch_size: pairs per forward pass when scoring.
    """

    classes = ["a", "b"]

    capabilities = frozenset({"probs", "arrays:margin"})

    def __init__(self, pool, model: str, *, run_dir: str | Path, train: Mapping[str, Any] | None = None,
                 lora: Mapping[str, Any] | None = None, chat: bool = False, device: str = "cpu",
                 batch_size: int = 16) -> None:
        self.pool = pool
        self.model = str(model)
        self.run_dir = Path(run_dir)
        self.train = dict(train or {})
        self.lora = dict(lora) if lora else None
        self.chat = chat
        self.device = device
        self.batch_size = batch_size
        self.model_path_: str | None = None
        self.rounds_ = 0
        self._trained_on: frozenset = frozenset()
        self._loaded = None
        self._margins: dict[int, float] = {}

    def fit(self, ids: np.ndarray, labels: Sequence[Any]) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        check_pair_labels(labels, "TRLRewardLearner")
        key = frozenset(zip(ids.tolist(), labels, strict=True))
        if key == self._trained_on:
            return
        rows = chosen_rejected(self.pool, ids, list(labels))
        if not rows:
            return
        from datasets import Dataset
        from transformers import AutoTokenizer
        from trl import RewardConfig, RewardTrainer

        n = self.rounds_ + 1
        folder = self.run_dir / "reward"
        folder.mkdir(parents=True, exist_ok=True)
        tokenizer = self._tokenizer_from(self.model, AutoTokenizer)
        data = Dataset.from_list([{"prompt": self._render(tokenizer, r["prompt"]), "chosen": r["chosen"],
                                   "rejected": r["rejected"]} for r in rows])
        args = build_config(RewardConfig, self.run_dir / "trainer", self.train, device=self.device)
        peft = lora_config({"task_type": "SEQ_CLS", **self.lora}) if self.lora else None
        trainer = quiet(RewardTrainer(model=self.model, args=args, train_dataset=data, processing_class=tokenizer,
                                      peft_config=peft))
        trainer.train()
        model = trainer.model.merge_and_unload() if self.lora else trainer.model
        tmp = folder / f".round-{n}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        replace_dir(tmp, folder / f"round-{n}")
        if self.model_path_ is not None:
            shutil.rmtree(self.model_path_, ignore_errors=True)
        self.model_path_, self.rounds_, self._trained_on = str(folder / f"round-{n}"), n, key
        self._loaded, self._margins = None, {}
        logger.info("reward model round %d: %d pair(s) -> %s", n, len(rows), self.model_path_)

    @staticmethod
    def _tokenizer_from(path: str, auto):
        tokenizer = auto.from_pretrained(path)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return tokenizer

    def _render(self, tokenizer, prompt: str) -> str:
        if not self.chat:
            return prompt
        return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)

    def rewards(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """The reward of each (prompt, response); zeros before the first round."""
        if self.model_path_ is None:
            return np.zeros(len(prompts))
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if self._loaded is None:
            tokenizer = self._tokenizer_from(self.model_path_, AutoTokenizer)
            model = AutoModelForSequenceClassification.from_pretrained(self.model_path_, num_labels=1)
            model.config.pad_token_id = tokenizer.pad_token_id
            self._loaded = (model.to(self.device).eval(), tokenizer)
        model, tokenizer = self._loaded
        # TRL appends EOS to every response it trains on, so the reward is read after EOS here too.
        eos = tokenizer.eos_token or ""
        texts = [self._render(tokenizer, p) + r + ("" if r.endswith(eos) else eos)
                 for p, r in zip(prompts, responses, strict=True)]
        out = []
        for start in range(0, len(texts), self.batch_size):
            batch = tokenizer(texts[start:start + self.batch_size], padding=True, return_tensors="pt",
                              add_special_tokens=False)
            with torch.inference_mode():
                logits = model(**{k: v.to(model.device) for k, v in batch.items()}).logits
            out.append(logits[:, 0].float().cpu().numpy())
        return np.concatenate(out).astype(np.float64) if out else np.zeros(0)

    def margin(self, ids: np.ndarray | None = None) -> np.ndarray:
        ids = np.arange(len(self.pool)) if ids is None else np.asarray(ids, dtype=np.int64)
        todo = [i for i in ids.tolist() if i not in self._margins]
        if todo:
            rows = self.pool.select(todo)
            ra = self.rewards(rows["prompt"], rows["response_a"])
            rb = self.rewards(rows["prompt"], rows["response_b"])
            self._margins.update(zip(todo, (ra - rb).tolist(), strict=True))
        return np.array([self._margins[i] for i in ids.tolist()], dtype=np.float64)

    def predict_proba(self, ids: np.ndarray | None = None) -> np.ndarray:
        return bt_probs(self.margin(ids))

    def arrays(self) -> dict[str, np.ndarray]:
        return {"margin": self.margin()}
