"""The SFT paradigm's benchmark cell runner (``curate bench``, paradigm ``sft``).

A cell buys responses for instructions round by round (the model's own answer uncertainty, random,
or any strategy that needs no class probabilities) from the dataset's own responses (annotator
``gold``, billed as people), LoRA-tunes the LM with TRL's ``SFTTrainer`` after every round
(:class:`~curate.responses.ResponseLearner`, continuing from the last round), and measures the held-out
responses' mean per-token log-likelihood (``sft_loglik``, primary, higher is better) and perplexity.

Datasets: ``instructions`` (the pairs curate ships: ``sample:instructions`` and its test set),
``alpaca_eval`` (GPT-4's answers to the 805 AlpacaEval instructions in ../shared/data; 200 held out),
or files (``pool`` and ``test`` with ``prompt`` and ``response`` roles).

Options (``options: {sft: {...}}``): ``eval_n`` (32), ``prompt_tokens`` / ``response_tokens`` (48 /
48: texts are cut so CPU rounds stay short), ``max_length`` (160), ``answer_tokens`` (16: the model's
own answers, for uncertainty), ``sample`` (32: candidates answered per round), ``samples`` (4:
semantic), ``lora`` and ``train`` (as in SFT recipes).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from curate.errors import ConfigError

__all__ = ["SFTRunner"]

logger = logging.getLogger(__name__)

OPTIONS = {"eval_n": 32, "prompt_tokens": 48, "response_tokens": 48, "max_length": 160, "answer_tokens": 16,
           "sample": 32, "samples": 4, "lora": {"r": 8, "lora_alpha": 16, "target_modules": "all-linear",
                                                "lora_dropout": 0.0},
           "train": {"num_train_epochs": 1, "per_device_train_batch_size": 4, "learning_rate": 5e-4}}
SOURCES = ("instructions", "alpaca_eval", "files")


class SFTRunner:
    metrics = ("sft_loglik", "sft_perplexity", "eval_seconds")

    def __init__(self, config) -> None:
        self.config = config
        self.options = config.paradigm_options("sft", OPTIONS)
        self._data: dict[str, dict] = {}

    def check(self, cell) -> None:
        from curate.acquire.registry import REGISTRY, check_needs

        from .run import ALIASES

        # A response learner without an index: the needs a bench cell can meet.
        check_needs(REGISTRY.get(self.config.strategy(cell.strategy).name, ALIASES),
                    {"responses", "add_rows", "pool"}, who="the sft benchmark", aliases=ALIASES)
        source = self.config.dataset(cell.dataset).source
        if source not in SOURCES:
            raise ConfigError(f"grid.dataset '{cell.dataset}' (source '{source}') has no instructions with responses; "
                              f"the sft paradigm reads {', '.join(SOURCES)}.")
        spec = self.config.annotators[cell.annotator]
        if spec.kind != "gold":
            raise ConfigError(f"annotators.{cell.annotator}: the sft benchmark buys the dataset's own responses "
                              "(kind gold).")

    # ------------------------------------------------------------------ data

    def _model(self) -> str:
        from curate.models import resolve_lm

        return resolve_lm(self.config.lm.model)

    def data(self, name: str) -> dict:
        if name in self._data:
            return self._data[name]
        from transformers import AutoTokenizer

        from curate.pool import load_pool

        spec = self.config.dataset(name)
        if spec.source == "instructions":
            pool_src, test_src = load_pool("sample:instructions"), load_pool("sample:instructions-test")
            pairs = list(zip(pool_src.column("prompt"), pool_src.column("response"), strict=True))
            test = list(zip(test_src.column("prompt"), test_src.column("response"), strict=True))
        elif spec.source == "alpaca_eval":
            from curate.bench.datasets import data_root

            path = data_root(spec.data_dir) / "alpaca_eval" / "results" / "gpt4" / "model_outputs.json"
            if not path.exists():
                raise ConfigError(f"AlpacaEval's GPT-4 outputs are not at {path}; set datasets.{name}.data_dir.")
            raw = json.loads(path.read_text())
            perm = np.random.default_rng(0).permutation(len(raw))
            test = [(raw[i]["instruction"], raw[i]["output"]) for i in perm[:200]]
            pairs = [(raw[i]["instruction"], raw[i]["output"]) for i in perm[200:]]
        else:
            pool_src = load_pool(spec.pool.path, columns=spec.pool.columns, require=("prompt", "response"))
            test_src = load_pool(spec.test.path, columns=spec.test.columns, require=("prompt", "response"))
            pairs = list(zip(pool_src.column("prompt"), pool_src.column("response"), strict=True))
            test = list(zip(test_src.column("prompt"), test_src.column("response"), strict=True))
        if spec.pool_max:
            pairs = pairs[: spec.pool_max]
        tok = AutoTokenizer.from_pretrained(self._model())
        opts = self.options

        def cut(text: str, n: int) -> str:
            ids = tok(str(text), add_special_tokens=False)["input_ids"]
            return str(text) if len(ids) <= n else tok.decode(ids[:n]).strip()

        rows = [{"prompt": cut(p, opts["prompt_tokens"]), "response": cut(r, opts["response_tokens"])} for p, r in pairs]
        test = test[: int(opts["eval_n"])]
        self._data[name] = {
            "pool": load_pool(rows, require=("prompt", "response")),
            "test_prompts": [cut(p, opts["prompt_tokens"]) for p, _ in test],
            "test_responses": [cut(r, opts["response_tokens"]) for _, r in test],
        }
        logger.info("sft dataset %s: pool %d, %d held-out pairs", name, len(rows), len(test))
        return self._data[name]

    # ------------------------------------------------------------------ one cell

    def run(self, cell, run_dir: Path, metrics_log):
        import math
        import time

        from curate.bench.cells import build_ledger, build_stopping
        from curate.build import annotator_from, loop_from
        from curate.config import AnnotatorConfig
        from curate.responses import ResponseLearner

        from .run import heldout_loglik, sft_strategy

        d = self.data(cell.dataset)
        pool, opts = d["pool"], self.options
        schedule = self.config.schedules[cell.schedule]
        learner = ResponseLearner(pool, self._model(), run_dir=run_dir, lora=opts["lora"],
                                  train={**opts["train"], "seed": cell.seed}, max_length=int(opts["max_length"]),
                                  max_new_tokens=int(opts["answer_tokens"]), device=self.config.lm.device, seed=cell.seed)
        spec = self.config.strategy(cell.strategy)

        def build(name: str, params: dict):
            from .run import ALIASES

            own = {"sample": int(opts["sample"]), "samples": int(opts["samples"])}
            return sft_strategy(name, learner, params={**(own if ALIASES.get(name, name).startswith("answer_") else {}),
                                                       **params}, seed=cell.seed, batch_size=schedule.batch)

        strategy = build(spec.name, spec.params)
        init_name = self.config.init_for(cell)
        init = strategy if init_name == cell.strategy else build(self.config.strategy(init_name).name,
                                                                  self.config.strategy(init_name).params)

        def measure(model_learner) -> dict[str, Any]:
            clock = time.perf_counter()
            loglik = heldout_loglik(model_learner, d["test_prompts"], d["test_responses"])
            return {"sft_loglik": loglik, "sft_perplexity": math.exp(-loglik),
                    "eval_seconds": time.perf_counter() - clock}

        loop = loop_from(pool, strategy=strategy, annotator=annotator_from(AnnotatorConfig(kind="gold", column="response"), labels=None),
                         learner=learner, run_dir=run_dir, init=init, init_size=schedule.init,
                         batch_size=schedule.batch, stopping=build_stopping(self.config, cell),
                         ledger=build_ledger(self.config, cell), evaluate=metrics_log.evaluator(measure),
                         seed=cell.seed)
        result = loop.run()
        # Round models are large and the table holds what the benchmark measured: keep the folder small.
        import shutil

        shutil.rmtree(run_dir / "model", ignore_errors=True)
        return result
