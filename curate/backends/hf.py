"""The transformers backend: the default, on CPU or GPU.

Two things make it fast on a CPU, where the LM head (vocabulary x hidden, 49,152 x 576 for
SmolLM2) at every position costs a fifth of a forward pass and most of its memory:

* length bucketing: sequences are sorted by length and packed into batches under a token budget,
  so padding is small;
* logits only where needed: the backbone's hidden states are gathered at the positions being
  scored and only those go through the LM head (one position per prompt for option scoring).
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Iterator, Sequence

import numpy as np

from curate.backends.base import BaseBackend, Generation, TokenLogprobs, _check_options, _check_same_length
from curate.errors import ConfigError
from curate.models import DEFAULT_LM, resolve_lm
from curate.progress import progress

__all__ = ["TransformersBackend", "length_buckets"]

logger = logging.getLogger(__name__)


def length_buckets(lengths: Sequence[int], *, max_batch_tokens: int, max_batch_size: int) -> list[list[int]]:
    """Group positions into batches of similar length: sorted longest first, each batch's padded
    size (longest x count) under ``max_batch_tokens`` and its count under ``max_batch_size``."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = lengths[current[0]] if current else lengths[i]
        if current and (len(current) + 1 > max_batch_size or longest * (len(current) + 1) > max_batch_tokens):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


