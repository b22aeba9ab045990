"""VLLMBackend without vLLM: the missing-dependency error, and the parsing logic against a small fake ``vllm``
module put into ``sys.modules``. The fake mirrors vLLM's output shapes: ``prompt_logprobs`` is a list per
prompt position (``None`` first) of ``{token_id: Logprob}``, and each ``CompletionOutput.logprobs`` a list
per generated token of the same dicts. Each dict also holds a likelier decoy token, as vLLM's top-k does.
"""

from __future__ import annotations

import re
import subprocess
import sys
import types
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from curate.backends.base import LMBackend, entropy_lower_bound
from curate.backends.vllm import VLLMBackend
from curate.errors import BackendError, ConfigError, MissingDependencyError

DECOY_ID = 999_999


@dataclass
class Logprob:
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    logprobs: list[dict[int, Logprob]] | None
    finish_reason: str | None = None


@dataclass
class RequestOutput:
    prompt_token_ids: list[int]
    prompt_logprobs: list[dict[int, Logprob] | None] | None
    outputs: list[CompletionOutput]


class SamplingParams:
    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs


class WordTokenizer:
    """Word-level, optionally with a BOS token; ids are handed out as words are first seen."""

    def __init__(self, bos: bool) -> None:
        self.bos = bos
        self.ids: dict[str, int] = {"<s>": 0}

    def encode(self, text: str) -> list[int]:
        words = re.findall(r"\s*\S+|\s+", text)
        return ([0] if self.bos else []) + [self.ids.setdefault(w, len(self.ids)) for w in words]

    def decode(self, ids: list[int]) -> str:
        words = {i: w for w, i in self.ids.items()}
        return "".join(words[i] for i in ids)

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        assert tokenize is False
        return "|".join(m["content"] for m in messages) + ("|>" if add_generation_prompt else "")


class LLM:
    built: list[LLM] = []

    def __init__(self, model: str, seed: int = 0, bos: bool = False, **kwargs: Any) -> None:
        self.model, self.seed, self.kwargs = model, seed, kwargs
        self.tokenizer = WordTokenizer(bos)
        self.calls: list[tuple[list, SamplingParams]] = []
        LLM.built.append(self)

    def get_tokenizer(self) -> WordTokenizer:
        return self.tokenizer

    def generate(self, prompts: list, params: SamplingParams, use_tqdm: bool = True) -> list[RequestOutput]:
        assert use_tqdm is False
        self.calls.append((prompts, params))
        return [self._answer(p, params.kwargs) for p in prompts]

    def _answer(self, prompt: Any, params: dict) -> RequestOutput:
        ids = prompt["prompt_token_ids"] if isinstance(prompt, dict) else self.tokenizer.encode(prompt)
        prompt_logprobs = None
        if params.get("prompt_logprobs") is not None:
            prompt_logprobs = [None] + [self._step(t, decoded=True) for t in ids[1:]]
        outputs = []
        for j in reversed(range(params.get("n", 1))):  # out of order on purpose: 'index' is the truth
            words = [f" w{j}", " end"][: params["max_tokens"]]
            token_ids = [self.tokenizer.ids.setdefault(w, len(self.tokenizer.ids)) for w in words]
            steps = (
                [self._step(t, decoded=False) for t in token_ids]
                if params.get("logprobs") is not None
                else None
            )
            finish = "length" if params["max_tokens"] <= 2 else "stop"
            outputs.append(CompletionOutput(j, "".join(words), token_ids, None, steps, finish))
        return RequestOutput(list(ids), prompt_logprobs, outputs)

    def _step(self, token_id: int, decoded: bool) -> dict[int, Logprob]:
        word = self.tokenizer.decode([token_id])
        return {
            DECOY_ID: Logprob(-0.01, rank=1, decoded_token="decoy"),
            token_id: Logprob(-float(len(word)), rank=2, decoded_token=word if decoded else None),
        }


