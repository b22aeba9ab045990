"""The OpenAI-compatible backend against a chat-only server of our own (tests/servers/chat_only.py), as
hosted APIs are today: ``/v1/chat/completions`` with ``logprobs`` / ``top_logprobs``, and 404 on
``/v1/completions``. The server runs a tiny Llama built from a config; the transformers backend on the
same folder is the reference, so option scores, greedy answers, annotations and verdicts must agree.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from servers.chat_only import create_app, serve  # noqa: E402

from curate.backends.openai_compat import OpenAICompatibleBackend  # noqa: E402
from curate.errors import BackendError, ConfigError  # noqa: E402

TOLERANCE = 1e-3
CHAT = "/v1/chat/completions"
CONVERSATIONS = [
    [{"role": "user", "content": "the film was wonderful and moving"}],
    [{"role": "system", "content": "Answer yes or no."}, {"role": "user", "content": "the food was cold"}],
    [{"role": "user", "content": "a great phone?"}, {"role": "assistant", "content": "yes"},
     {"role": "user", "content": "terrible plot and a boring ending?"}],
]


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory):
    """A tiny Llama whose next-token distributions are far from uniform (a large init), so that scores
    that agree say something; saved with the ChatML tokenizer of the other tests."""
    import torch
    from conftest import build_tiny_tokenizer, save_lm
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny-chat-lm")
    tok = build_tiny_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=True, initializer_range=0.3, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return save_lm(LlamaForCausalLM(config).eval(), tok, folder)


@pytest.fixture(scope="module")
def server(lm_dir):
    app = create_app(str(lm_dir))
    with serve(app) as base_url:
        yield app, base_url


@pytest.fixture
def api(server, lm_dir):
    app, base_url = server
    app.state.paths.clear()
    app.state.bodies.clear()
    # Every token of the tiny vocabulary is listed, so no option falls outside top_logprobs.
    with OpenAICompatibleBackend("tiny", base_url=base_url, tokenizer=str(lm_dir), top_logprobs=400,
                                 max_retries=0) as backend:
        yield backend


@pytest.fixture(scope="module")
def hf(lm_dir):
    from curate.backends.hf import TransformersBackend

    return TransformersBackend(str(lm_dir), device="cpu")


def max_delta(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))))


def test_chat_prompt_is_the_models_template_not_a_handwritten_one(api, hf, lm_dir):
    for messages in CONVERSATIONS:
        assert api.chat_prompt(messages) == hf.chat_prompt(messages)
    # The model's own folder gives the tokenizer when the model is named by its path.
    local = OpenAICompatibleBackend(str(lm_dir))
    assert local.chat_prompt(CONVERSATIONS[0]) == hf.chat_prompt(CONVERSATIONS[0])


def test_option_scores_over_chat_agree_with_the_hf_backend(api, hf, server):
    app, _ = server
    prompts = [api.chat_prompt(m) for m in CONVERSATIONS]
    # Single tokens; "A"/"B" as the judge asks; "negative" is three tokens told apart by its first.
    for options in (["yes", "no"], ["A", "B"], ["yes", "no", "the", "positive"]):
        for normalize in (True, False):
            ours = api.option_logprobs(prompts, options, normalize=normalize)
            reference = hf.option_logprobs(prompts, options, normalize=normalize)
            assert ours.shape == (3, len(options))
            assert max_delta(ours, reference) < TOLERANCE, (options, normalize, ours, reference)
    result = api.score_options(prompts, ["yes", "no"], groups=[0, 0, 1])
    assert max_delta(result.logprobs, hf.option_logprobs(prompts, ["yes", "no"])) < TOLERANCE
    assert set(app.state.paths) == {CHAT}
    # The last call's requests ran concurrently: each conversation went once, in whichever order.
    last = app.state.bodies[-3:]
    assert all(b["max_tokens"] == 1 and b["logprobs"] is True and b["top_logprobs"] == 400 for b in last)
    assert sorted(map(str, (b["messages"] for b in last))) == sorted(map(str, CONVERSATIONS))
    assert api.usage.by_kind["options"] == len(app.state.bodies) and api.usage.input_tokens > 0


def test_an_option_outside_top_logprobs_gets_an_upper_bound(server, lm_dir, hf, caplog):
    _, base_url = server
    backend = OpenAICompatibleBackend("tiny", base_url=base_url, tokenizer=str(lm_dir), top_logprobs=1)
    prompts = [backend.chat_prompt(m) for m in CONVERSATIONS]
    options = ["yes", "no", "the"]
    with caplog.at_level(logging.WARNING, logger="curate.backends.openai_compat"):
        ours = backend.option_logprobs(prompts, options, normalize=False)
    reference = hf.option_logprobs(prompts, options, normalize=False)
    assert np.all(reference <= ours + 1e-6)  # a bound, never below the true log-prob
    assert "upper bound" in caplog.text


def test_llm_annotation_over_chat_agrees_with_the_hf_backend(api, hf, server):
    from curate.annotate.llm import LLMAnnotator
    from curate.pool import load_pool

    app, _ = server
    texts = ["the film was wonderful", "the food was cold and the service rude", "a great phone", "a boring ending"]
    pool = load_pool([{"text": t, "label": "yes"} for t in texts])
    ids = np.arange(len(texts))
    kwargs = {"instruction": "Is this review positive?", "verbalizers": {"positive": "yes", "negative": "no"},
              "batch_size": 3}
    ours = list(LLMAnnotator(api, ["positive", "negative"], **kwargs).annotate(pool, ids))
    reference = list(LLMAnnotator(hf, ["positive", "negative"], **kwargs).annotate(pool, ids))
    assert [a.label for a in ours] == [a.label for a in reference]
    assert max_delta([a.confidence for a in ours], [a.confidence for a in reference]) < TOLERANCE
    assert all(a.input_tokens > 0 for a in ours)
    assert set(app.state.paths) == {CHAT} and len(app.state.bodies) == len(texts)


def test_generation_over_chat_agrees_with_the_hf_backend(api, hf, server):
    app, _ = server
    prompts = [api.chat_prompt(m) for m in CONVERSATIONS]
    ours = api.generate(prompts, max_new_tokens=6, temperature=0.0)
    reference = hf.generate(prompts, max_new_tokens=6, temperature=0.0)
    assert sum(len(g[0].text) for g in ours) > 0
    for [a], [b] in zip(ours, reference, strict=True):
        assert (a.text, a.finish_reason) == (b.text, b.finish_reason)
        # The server names tokens by their text, transformers by its vocabulary entries.
        assert a.logprobs.tokens == tuple(hf.tokenizer.convert_tokens_to_string([t]) for t in b.logprobs.tokens)
        assert len(a.logprobs.logprobs) == 0 or max_delta(a.logprobs.logprobs, b.logprobs.logprobs) < TOLERANCE
    replies = api.chat(CONVERSATIONS, max_new_tokens=6, temperature=0.0)
    assert [r[0].text for r in replies] == [g[0].text for g in ours]
    sampled = api.generate(prompts[:1], n=3, max_new_tokens=4, temperature=1.0, seed=7)
    assert len(sampled[0]) == 3 and all(len(g.logprobs.tokens) <= 4 for g in sampled[0])
    assert set(app.state.paths) == {CHAT}
    assert app.state.bodies[0]["messages"] == CONVERSATIONS[0] and app.state.bodies[-1]["n"] == 3
    assert api.usage.output_tokens > 0


def test_judging_over_chat_agrees_with_the_hf_backend(api, hf, server):
    from curate.paradigms.preference.judge import PairwiseJudge

    app, _ = server
    prompts = ["what is the capital of france?", "the cat sat on the mat"]
    responses_a = ["paris.", "a great phone with a long battery life"]
    responses_b = ["the food was cold", "the cat sat"]
    ours = PairwiseJudge(api).judge(prompts, responses_a, responses_b)
    reference = PairwiseJudge(hf).judge(prompts, responses_a, responses_b)
    assert max_delta(ours.logodds_ab, reference.logodds_ab) < TOLERANCE
    assert max_delta(ours.logodds_ba, reference.logodds_ba) < TOLERANCE
    assert ours.labels == reference.labels
    assert set(app.state.paths) == {CHAT} and len(app.state.bodies) == 2 * len(prompts)


def test_raw_prompts_learn_once_that_the_server_is_chat_only(server, lm_dir):
    app, base_url = server
    backend = OpenAICompatibleBackend("tiny", base_url=base_url, tokenizer=str(lm_dir), max_retries=0)
    app.state.paths.clear()
    [[first]] = backend.generate(["the cat sat"], max_new_tokens=3, temperature=0.0)
    assert app.state.paths == ["/v1/completions", CHAT]  # 404, then the prompt as one user message
    [[again]] = backend.generate(["the cat sat"], max_new_tokens=3, temperature=0.0)
    [[reply]] = backend.chat([[{"role": "user", "content": "the cat sat"}]], max_new_tokens=3, temperature=0.0)
    assert first.text == again.text == reply.text
    assert app.state.paths == ["/v1/completions", CHAT, CHAT, CHAT]  # learned once, not asked again
    with pytest.raises(BackendError, match="does not serve.*404"):
        backend.perplexity(["the cat sat on the mat"])
    with pytest.raises(ConfigError, match=r"Options \[' yes', ' no'\].*raw text"):
        backend.option_logprobs(["the cat sat. Answer:"], [" yes", " no"])
    assert len(app.state.paths) == 4


def test_echo_scoring_is_refused_after_one_404(server, lm_dir):
    app, base_url = server
    backend = OpenAICompatibleBackend("tiny", base_url=base_url, tokenizer=str(lm_dir), max_retries=0)
    app.state.paths.clear()
    for _ in range(2):
        with pytest.raises(BackendError, match="does not serve.*HTTP 404"):
            backend.perplexity(["the cat sat on the mat"])
    assert app.state.paths == ["/v1/completions"]


def test_options_sharing_a_first_token_are_refused_naming_them(server, lm_dir):
    app, base_url = server
    backend = OpenAICompatibleBackend("tiny", base_url=base_url, tokenizer=str(lm_dir), max_retries=0)
    prompt = backend.chat_prompt(CONVERSATIONS[0])
    app.state.paths.clear()
    for _ in range(2):  # "neutral" and "negative" both start with the token "ne"
        with pytest.raises(ConfigError, match=r"Options \['neutral', 'negative'\].*share a first token"):
            backend.option_logprobs([prompt], ["neutral", "negative"])
    assert app.state.paths == ["/v1/completions"]  # echo was tried once, as the fallback
    chat_only = OpenAICompatibleBackend("tiny", base_url=base_url, tokenizer=str(lm_dir), api="chat")
    with pytest.raises(ConfigError, match="api='chat' never calls"):
        chat_only.option_logprobs([chat_only.chat_prompt(CONVERSATIONS[0])], ["neutral", "negative"])
    assert app.state.paths == ["/v1/completions"]