class TransformersBackend(BaseBackend):
    """An ``AutoModelForCausalLM`` with its tokenizer.

    Args:
        model: a Hugging Face id or local path; the default is the embedded SmolLM2-135M-Instruct.
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
        dtype: ``"auto"`` (bfloat16 on CUDA, float32 on CPU), ``"float32"``, ``"bfloat16"``, ``"float16"``.
        max_batch_tokens: padded tokens per forward batch (memory knob).
        max_batch_size: sequences per forward batch.
        max_length: longest sequence fed to the model; longer prompts are cut from the left.
        min_shared_prefix: option scoring runs a head of at least this many tokens that every
            prompt shares (a system prompt, demonstrations) once, and only the rest per prompt.
    """

    def __init__(self, model: str = DEFAULT_LM, *, device: str = "auto", dtype: str = "auto",
                 max_batch_tokens: int = 8192, max_batch_size: int = 32, max_length: int | None = None,
                 min_shared_prefix: int = 8) -> None:
        super().__init__()
        self.model_name = model
        self.name = model
        self.device = device
        self.dtype = dtype
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_size = max_batch_size
        self.max_length = max_length
        self.min_shared_prefix = min_shared_prefix
        self._model = None
        self._tokenizer = None

    @classmethod
    def from_model(cls, model, tokenizer, **kwargs) -> TransformersBackend:
        """Wrap an already-loaded model and tokenizer (tests, or models built in memory)."""
        backend = cls(getattr(model, "name_or_path", "") or "in-memory", **kwargs)
        backend._model = model.eval()
        backend._tokenizer = tokenizer
        backend._prepare_tokenizer()
        return backend

    # ------------------------------------------------------------------ loading

    def _load(self):
        if self._model is None:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            device = self._resolve_device()
            dtype = {"auto": torch.bfloat16 if device.startswith("cuda") else torch.float32,
                     "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(self.dtype)
            if dtype is None:
                raise ConfigError(f"Unknown dtype '{self.dtype}'. Use auto, float32, bfloat16 or float16.")
            path = resolve_lm(self.model_name)
            self._tokenizer = AutoTokenizer.from_pretrained(path)
            self._model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
            self._prepare_tokenizer()
        return self._model, self._tokenizer

    def _resolve_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def _prepare_tokenizer(self) -> None:
        tok = self._tokenizer
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.convert_ids_to_tokens(0)

    @property
    def model(self):
        return self._load()[0]

    @property
    def tokenizer(self):
        return self._load()[1]

    @property
    def context_length(self) -> int:
        cfg = self.model.config
        limit = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None) or 2048
        return min(limit, self.max_length) if self.max_length else limit

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _prefix(self) -> list[int]:
        """Tokens that start every sequence (BOS for models trained with one)."""
        tok = self.tokenizer
        if getattr(tok, "add_bos_token", False) and tok.bos_token_id is not None:
            return [tok.bos_token_id]
        return []

    # ------------------------------------------------------------------ scoring

    def completion_logprobs(self, prompts: Sequence[str], completions: Sequence[str]) -> list[TokenLogprobs]:
        _check_same_length(prompts, completions, "prompts", "completions")
        model, tok = self._load()
        prefix = self._prefix()
        seqs, starts = [], []
        for prompt, completion in zip(prompts, completions, strict=True):
            p_ids = prefix + (self._encode(prompt) if prompt else [])
            c_ids = self._encode(completion)
            if not p_ids:
                # No context for the first token: it is not scored (as in sequence_logprobs).
                p_ids, c_ids = c_ids[:1], c_ids[1:]
            ids = p_ids + c_ids
            limit = self.context_length
            if len(ids) > limit:
                # Cut the prompt from the left; the completion is what is being scored.
                cut = len(ids) - limit
                if cut >= len(p_ids):
                    raise ConfigError(f"A completion of {len(c_ids)} tokens does not fit the context of {limit} tokens.")
                ids, p_ids = ids[cut:], p_ids[cut:]
            seqs.append(ids)
            starts.append(len(p_ids))
        targets = [(s, len(ids)) for s, ids in zip(starts, seqs, strict=True)]
        logprobs, entropies = self._score_positions(seqs, targets)
        out = []
        for ids, (s, e), lp, ent in zip(seqs, targets, logprobs, entropies, strict=True):
            out.append(TokenLogprobs(tuple(tok.convert_ids_to_tokens(ids[s:e])), lp, ent))
        return out

    def _score_positions(self, seqs: list[list[int]], targets: list[tuple[int, int]]):
        """Log-prob and entropy of tokens ``seq[s:e]`` for each sequence, batched by length."""
        import torch

        logprobs: list[np.ndarray] = [np.zeros(0)] * len(seqs)
        entropies: list[np.ndarray] = [np.zeros(0)] * len(seqs)
        batches = length_buckets([len(s) for s in seqs], max_batch_tokens=self.max_batch_tokens,
                                 max_batch_size=self.max_batch_size)
        for batch in progress(batches, total=len(batches), desc="scoring", unit="batch"):
            input_ids, mask = self._pad([seqs[i] for i in batch], side="right")
            # Positions p predict token p+1: gather hidden states at s-1 .. e-2 only.
            rows, cols, tgt = [], [], []
            for r, i in enumerate(batch):
                s, e = targets[i]
                rows += [r] * (e - s)
                cols += list(range(s - 1, e - 1))
                tgt += seqs[i][s:e]
            with torch.inference_mode():
                hidden = self._hidden(input_ids, mask)
                picked = hidden[torch.tensor(rows), torch.tensor(cols, dtype=torch.long)]
                lp, ent = self._head_logprobs(picked, torch.tensor(tgt, dtype=torch.long, device=picked.device))
            self.usage.add(int(mask.sum()), 0, kind="score")
            offset = 0
            for i in batch:
                s, e = targets[i]
                logprobs[i] = lp[offset:offset + e - s]
                entropies[i] = ent[offset:offset + e - s]
                offset += e - s
        return logprobs, entropies

    def _pad(self, seqs: list[list[int]], side: str):
        import torch

        width = max(len(s) for s in seqs)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for r, s in enumerate(seqs):
            if side == "right":
                ids[r, : len(s)] = torch.tensor(s)
                mask[r, : len(s)] = 1
            else:
                ids[r, width - len(s):] = torch.tensor(s)
                mask[r, width - len(s):] = 1
        device = self.model.device
        return ids.to(device), mask.to(device)

    def _backbone(self):
        model = self.model
        backbone = getattr(model, model.base_model_prefix, None)
        if backbone is None or model.get_output_embeddings() is None:
            raise ConfigError(f"{type(model).__name__} exposes no backbone/LM head pair; it cannot be scored.")
        return backbone

    def _cache_kwarg(self) -> str:
        """transformers 5.x renamed ``past_key_values`` to ``cache``; use whichever this model takes."""
        import inspect

        return "cache" if "cache" in inspect.signature(self._backbone().forward).parameters else "past_key_values"

    def _hidden(self, input_ids, mask):
        """Last hidden states from the backbone, skipping the LM head entirely."""
        return self._backbone()(input_ids=input_ids, attention_mask=mask).last_hidden_state

    def _head_logprobs(self, hidden, targets, chunk: int = 1024):
        """Apply the LM head to gathered hidden states in chunks (bounded memory); return the
        targets' log-probs and the entropy of each full distribution."""
        import torch

        head = self.model.get_output_embeddings()
        cap = getattr(self.model.config, "final_logit_softcapping", None)
        lps, ents = [], []
        for start in range(0, hidden.shape[0], chunk):
            logits = head(hidden[start:start + chunk]).float()
            if cap:
                logits = cap * torch.tanh(logits / cap)
            logp = torch.log_softmax(logits, dim=-1)
            lps.append(logp.gather(1, targets[start:start + chunk, None]).squeeze(1))
            ents.append(-(logp.exp() * logp).sum(-1))
        if not lps:
            return np.zeros(0), np.zeros(0)
        return torch.cat(lps).double().cpu().numpy(), torch.cat(ents).double().cpu().numpy()

    def option_logprobs(self, prompts: Sequence[str], options: Sequence[str], *, normalize: bool = True) -> np.ndarray:
        options = _check_options(options)
        first = [self._encode(o) for o in options]
        if all(len(t) == 1 for t in first) and len({t[0] for t in first}) == len(first):
            # Every option is one distinct token: one forward per prompt, logits at its last position.
            return self._single_token_options(prompts, [t[0] for t in first], normalize)
        return super().option_logprobs(prompts, options, normalize=normalize)

    def _single_token_options(self, prompts: Sequence[str], option_ids: list[int], normalize: bool) -> np.ndarray:
        import torch

        prefix = self._prefix()
        limit = self.context_length
        seqs = [(prefix + self._encode(p))[-limit:] for p in prompts]
        if any(not s for s in seqs):
            raise ConfigError("option_logprobs needs non-empty prompts (the options are scored after them).")
        # Prompts built from one template share a head (system prompt, instruction, demonstrations):
        # run it once and feed every batch only what follows it.
        shared = _common_prefix_length(seqs) if len(seqs) > 1 else 0
        shared = min(shared, min(len(s) for s in seqs) - 1)  # every prompt keeps at least one own token
        head_cache = None
        if shared >= self.min_shared_prefix:
            with torch.inference_mode():
                ids = torch.tensor([seqs[0][:shared]], device=self.model.device)
                head_out = self._backbone()(input_ids=ids, use_cache=True)
                head_cache = getattr(head_out, "cache", None) or head_out.past_key_values
            self.usage.add(shared, 0, kind="options")
        else:
            shared = 0
        tails = [s[shared:] for s in seqs]
        out = np.zeros((len(seqs), len(option_ids)), dtype=np.float64)
        opt = torch.tensor(option_ids, dtype=torch.long)
        batches = length_buckets([len(t) for t in tails], max_batch_tokens=self.max_batch_tokens,
                                 max_batch_size=self.max_batch_size)
        for batch in progress(batches, total=len(batches), desc="options", unit="batch"):
            input_ids, mask = self._pad([tails[i] for i in batch], side="right")
            last = torch.tensor([len(tails[i]) - 1 for i in batch], dtype=torch.long)
            with torch.inference_mode():
                if head_cache is None:
                    hidden = self._hidden(input_ids, mask)
                else:
                    cache = copy.deepcopy(head_cache)
                    cache.batch_repeat_interleave(len(batch))
                    full_mask = torch.cat([torch.ones((len(batch), shared), dtype=mask.dtype, device=mask.device), mask], 1)
                    hidden = self._backbone()(input_ids=input_ids, attention_mask=full_mask, use_cache=True,
                                              **{self._cache_kwarg(): cache}).last_hidden_state
                picked = hidden[torch.arange(len(batch)), last.to(hidden.device)]
                logits = self.model.get_output_embeddings()(picked).float()
                cap = getattr(self.model.config, "final_logit_softcapping", None)
                if cap:
                    logits = cap * torch.tanh(logits / cap)
                logp = torch.log_softmax(logits, dim=-1)[:, opt.to(logits.device)]
            self.usage.add(int(mask.sum()), 0, kind="options")
            out[batch] = logp.double().cpu().numpy()
        if normalize:
            from curate.backends.base import log_softmax_rows

            out = log_softmax_rows(out)
        return out

    # ------------------------------------------------------------------ generation

    def generate(self, prompts: Sequence[str], *, n: int = 1, max_new_tokens: int = 64, temperature: float = 1.0,
                 top_p: float = 1.0, seed: int | None = None) -> list[list[Generation]]:
        import torch

        if n < 1:
            raise ConfigError(f"The 'n' parameter of generate must be at least 1. Got {n} instead.")
        if temperature < 0:
            raise ConfigError(f"The 'temperature' parameter of generate must be >= 0. Got {temperature} instead.")
        model, tok = self._load()
        prefix = self._prefix()
        limit = self.context_length - max_new_tokens
        if limit <= 0:
            raise ConfigError(f"max_new_tokens={max_new_tokens} leaves no room in the context of {self.context_length}.")
        seqs = [(prefix + self._encode(p))[-limit:] for p in prompts]
        results: list[list[Generation]] = [[] for _ in prompts]
        sample = temperature > 0
        batches = length_buckets([len(s) for s in seqs], max_batch_tokens=max(self.max_batch_tokens // max(n, 1), 1),
                                 max_batch_size=max(self.max_batch_size // n, 1))
        with _seeded(seed):
            for batch in progress(batches, total=len(batches), desc="generating", unit="batch"):
                input_ids, mask = self._pad([seqs[i] for i in batch], side="left")
                kwargs = {"do_sample": sample, "max_new_tokens": max_new_tokens, "num_return_sequences": n,
                          "pad_token_id": tok.pad_token_id, "return_dict_in_generate": True, "output_logits": True}
                if sample:
                    kwargs.update(temperature=temperature, top_p=top_p, top_k=None)
                else:
                    kwargs.update(temperature=None, top_p=None, top_k=None)
                with torch.inference_mode():
                    out = model.generate(input_ids=input_ids, attention_mask=mask, **kwargs)
                new = out.sequences[:, input_ids.shape[1]:]
                logp = torch.log_softmax(torch.stack(out.logits, dim=1).float(), dim=-1)  # raw model distribution
                token_lp = logp.gather(2, new[:, :, None]).squeeze(2)
                entropy = -(logp.exp() * logp).sum(-1)
                produced = 0
                for row in range(new.shape[0]):
                    ids = new[row].tolist()
                    end, reason = len(ids), "length"
                    for j, t in enumerate(ids):
                        if t in self._stop_ids():
                            end, reason = j, "stop"
                            break
                    produced += end
                    gen = Generation(
                        text=tok.decode(ids[:end], skip_special_tokens=True),
                        logprobs=TokenLogprobs(tuple(tok.convert_ids_to_tokens(ids[:end])),
                                               token_lp[row, :end].double().cpu().numpy(),
                                               entropy[row, :end].double().cpu().numpy()),
                        finish_reason=reason,
                    )
                    results[batch[row // n]].append(gen)
                self.usage.add(int(mask.sum()), produced, kind="generate")
        return results

    def _stop_ids(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        return set(eos if isinstance(eos, list) else [eos]) - {None}

    def chat_prompt(self, messages: Sequence[dict[str, str]], *, add_generation_prompt: bool = True) -> str:
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            return tok.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=add_generation_prompt)
        logger.warning("%s has no chat template; using a plain 'role: content' layout", self.name)
        text = "".join(f"{m['role']}: {m['content']}\n" for m in messages)
        return text + ("assistant:" if add_generation_prompt else "")


def _common_prefix_length(seqs: list[list[int]]) -> int:
    first = seqs[0]
    n = min(len(s) for s in seqs)
    for s in seqs[1:]:
        i = 0
        while i < n and s[i] == first[i]:
            i += 1
        n = i
        if n == 0:
            break
    return n


@contextlib.contextmanager
def _seeded(seed: int | None) -> Iterator[None]:
    """Seed torch for one call without disturbing the caller's global RNG state."""
    if seed is None:
        yield
        return
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
