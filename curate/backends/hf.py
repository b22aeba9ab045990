"""The transformers backend: the default, on CPU or GPU.

Two things make it fast on a CPU, where the LM head (vocabulary x hidden, 49,152 x 576 for
SmolLM2) at every position costs a fifth of a forward pass and most of its memory:

* length bucketing: sequences are sorted by length and packed into batches under a token budget,
  so padding is small;
* logits only where needed: the backbone's hidden states are gathered at the positions being
  scored and only those go through the LM head (one position per prompt for option scoring);
* shared heads: option scoring (``score_options``, ``option_logprobs``) runs the token prefix that a
  group of prompts shares (an instruction, demonstrations) once and reuses its KV cache for the rest.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Hashable, Iterator, Sequence

import numpy as np

from curate.backends.base import (
    BaseBackend,
    Generation,
    OptionScores,
    ScoringStats,
    TokenLogprobs,
    _check_groups,
    _check_options,
    _check_same_length,
    log_softmax_rows,
)
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
        min_shared_prefix: option scoring runs a head of at least this many tokens that the prompts
            of a group share (a system prompt, demonstrations) once, and only the rest per prompt.
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

    def _head_logits(self, hidden):
        """The LM head on gathered hidden states, in float32, soft-capped where the model caps its logits."""
        import torch

        logits = self.model.get_output_embeddings()(hidden).float()
        cap = getattr(self.model.config, "final_logit_softcapping", None)
        return cap * torch.tanh(logits / cap) if cap else logits

    def _head_logprobs(self, hidden, targets, chunk: int = 1024):
        """Apply the LM head to gathered hidden states in chunks (bounded memory); return the
        targets' log-probs and the entropy of each full distribution."""
        import torch

        lps, ents = [], []
        for start in range(0, hidden.shape[0], chunk):
            logp = torch.log_softmax(self._head_logits(hidden[start:start + chunk]), dim=-1)
            lps.append(logp.gather(1, targets[start:start + chunk, None]).squeeze(1))
            ents.append(-(logp.exp() * logp).sum(-1))
        if not lps:
            return np.zeros(0), np.zeros(0)
        return torch.cat(lps).double().cpu().numpy(), torch.cat(ents).double().cpu().numpy()

    def option_logprobs(self, prompts: Sequence[str], options: Sequence[str], *, normalize: bool = True) -> np.ndarray:
        options = _check_options(options)
        if self._option_token_ids(options) is None:  # options of several tokens: scored as completions
            return super().option_logprobs(prompts, options, normalize=normalize)
        return self.score_options(prompts, options, normalize=normalize).logprobs

    def score_options(self, prompts: Sequence[str], options: Sequence[str], *, groups: Sequence[Hashable] | None = None,
                      normalize: bool = True, max_batch_tokens: int | None = None,
                      max_batch_size: int | None = None) -> OptionScores:
        """Option log-probs with each group's head (its prompts' longest common token prefix, when it
        has at least ``min_shared_prefix`` tokens) run once and its KV cache reused for every tail.

        1. the heads of several groups run as one batch (right-padded), keeping their KV cache;
        2. the cache rows are repeated for each group's tails, and the tails run as one batch after
           them with explicit position ids (head length + i), so padding inside the cache changes nothing;
        3. only the last position of each prompt goes through the LM head.

        Prompts that share no head run in plain length-sorted batches. Heads are cut at token level, so
        the result is the same as scoring each full prompt alone. Options that are not single distinct
        tokens are scored as completions (``option_logprobs``), without head reuse.
        """
        import torch

        options = _check_options(options)
        option_ids = self._option_token_ids(options)
        if option_ids is None:
            logger.info("options %s are not single distinct tokens: scoring them as completions", options)
            return super().score_options(prompts, options, groups=groups, normalize=normalize)
        prompts = list(prompts)
        _check_groups(groups, prompts)
        stats = ScoringStats(prompts=len(prompts))
        out = np.zeros((len(prompts), len(options)), dtype=np.float64)
        if not prompts:
            return OptionScores(out, stats)
        limit = self.context_length
        seqs = [(self._prefix() + self._encode(p))[-limit:] for p in prompts]  # the answer goes at the end
        if any(not s for s in seqs):
            raise ConfigError("option_logprobs needs non-empty prompts (the options are scored after them).")
        units, alone = self._split_heads(seqs, [0] * len(seqs) if groups is None else groups, stats)
        budget = (max_batch_tokens or self.max_batch_tokens, max_batch_size or self.max_batch_size)
        opt = torch.tensor(option_ids, dtype=torch.long)
        self._options_alone(alone, opt, budget, out, stats)
        self._options_after_heads(units, opt, budget, out, stats)
        return OptionScores(log_softmax_rows(out) if normalize else out, stats)

    def _split_heads(self, seqs: list[list[int]], groups: Sequence[Hashable], stats: ScoringStats):
        """``units``: (head ids, [(prompt position, tail ids)]) for each group whose prompts share a head
        of at least ``min_shared_prefix`` tokens; ``alone``: (prompt position, ids) for the rest."""
        members: dict[Hashable, list[int]] = {}
        for i, key in enumerate(groups):
            members.setdefault(key, []).append(i)
        units, alone = [], []
        for rows in members.values():
            head = _common_prefix_length([seqs[i] for i in rows]) if len(rows) > 1 else 0
            head = min(head, min(len(seqs[i]) for i in rows) - 1)  # every prompt keeps at least one own token
            if head < max(self.min_shared_prefix, 1):
                alone += [(i, seqs[i]) for i in rows]
                continue
            units.append((seqs[rows[0]][:head], [(i, seqs[i][head:]) for i in rows]))
            stats.shared_tokens += head * (len(rows) - 1)
        stats.groups += len(units) + len(alone)
        return units, alone

    def _option_token_ids(self, options: list[str]) -> list[int] | None:
        """The options' token ids when every option is one distinct token, else None."""
        first = [self._encode(o) for o in options]
        if all(len(t) == 1 for t in first) and len({t[0] for t in first}) == len(first):
            return [t[0] for t in first]
        return None

    def _padded_for_options(self, seqs: list[list[int]], stats: ScoringStats):
        ids, mask = self._pad(seqs, side="right")
        read = int(mask.sum())
        stats.forward_tokens += read
        self.usage.add(read, 0, kind="options")
        return ids, mask

    def _options_at(self, hidden, last: list[int], opt) -> np.ndarray:
        """Option log-probs from the hidden state at each row's ``last`` position (the LM head runs there only)."""
        import torch

        picked = hidden[torch.arange(len(last), device=hidden.device), torch.tensor(last, device=hidden.device)]
        return torch.log_softmax(self._head_logits(picked), dim=-1)[:, opt.to(hidden.device)].double().cpu().numpy()

    def _options_alone(self, items: list[tuple[int, list[int]]], opt, budget, out: np.ndarray, stats) -> None:
        import torch

        batches = length_buckets([len(seq) for _, seq in items], max_batch_tokens=budget[0], max_batch_size=budget[1])
        for batch in progress(batches, total=len(batches), desc="options", unit="batch"):
            seqs = [items[b][1] for b in batch]
            ids, mask = self._padded_for_options(seqs, stats)
            with torch.inference_mode():
                hidden = self._hidden(ids, mask)
                out[[items[b][0] for b in batch]] = self._options_at(hidden, [len(s) - 1 for s in seqs], opt)

    def _options_after_heads(self, units, opt, budget, out: np.ndarray, stats) -> None:
        import torch

        backbone, cache_kw, device = self._backbone(), self._cache_kwarg(), self.model.device
        max_tokens, max_rows = budget
        batches = length_buckets([len(head) for head, _ in units], max_batch_tokens=max_tokens, max_batch_size=max_rows)
        for batch in progress(batches, total=len(batches), desc="options", unit="head batch"):
            heads = [units[b][0] for b in batch]
            ids, mask = self._padded_for_options(heads, stats)
            with torch.inference_mode():
                result = backbone(input_ids=ids, attention_mask=mask, use_cache=True)
            cache = getattr(result, "cache", None) or result.past_key_values
            tails = sorted(((r, pos, tail) for r, b in enumerate(batch) for pos, tail in units[b][1]),
                           key=lambda t: -len(t[2]))
            step = max(1, min(max_rows, max_tokens // (ids.shape[1] + len(tails[0][2]))))
            for start in range(0, len(tails), step):
                chunk = tails[start:start + step]
                rows = torch.tensor([r for r, _, _ in chunk], dtype=torch.long, device=device)
                t_ids, t_mask = self._padded_for_options([t for _, _, t in chunk], stats)
                # Positions continue each row's own head, not the padded width: RoPE sees the same
                # offsets as in the unpadded prompt, while the mask hides the head's padding.
                positions = torch.stack([len(heads[r]) + torch.arange(t_ids.shape[1]) for r, _, _ in chunk])
                with torch.inference_mode():
                    hidden = backbone(input_ids=t_ids, attention_mask=torch.cat([mask[rows], t_mask], dim=1),
                                      position_ids=positions.to(device), use_cache=True,
                                      **{cache_kw: _select_rows(cache, rows)}).last_hidden_state
                    out[[pos for _, pos, _ in chunk]] = self._options_at(hidden, [len(t) - 1 for _, _, t in chunk], opt)

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


def _select_rows(cache, rows):
    """A cache holding ``rows`` of ``cache`` (repeats allowed); ``cache`` itself stays as it is.

    ``batch_select_indices`` replaces each layer's tensors by indexed copies, so copying the cache's
    layer objects (not their tensors) is enough; a cache without ``layers`` is deep-copied instead.
    """
    layers = getattr(cache, "layers", None)
    if layers is not None:
        view = copy.copy(cache)
        view.layers = [copy.copy(layer) for layer in layers]
    else:  # pragma: no cover - older cache classes
        view = copy.deepcopy(cache)
    view.batch_select_indices(rows)
    return view


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