@pytest.fixture
def fake_vllm(monkeypatch):
    module = types.ModuleType("vllm")
    module.LLM, module.SamplingParams = LLM, SamplingParams
    monkeypatch.setitem(sys.modules, "vllm", module)
    LLM.built.clear()
    return module


def test_missing_vllm_names_the_extra_on_first_use(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` fail even where it is installed
    backend = VLLMBackend("some/model")  # constructing must not import vllm
    with pytest.raises(MissingDependencyError, match=r"pip install 'curate\[vllm\]'") as info:
        backend.generate(["a"])
    assert isinstance(info.value, ImportError)


def test_importing_the_module_does_not_import_vllm():
    code = "import sys, curate.backends.vllm; sys.exit('vllm' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_engine_is_built_once_with_seed_and_engine_kwargs(fake_vllm):
    backend = VLLMBackend("tiny", seed=7, engine_kwargs={"bos": True, "dtype": "float16"})
    assert LLM.built == []
    backend.generate(["a"])
    backend.completion_logprobs(["a"], [" b"])
    [llm] = LLM.built
    assert (llm.model, llm.seed, llm.kwargs) == ("tiny", 7, {"dtype": "float16"})
    assert isinstance(backend, LMBackend)


@pytest.mark.parametrize("bos", [False, True])
def test_completion_logprobs_keep_positions_after_the_prompt(fake_vllm, bos):
    backend = VLLMBackend("tiny", engine_kwargs={"bos": bos})
    runs = backend.completion_logprobs(["Hello", "Hi"], [" big world", ""])
    assert runs[0].tokens == (" big", " world")
    assert runs[0].logprobs.dtype == np.float64
    np.testing.assert_array_equal(runs[0].logprobs, [-4.0, -6.0])
    assert runs[1].tokens == ()
    [llm] = LLM.built
    [(prompts, params)] = llm.calls
    assert prompts[0] == {"prompt_token_ids": llm.tokenizer.encode("Hello big world")}
    assert params.kwargs == {"max_tokens": 1, "temperature": 0.0, "prompt_logprobs": 1}


def test_empty_prompt_without_bos_drops_the_unscored_first_token(fake_vllm):
    backend = VLLMBackend("tiny")
    [run] = backend.sequence_logprobs(["Hello big world"])
    assert run.tokens == (" big", " world")


def test_empty_prompt_with_bos_scores_every_text_token(fake_vllm):
    backend = VLLMBackend("tiny", engine_kwargs={"bos": True})
    [run] = backend.sequence_logprobs(["Hello big world"])
    assert run.tokens == ("Hello", " big", " world")
    np.testing.assert_array_equal(run.logprobs, [-5.0, -4.0, -6.0])


def test_an_empty_text_is_not_sent(fake_vllm):
    backend = VLLMBackend("tiny")
    [run] = backend.completion_logprobs([""], [""])
    assert run.tokens == () and LLM.built[0].calls == []


def test_generate_groups_samples_by_index_and_decodes_tokens(fake_vllm):
    backend = VLLMBackend("tiny")
    samples = backend.generate(["a", "b"], n=3, max_new_tokens=2, temperature=0.5, top_p=0.9, seed=3)
    assert [[g.text for g in row] for row in samples] == [[" w0 end", " w1 end", " w2 end"]] * 2
    sample = samples[1][2]
    assert sample.logprobs.tokens == (" w2", " end")
    np.testing.assert_array_equal(sample.logprobs.logprobs, [-3.0, -4.0])
    assert sample.finish_reason == "length"
    [(prompts, params)] = LLM.built[0].calls
    assert prompts == ["a", "b"]
    assert params.kwargs == {
        "n": 3,
        "temperature": 0.5,
        "top_p": 0.9,
        "seed": 3,
        "max_tokens": 2,
        "logprobs": 20,  # vLLM's default max_logprobs: the entropy bound reads them
    }


def test_usage_counts_prompt_and_generated_tokens(fake_vllm):
    backend = VLLMBackend("tiny")
    backend.completion_logprobs(["Hello"], [" big world"])
    backend.generate(["one two"], n=2, max_new_tokens=1)
    assert backend.usage.input_tokens == 3 + 2
    assert backend.usage.output_tokens == 1 + 2
    assert backend.usage.by_kind == {"logprobs": 1, "generate": 1}


def test_chat_prompt_uses_the_model_template(fake_vllm):
    backend = VLLMBackend("tiny")
    messages = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    assert backend.chat_prompt(messages) == "a|b|>"
    assert backend.chat_prompt(messages, add_generation_prompt=False) == "a|b"


def test_missing_prompt_logprobs_raise_a_backend_error(fake_vllm, monkeypatch):
    backend = VLLMBackend("tiny")
    monkeypatch.setattr(LLM, "_answer", lambda self, prompt, params: RequestOutput([1, 2], None, []))
    with pytest.raises(BackendError, match="prompt_logprobs for None positions; expected 2"):
        backend.completion_logprobs(["a"], [" b"])


def test_score_options_falls_back_to_option_logprobs_and_counts_tokens_read(fake_vllm):
    backend = VLLMBackend("tiny")
    prompts, options = ["Is it good? A:", "Is it bad? A:"], [" yes", " no"]
    result = backend.score_options(prompts, options, groups=["k", "k"], max_batch_tokens=8)
    np.testing.assert_array_equal(result.logprobs, backend.option_logprobs(prompts, options))
    expected = np.array([-4.0, -3.0]) - np.logaddexp(-4.0, -3.0)  # the fake scores a token minus its length
    np.testing.assert_allclose(result.logprobs, [expected, expected])
    assert result.stats.prompts == 2 and result.stats.groups == 2 and result.stats.shared_tokens == 0
    assert result.stats.forward_tokens == backend.usage.input_tokens // 2  # two identical calls so far
    with pytest.raises(ConfigError, match="one key per prompt"):
        backend.score_options(prompts, options, groups=["k"])


def _entropy(probs) -> float:
    p = np.asarray(probs, dtype=np.float64)
    return float(-(p * np.log(p)).sum())


def test_entropy_bound_is_exact_on_a_whole_distribution_and_below_the_truth_on_its_top_k():
    p = np.array([0.5, 0.2, 0.1, 0.1, 0.05, 0.05])
    assert entropy_lower_bound(np.log(p), k=6) == pytest.approx(_entropy(p))
    # Top 2 of it: the 0.3 left is spread over tokens no likelier than 0.2 -> at least 0.3 * -log 0.2.
    bound = entropy_lower_bound(np.log(p[:2]), k=2)
    assert bound == pytest.approx(_entropy(p[:2]) - 0.3 * np.log(0.2))
    renormalised = _entropy(p[:2] / p[:2].sum())
    assert renormalised < bound < _entropy(p)
    # The chosen token listed beside the top 1, outranked by unlisted ones: p_k is the top token's.
    assert entropy_lower_bound(np.log([0.5, 0.05]), k=1) == pytest.approx(_entropy([0.5, 0.05]) - 0.45 * np.log(0.5))
    assert entropy_lower_bound(np.log([0.3]), k=0) == pytest.approx(_entropy([0.3]))  # only what is listed
    assert entropy_lower_bound([], k=5) == 0.0


def test_generate_and_scoring_fill_a_finite_entropy_bound(fake_vllm):
    backend = VLLMBackend("tiny")
    [[sample]] = backend.generate(["a"], max_new_tokens=2)
    # Each fake position lists a decoy (log-prob -0.01) and the chosen token (minus its length).
    expected = [entropy_lower_bound([-0.01, -3.0], 20), entropy_lower_bound([-0.01, -4.0], 20)]
    np.testing.assert_allclose(sample.logprobs.entropy, expected)
    assert np.isfinite(sample.logprobs.mean_entropy) and sample.logprobs.mean_entropy > 0
    [run] = backend.completion_logprobs(["Hello"], [" big world"])
    np.testing.assert_allclose(run.entropy, [entropy_lower_bound([-0.01, -4.0], 1),
                                             entropy_lower_bound([-0.01, -6.0], 1)])
    assert np.isfinite(run.mean_entropy)


def test_max_logprobs_of_the_engine_sets_the_top_k_asked_for(fake_vllm):
    backend = VLLMBackend("tiny", engine_kwargs={"max_logprobs": 5})
    backend.generate(["a"], max_new_tokens=1)
    [(_, params)] = LLM.built[0].calls
    assert params.kwargs["logprobs"] == 5
    assert VLLMBackend("tiny", engine_kwargs={"max_logprobs": -1}).top_logprobs == 20


RECIPE = """\
paradigm: classify
pool:
  path: sample:reviews
labels: [positive, negative]
annotator:
  kind: llm
lm:
  backend: vllm
  model: tiny
  device: cuda
  options:
    gpu_memory_utilization: 0.5
    enable_prefix_caching: true
stop:
  rounds: 1
"""


def test_a_recipe_lm_block_reaches_the_engine_with_its_options_and_no_device(fake_vllm, tmp_path):
    from curate.paradigms.classify.config import load_classify_config

    from curate.build import LazyBackend, teacher_from

    path = tmp_path / "recipe.yaml"
    path.write_text(RECIPE)
    config = load_classify_config(path)
    backend = LazyBackend(config.lm)()  # what every paradigm's build does with its lm: block
    assert isinstance(backend, VLLMBackend)
    backend.generate(["a"], max_new_tokens=1)
    [llm] = LLM.built
    assert llm.model == "tiny"
    assert llm.kwargs == {"gpu_memory_utilization": 0.5, "enable_prefix_caching": True}
    # A live teacher (SFT, distillation) from the same block takes the same path.
    teacher = teacher_from("teacher", None, lm=config.lm)
    teacher.backend.generate(["a"], max_new_tokens=1)
    assert LLM.built[1].kwargs == llm.kwargs and "device" not in LLM.built[1].kwargs


def test_a_recipe_with_the_vllm_backend_needs_vllm_on_first_use(monkeypatch, tmp_path):
    from curate.paradigms.classify.config import load_classify_config

    from curate.build import backend_from

    monkeypatch.setitem(sys.modules, "vllm", None)
    path = tmp_path / "recipe.yaml"
    path.write_text(RECIPE)
    backend = backend_from(load_classify_config(path).lm)  # construction passes: vllm is imported on use
    with pytest.raises(MissingDependencyError, match=r"pip install vllm"):
        backend.completion_logprobs(["a"], [" b"])


def test_real_vllm_scores_and_generates_like_the_hf_backend(tiny_lm_dir):
    """vLLM's real classes, where they import (a GPU machine with vllm installed): scoring agrees
    with the hf backend on the same tiny model, and generation returns finite log-probs."""
    pytest.importorskip("vllm", reason="vllm is not installed here (it needs a CUDA machine and its own torch)")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("vllm imports but there is no CUDA device to run it on")
    from curate.backends.hf import TransformersBackend

    real = VLLMBackend(str(tiny_lm_dir), engine_kwargs={"gpu_memory_utilization": 0.2, "enforce_eager": True,
                                                        "dtype": "float32"})
    hf = TransformersBackend(str(tiny_lm_dir), device="cuda")
    prompts, completions = ["the film was", "a great"], [" wonderful", " phone"]
    ours = [r.logprobs for r in real.completion_logprobs(prompts, completions)]
    reference = [r.logprobs for r in hf.completion_logprobs(prompts, completions)]
    for a, b in zip(ours, reference, strict=True):
        assert np.allclose(a, b, atol=1e-3)
    [samples] = real.generate(["the film was"], n=2, max_new_tokens=4, temperature=1.0, seed=0)
    assert len(samples) == 2 and all(np.isfinite(g.logprobs.mean_entropy) for g in samples)
