"""A backend on vLLM's offline engine (``vllm.LLM``), for scoring and sampling at GPU speed in-process.

``vllm`` is imported on first use, never at module import, so ``import curate`` stays light and this
module imports on machines without a GPU. Completion log-probs come from ``prompt_logprobs``: vLLM scores
every prompt token given the ones before it, so we send prompt + completion as one prompt and keep the
positions after the prompt's own tokens.

vLLM returns only the top-k log-probs at each position, never the full distribution, so the per-token
``entropy`` of its :class:`TokenLogprobs` is a lower bound (:func:`~curate.backends.base.entropy_lower_bound`)
from the top ``max_logprobs`` (vLLM's engine argument, default 20) of each generated token, and from the top
1 of each scored prompt token (scoring stays cheap; the bound there is coarse).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from curate.backends.base import (
    BaseBackend,
    Generation,
    TokenLogprobs,
    _check_same_length,
    entropy_lower_bound,
)
from curate.errors import BackendError, ConfigError, MissingDependencyError

__all__ = ["VLLMBackend"]

# vLLM's default max_logprobs: the most log-probs per position it returns unless the engine allows more.
DEFAULT_TOP_LOGPROBS = 20


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as exc:
        raise MissingDependencyError(
            "VLLMBackend needs the 'vllm' package, which is not installed. On a Linux machine with a CUDA "
            "GPU, pip install vllm (or pip install 'curate[vllm]') into an environment whose torch is the "
            "one that vLLM release wants: it brings its own CUDA torch, so never install it over the CPU "
            "torch of a ./run environment. Or use lm.backend hf or openai (a served vLLM) instead."
        ) from exc
    return vllm


class VLLMBackend(BaseBackend):
    """Scores and samples with ``vllm.LLM``; the engine is built on first use.

    Parameters
    ----------
    model : a Hugging Face model name or local path.
    seed : the engine's seed (per-call sampling seeds are passed to ``generate``).
    engine_kwargs : passed unchanged to ``vllm.LLM`` (``dtype``, ``gpu_memory_utilization``,
        ``max_model_len``, ``tensor_parallel_size``, ...); a recipe's ``lm.options``. Its ``max_logprobs``
        (vLLM's default: 20) is also how many top log-probs each generated token's entropy bound reads.
    """

    name = "vllm"

    def __init__(self, model: str, *, seed: int = 0, engine_kwargs: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.model = model
        self.seed = seed
        self.engine_kwargs = engine_kwargs
        self._vllm: Any = None
        self._llm: Any = None

    def _engine(self) -> Any:
        if self._llm is None:
            self._vllm = _import_vllm()
            from curate.models import resolve_lm

            # The embedded default LM's name maps to its converted local folder, as for transformers.
            self._llm = self._vllm.LLM(model=resolve_lm(self.model), seed=self.seed, **dict(self.engine_kwargs or {}))
        return self._llm

    @property
    def top_logprobs(self) -> int:
        """Log-probs per generated token asked of vLLM: the engine's ``max_logprobs`` (-1: no cap)."""
        cap = int((self.engine_kwargs or {}).get("max_logprobs", DEFAULT_TOP_LOGPROBS))
        return DEFAULT_TOP_LOGPROBS if cap < 0 else cap

    @property
    def tokenizer(self) -> Any:
        return self._engine().get_tokenizer()

    def completion_logprobs(self, prompts: Sequence[str], completions: Sequence[str]) -> list[TokenLogprobs]:
        _check_same_length(prompts, completions, "prompts", "completions")
        llm, tokenizer = self._engine(), self.tokenizer
        # We tokenize ourselves and send token ids, so the boundary we count is the one vLLM scores.
        # A token that merges across the boundary falls on the prompt side.
        full_ids = [list(tokenizer.encode(p + c)) for p, c in zip(prompts, completions, strict=True)]
        starts = [len(tokenizer.encode(p)) for p in prompts]
        runs = [_empty_run() for _ in full_ids]
        todo = [i for i, ids in enumerate(full_ids) if ids]  # vLLM refuses an empty prompt
        if todo:
            # prompt_logprobs=1 rather than 0: the chosen token is always included, and 0 risks reading
            # as "off"; max_tokens=1 because vLLM must generate at least one token, which we ignore.
            params = self._vllm.SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=1)
            outputs = llm.generate([{"prompt_token_ids": full_ids[i]} for i in todo], params, use_tqdm=False)
            self._record_usage(outputs, kind="logprobs")
            for i, out in zip(todo, outputs, strict=True):
                runs[i] = self._prompt_run(out, full_ids[i], starts[i])
        return runs

    def _prompt_run(self, out: Any, ids: list[int], start: int) -> TokenLogprobs:
        per_position = out.prompt_logprobs
        if per_position is None or len(per_position) != len(ids):
            raise BackendError(
                f"vLLM returned prompt_logprobs for {None if per_position is None else len(per_position)} "
                f"positions; expected {len(ids)}. Is this vLLM version >= 0.6?"
            )
        tokens, values, entropy = [], [], []
        for position in range(start, len(ids)):
            candidates = per_position[position]
            if candidates is None:  # the first token of a text has no context, so no log-prob
                continue
            token, logprob = self._chosen(candidates, ids[position])
            tokens.append(token)
            values.append(logprob)
            entropy.append(_entropy(candidates, 1))
        return TokenLogprobs(tuple(tokens), np.array(values, dtype=np.float64), np.array(entropy, dtype=np.float64))

    def _chosen(self, candidates: Mapping[int, Any], token_id: int) -> tuple[str, float]:
        """The text and log-prob of the token actually present, from vLLM's ``{token_id: Logprob}``."""
        entry = candidates.get(token_id)
        if entry is None:
            raise BackendError(
                f"vLLM's log-probs lack the chosen token id {token_id}; got ids {list(candidates)}."
            )
        text = entry.decoded_token if entry.decoded_token is not None else self.tokenizer.decode([token_id])
        return text, float(entry.logprob)

    def generate(
        self,
        prompts: Sequence[str],
        *,
        n: int = 1,
        max_new_tokens: int = 64,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | None = None,
    ) -> list[list[Generation]]:
        if not isinstance(n, int) or n < 1:
            raise ConfigError(f"'n' must be an int >= 1 (samples per prompt). Got {n!r} instead.")
        if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ConfigError(f"'max_new_tokens' must be an int >= 1. Got {max_new_tokens!r} instead.")
        llm = self._engine()
        params = self._vllm.SamplingParams(
            n=n, temperature=temperature, top_p=top_p, seed=seed, max_tokens=max_new_tokens, logprobs=self.top_logprobs
        )
        outputs = llm.generate(list(prompts), params, use_tqdm=False)
        self._record_usage(outputs, kind="generate")
        return [[self._generation(c) for c in sorted(out.outputs, key=lambda c: c.index)] for out in outputs]

    def _generation(self, completion: Any) -> Generation:
        steps = completion.logprobs or []
        if len(steps) != len(completion.token_ids):
            raise BackendError(
                f"vLLM returned log-probs for {len(steps)} of {len(completion.token_ids)} generated tokens."
            )
        chosen = [self._chosen(step, tid) for step, tid in zip(steps, completion.token_ids, strict=True)]
        k = self.top_logprobs
        return Generation(
            text=completion.text,
            logprobs=TokenLogprobs(
                tuple(t for t, _ in chosen),
                np.array([v for _, v in chosen], dtype=np.float64),
                np.array([_entropy(step, k) for step in steps], dtype=np.float64),
            ),
            finish_reason=completion.finish_reason or "stop",
        )

    def chat_prompt(self, messages: Sequence[dict[str, str]], *, add_generation_prompt: bool = True) -> str:
        return self.tokenizer.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def _record_usage(self, outputs: Sequence[Any], kind: str) -> None:
        read = sum(len(out.prompt_token_ids or []) for out in outputs)
        written = sum(len(c.token_ids) for out in outputs for c in out.outputs)
        self.usage.add(read, written, kind=kind)


def _entropy(candidates: Mapping[int, Any], k: int) -> float:
    """The entropy lower bound at one position from vLLM's ``{token_id: Logprob}`` (top ``k`` + chosen)."""
    return entropy_lower_bound([float(entry.logprob) for entry in candidates.values()], k)


def _empty_run() -> TokenLogprobs:
    return TokenLogprobs((), np.zeros(0, dtype=np.float64), np.zeros(0, dtype=np.float64))
