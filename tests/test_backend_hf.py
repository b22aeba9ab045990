"""The transformers backend against a direct full-logits computation, on a tiny model from config."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curate.backends.hf import TransformersBackend, length_buckets
from curate.errors import ConfigError

PROMPTS = ["the film was", "a", "what is the capital of france? the answer is", "numbers 0 1 2"]
COMPLETIONS = [" wonderful and moving", " cat", " paris.", " 3 4 5 6 7 8 9"]


def naive_completion_logprobs(backend, prompt: str, completion: str) -> np.ndarray:
    """One sequence at a time, full logits at every position: the reference."""
    import torch

    tok = backend.tokenizer
    p_ids = backend._prefix() + tok(prompt, add_special_tokens=False)["input_ids"]
    c_ids = tok(completion, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([p_ids + c_ids])
    with torch.no_grad():
        logp = torch.log_softmax(backend.model(ids).logits[0].double(), -1)
    return np.array([logp[len(p_ids) + j - 1, t].item() for j, t in enumerate(c_ids)])


def test_completion_logprobs_equal_full_logits_reference(tiny_backend):
    runs = tiny_backend.completion_logprobs(PROMPTS, COMPLETIONS)
    for run, p, c in zip(runs, PROMPTS, COMPLETIONS, strict=True):
        ref = naive_completion_logprobs(tiny_backend, p, c)
        np.testing.assert_allclose(run.logprobs, ref, atol=1e-4)
        assert "".join(run.tokens).replace("Ġ", " ") == c
        assert run.entropy is not None and (run.entropy > 0).all()
    assert tiny_backend.usage.input_tokens > 0 and tiny_backend.usage.calls >= 2  # several length buckets


def test_sequence_logprobs_and_perplexity(tiny_backend):
    texts = ["the cat sat on the mat", "numbers 0 1 2 3"]
    runs = tiny_backend.sequence_logprobs(texts)
    first = tiny_backend.tokenizer(texts[0], add_special_tokens=False)["input_ids"]
    assert len(runs[0].logprobs) == len(first) - 1  # the first token has no context
    ppl = tiny_backend.perplexity(texts)
    np.testing.assert_allclose(ppl, [np.exp(-r.logprobs.mean()) for r in runs])
    with pytest.raises(ConfigError, match="same length"):
        tiny_backend.perplexity(texts, prompts=["x"])


def test_option_logprobs_fast_path_equals_general_path(tiny_backend):
    prompts = ["the film was", "the food was cold and the service"]
    options = ["no", "yes"]
    assert all(len(tiny_backend._encode(o)) == 1 for o in options)  # the single-token fast path applies
    fast = tiny_backend.option_logprobs(prompts, options, normalize=False)
    general = super(TransformersBackend, tiny_backend).option_logprobs(prompts, options, normalize=False)
    np.testing.assert_allclose(fast, general, atol=1e-4)
    norm = tiny_backend.option_logprobs(prompts, options)
    np.testing.assert_allclose(np.exp(norm).sum(1), 1.0)
    multi = tiny_backend.option_logprobs(prompts, ["wonderful film", "boring ending"])
    assert multi.shape == (2, 2) and np.allclose(np.exp(multi).sum(1), 1.0)
    with pytest.raises(ConfigError, match="at least two options"):
        tiny_backend.option_logprobs(prompts, ["yes"])
    with pytest.raises(ConfigError, match="distinct"):
        tiny_backend.option_logprobs(prompts, ["yes", "yes"])


def test_generation_is_seeded_and_its_logprobs_rescore_exactly(tiny_backend):
    a = tiny_backend.generate(PROMPTS[:2], n=3, max_new_tokens=6, temperature=1.0, seed=7)
    b = tiny_backend.generate(PROMPTS[:2], n=3, max_new_tokens=6, temperature=1.0, seed=7)
    assert [[g.text for g in row] for row in a] == [[g.text for g in row] for row in b]
    assert [len(row) for row in a] == [3, 3]
    # The reported log-probs are the model's own: rescoring the sampled tokens gives the same numbers.
    gen = a[0][0]
    tok = tiny_backend.tokenizer
    p_ids = tiny_backend._prefix() + tok(PROMPTS[0], add_special_tokens=False)["input_ids"]
    c_ids = tok.convert_tokens_to_ids(list(gen.logprobs.tokens))
    import torch

    with torch.no_grad():
        logp = torch.log_softmax(tiny_backend.model(torch.tensor([p_ids + c_ids])).logits[0].double(), -1)
    ref = [logp[len(p_ids) + j - 1, t].item() for j, t in enumerate(c_ids)]
    np.testing.assert_allclose(gen.logprobs.logprobs, ref, atol=1e-4)
    assert tiny_backend.usage.output_tokens > 0


def test_greedy_generation_is_deterministic_and_stops(tiny_backend):
    out1 = tiny_backend.generate(PROMPTS, max_new_tokens=5, temperature=0)
    out2 = tiny_backend.generate(list(reversed(PROMPTS)), max_new_tokens=5, temperature=0)
    assert [r[0].text for r in out1] == [r[0].text for r in reversed(out2)]  # batching/order-independent
    for row in out1:
        assert row[0].finish_reason in ("stop", "length")
        assert len(row[0].logprobs.logprobs) <= 5
    with pytest.raises(ConfigError, match="'n' parameter"):
        tiny_backend.generate(PROMPTS, n=0)


def test_chat_prompt_uses_the_tokenizer_template(tiny_backend):
    text = tiny_backend.chat_prompt([{"role": "user", "content": "hi"}])
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_long_prompts_are_cut_from_the_left(tiny_lm_dir):
    backend = TransformersBackend(str(tiny_lm_dir), device="cpu", max_length=16)
    run = backend.completion_logprobs(["the cat sat on the mat " * 10], [" the film"])[0]
    assert len(run.logprobs) == len(backend._encode(" the film"))
    with pytest.raises(ConfigError, match="does not fit"):
        backend.completion_logprobs(["x"], [" the cat sat on the mat" * 10])


@settings(max_examples=60, deadline=None)
@given(lengths=st.lists(st.integers(1, 50), min_size=0, max_size=40), budget=st.integers(50, 200),
       size=st.integers(1, 8))
def test_length_buckets_cover_everything_within_budget(lengths, budget, size):
    batches = length_buckets(lengths, max_batch_tokens=budget, max_batch_size=size)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(len(lengths)))
    for b in batches:
        assert len(b) <= size
        assert len(b) == 1 or max(lengths[i] for i in b) * len(b) <= budget


@pytest.mark.real
def test_real_smollm2_scores_sensibly():
    backend = TransformersBackend(device="cpu")
    ppl = backend.perplexity(["The cat sat on the mat and purred.", "mat purred the and on cat sat The."])
    assert ppl[0] * 5 < ppl[1]
    prompts = [backend.chat_prompt([{"role": "user", "content": f"Is '{review}' positive or negative? "
                                     "Answer with one word."}])
               for review in ("I loved every minute of it!", "I hated every minute of it.")]
    p = np.exp(backend.option_logprobs(prompts, ["Positive", "Negative"]))[:, 0]
    assert p[0] > p[1], p  # a 135M model leans "Positive" overall; the ordering is what holds
    gen = backend.generate([backend.chat_prompt([{"role": "user", "content": "What is 2+2?"}])],
                           max_new_tokens=12, temperature=0)[0][0]
    assert "4" in gen.text and gen.logprobs.mean > -2


def test_shared_prompt_head_is_computed_once_with_identical_results(tiny_lm_dir):
    head = "the film was wonderful and moving. the food was cold and the service rude. "
    prompts = [head + tail for tail in ("the cat sat", "a great phone", "what is the capital", "numbers 0 1 2 3 4")]
    with_head = TransformersBackend(str(tiny_lm_dir), device="cpu", max_batch_size=3, min_shared_prefix=4)
    without = TransformersBackend(str(tiny_lm_dir), device="cpu", max_batch_size=3, min_shared_prefix=10**6)
    a = with_head.option_logprobs(prompts, ["yes", "no"], normalize=False)
    b = without.option_logprobs(prompts, ["yes", "no"], normalize=False)
    np.testing.assert_allclose(a, b, atol=1e-4)
    assert with_head.usage.input_tokens < without.usage.input_tokens  # the head was read once, not four times


def test_score_options_reuses_each_groups_head_with_the_same_results(tiny_lm_dir):
    heads = ["the film was wonderful and moving. the food was cold and the service rude. ",
             "a great phone with a long battery life. terrible plot and a boring ending. "]
    tails = ["the cat sat", "a great phone", "what is the capital", "numbers 0 1 2 3 4"]
    prompts = [h + t for h in heads for t in tails] + ["positive negative neutral"]
    groups = ["a"] * 4 + ["b"] * 4 + ["c"]
    backend = TransformersBackend(str(tiny_lm_dir), device="cpu", min_shared_prefix=4)
    alone = TransformersBackend(str(tiny_lm_dir), device="cpu", min_shared_prefix=10**6)
    reference = alone.option_logprobs(prompts, ["yes", "no"], normalize=False)
    result = backend.score_options(prompts, ["yes", "no"], groups=groups, normalize=False, max_batch_tokens=64,
                                   max_batch_size=2)
    np.testing.assert_allclose(result.logprobs, reference, atol=1e-4)
    stats = result.stats
    assert stats.prompts == 9 and stats.groups == 3 and stats.shared_tokens > 0  # two shared heads, one alone
    assert stats.forward_tokens == backend.usage.input_tokens < alone.usage.input_tokens
    assert stats.forward_tokens + stats.shared_tokens == alone.usage.input_tokens  # every token once, heads once
    # groups=None: one group of all prompts, exactly option_logprobs.
    np.testing.assert_array_equal(backend.score_options(prompts, ["yes", "no"]).logprobs,
                                  backend.option_logprobs(prompts, ["yes", "no"]))
    # Options of several tokens are scored as completions; the tokens read still count.
    multi = backend.score_options(prompts[:2], ["wonderful film", "boring ending"], groups=["a", "a"])
    np.testing.assert_allclose(multi.logprobs, backend.option_logprobs(prompts[:2], ["wonderful film", "boring ending"]))
    assert multi.stats.prompts == 2 and multi.stats.forward_tokens > 0 and multi.stats.shared_tokens == 0
    empty = backend.score_options([], ["yes", "no"])
    assert empty.logprobs.shape == (0, 2) and empty.stats.prompts == 0
    with pytest.raises(ConfigError, match="one key per prompt"):
        backend.score_options(prompts, ["yes", "no"], groups=groups[:3])
