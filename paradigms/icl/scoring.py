"""Option log-probs for many prompts that share heads: the ICL evaluation's inner loop.

ICL prompts repeat themselves: the prompt of a test input and its content-free twins (contextual
calibration) differ only after the demonstrations; with a fixed demonstration set every prompt
shares everything but the input. The core's ``TransformersBackend.option_logprobs`` reuses one head
shared by *all* prompts of a call; here prompts come in *groups* (by a key the caller gives, e.g.
the demonstration ids), and each group's head runs once:

1. the heads of several groups run as one batch (right-padded), keeping their KV cache;
2. the cache rows are repeated for each group's tails, and all tails run as one batch after them,
   with explicit position ids (``head length + i``), so padding inside the cache changes nothing;
3. only the last position of each tail goes through the LM head (no logits elsewhere).

Prompts that share nothing with another (per-input k-NN demonstrations, uncalibrated) run in plain
length-sorted batches without a cache, the LM head again only at their last position.

Heads and tails are cut at token level (the longest common prefix of a group's tokenised prompts),
so the result is the same as scoring each full prompt alone. Other backends (vLLM, HTTP servers,
test fakes) and options that are not single distinct tokens go to ``backend.option_logprobs``.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from curate.backends.base import log_softmax_rows
from curate.errors import ConfigError

__all__ = ["ScoringStats", "score_options"]

logger = logging.getLogger(__name__)


@dataclass
class ScoringStats:
    """What a call cost: prompts scored, tokens that went through the model, and tokens saved by sharing."""

    prompts: int = 0
    forward_tokens: int = 0
    shared_tokens: int = 0  # tokens that would have run again without head sharing
    groups: int = 0


def _hf_parts(backend):
    """(model, tokenizer, prefix ids, context) for a transformers backend, else None."""
    try:
        from curate.backends.hf import TransformersBackend
    except ImportError:  # pragma: no cover - ships with curate
        return None
    if not isinstance(backend, TransformersBackend):
        return None
    tok = backend.tokenizer
    prefix = [tok.bos_token_id] if getattr(tok, "add_bos_token", False) and tok.bos_token_id is not None else []
    return backend.model, tok, prefix, backend.context_length


def score_options(backend, prompts: Sequence[str], options: Sequence[str], *, groups: Sequence[Hashable] | None = None,
                  max_batch_tokens: int = 4096, max_batch_size: int = 16, stats: ScoringStats | None = None) -> np.ndarray:
    """``(len(prompts), len(options))`` log-probs of each option after each prompt, renormalised over
    the options (log-softmax per row).

    Args:
        groups: one key per prompt; prompts with equal keys share a head (e.g. the same
            demonstrations) that runs once. None: each prompt alone (still batched).
        max_batch_tokens / max_batch_size: the padded tokens and rows of one forward batch.
        stats: filled with what the call cost, when given.
    """
    prompts = list(prompts)
    options = list(options)
    if len(options) < 2 or len(set(options)) != len(options):
        raise ConfigError(f"score_options needs at least two distinct options. Got {options!r}.")
    if groups is not None and len(groups) != len(prompts):
        raise ConfigError(f"'groups' must have one key per prompt: {len(groups)} keys for {len(prompts)} prompts.")
    stats = stats if stats is not None else ScoringStats()
    stats.prompts += len(prompts)
    if not prompts:
        return np.zeros((0, len(options)))
    parts = _hf_parts(backend)
    option_ids = None
    if parts is not None:
        first = [parts[1].encode(o, add_special_tokens=False) for o in options]
        if all(len(t) == 1 for t in first) and len({t[0] for t in first}) == len(first):
            option_ids = [t[0] for t in first]
        else:
            logger.info("options %s are not single distinct tokens: scoring through backend.option_logprobs", options)
    if option_ids is None:
        out = np.asarray(backend.option_logprobs(prompts, options, normalize=True), dtype=np.float64)
        if out.shape != (len(prompts), len(options)):
            raise ConfigError(f"option_logprobs returned shape {out.shape}; expected ({len(prompts)}, {len(options)}).")
        return out
    model, tok, prefix, context = parts
    seqs = []
    for p in prompts:
        ids = prefix + tok.encode(p, add_special_tokens=False)
        if len(ids) > context:
            ids = ids[-context:]  # as the backend does: the end of the prompt is where the answer goes
        if len(ids) < 2:
            raise ConfigError(f"score_options needs prompts of at least two tokens; {p!r} has {len(ids)}.")
        seqs.append(ids)
    keys = list(range(len(prompts))) if groups is None else list(groups)
    members: dict[Hashable, list[int]] = {}
    for i, key in enumerate(keys):
        members.setdefault(key, []).append(i)
    units = []  # (head ids, [(prompt position, tail ids)]): groups that share a head
    alone = []  # (prompt position, ids): prompts that share nothing, scored in one pass without a cache
    for rows in members.values():
        head = _common_prefix_length([seqs[i] for i in rows])
        head = min(head, min(len(seqs[i]) for i in rows) - 1)  # every prompt keeps at least its last token
        if len(rows) == 1 or head == 0:
            alone += [(i, seqs[i]) for i in rows]
            continue
        units.append((seqs[rows[0]][:head], [(i, seqs[i][head:]) for i in rows]))
        stats.shared_tokens += head * (len(rows) - 1)
    stats.groups += len(units) + len(alone)
    out = np.zeros((len(prompts), len(options)), dtype=np.float64)
    before = stats.forward_tokens  # a caller's stats may already count earlier calls
    runner = _Runner(model, option_ids, max_batch_tokens, max_batch_size, stats)
    runner.alone(alone, out)
    runner.grouped(units, out)
    if hasattr(backend, "usage"):
        backend.usage.add(stats.forward_tokens - before, 0, kind="options")
    return log_softmax_rows(out)


def _common_prefix_length(seqs: list[list[int]]) -> int:
    first = seqs[0]
    n = min(len(s) for s in seqs)
    for s in seqs[1:]:
        i = 0
        while i < n and s[i] == first[i]:
            i += 1
        n = i
    return n


def _cache_kwarg(backbone) -> str:
    """transformers 5 renamed ``past_key_values`` to ``cache``; use whichever this model takes."""
    import inspect

    return "cache" if "cache" in inspect.signature(backbone.forward).parameters else "past_key_values"


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


class _Runner:
    """Forward passes for ``score_options``: plain batches for prompts alone, heads then tails for groups."""

    def __init__(self, model, option_ids: list[int], max_batch_tokens: int, max_batch_size: int,
                 stats: ScoringStats) -> None:
        import torch

        self.backbone = getattr(model, model.base_model_prefix, None)
        self.head_layer = model.get_output_embeddings()
        if self.backbone is None or self.head_layer is None:
            raise ConfigError(f"{type(model).__name__} exposes no backbone/LM head pair; it cannot be scored.")
        self.cache_kw = _cache_kwarg(self.backbone)
        self.device = model.device
        self.cap = getattr(model.config, "final_logit_softcapping", None)
        self.options = torch.tensor(option_ids, dtype=torch.long, device=self.device)
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_size = max_batch_size
        self.stats = stats

    def _batches(self, lengths: list[int]) -> list[list[int]]:
        """Positions grouped longest first, each batch's padded size and row count under the limits."""
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        batches: list[list[int]] = []
        for i in order:
            current = batches[-1] if batches else None
            if (current is not None and len(current) < self.max_batch_size
                    and (len(current) + 1) * lengths[current[0]] <= self.max_batch_tokens):
                current.append(i)
            else:
                batches.append([i])
        return batches

    def _padded(self, seqs: list[list[int]]):
        import torch

        width = max(len(s) for s in seqs)
        ids = torch.zeros((len(seqs), width), dtype=torch.long)  # pad id 0: masked out everywhere
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for r, s in enumerate(seqs):
            ids[r, : len(s)] = torch.tensor(s)
            mask[r, : len(s)] = 1
        self.stats.forward_tokens += int(mask.sum())
        return ids.to(self.device), mask.to(self.device)

    def _options_at(self, hidden, last: list[int]) -> np.ndarray:
        """Option log-probs from the hidden state at each row's ``last`` position (the LM head runs there only)."""
        import torch

        rows = torch.arange(len(last), device=hidden.device)
        logits = self.head_layer(hidden[rows, torch.tensor(last, dtype=torch.long, device=hidden.device)]).float()
        if self.cap:
            logits = self.cap * torch.tanh(logits / self.cap)
        return torch.log_softmax(logits, dim=-1)[:, self.options].double().cpu().numpy()

    def alone(self, items: list[tuple[int, list[int]]], out: np.ndarray) -> None:
        import torch

        for batch in self._batches([len(seq) for _, seq in items]):
            seqs = [items[b][1] for b in batch]
            ids, mask = self._padded(seqs)
            with torch.inference_mode():
                hidden = self.backbone(input_ids=ids, attention_mask=mask).last_hidden_state
                out[[items[b][0] for b in batch]] = self._options_at(hidden, [len(s) - 1 for s in seqs])

    def grouped(self, units, out: np.ndarray) -> None:
        import torch

        for batch in self._batches([len(head) for head, _ in units]):
            heads = [units[b][0] for b in batch]
            ids, mask = self._padded(heads)
            with torch.inference_mode():
                result = self.backbone(input_ids=ids, attention_mask=mask, use_cache=True)
            cache = getattr(result, "cache", None) or result.past_key_values
            tails = sorted(((r, pos, tail) for r, b in enumerate(batch) for pos, tail in units[b][1]),
                           key=lambda t: -len(t[2]))
            step = max(1, min(self.max_batch_size, self.max_batch_tokens // (ids.shape[1] + len(tails[0][2]))))
            for start in range(0, len(tails), step):
                chunk = tails[start:start + step]
                rows = torch.tensor([r for r, _, _ in chunk], dtype=torch.long, device=self.device)
                t_ids, t_mask = self._padded([t for _, _, t in chunk])
                # Positions continue each row's own head, not the padded width: RoPE sees the same
                # offsets as in the unpadded prompt, while the mask hides the head's padding.
                positions = torch.stack([len(heads[r]) + torch.arange(t_ids.shape[1]) for r, _, _ in chunk])
                with torch.inference_mode():
                    hidden = self.backbone(input_ids=t_ids, attention_mask=torch.cat([mask[rows], t_mask], dim=1),
                                           position_ids=positions.to(self.device), use_cache=True,
                                           **{self.cache_kw: _select_rows(cache, rows)}).last_hidden_state
                    out[[pos for _, pos, _ in chunk]] = self._options_at(hidden, [len(t) - 1 for _, _, t in chunk])
