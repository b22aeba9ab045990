"""Active SFT: a whole recipe round on a tiny model (training step included), the one-shot DEITA
curation's scores and diversity rule, the CLI, and real AlpacaEval data when it is present."""

from __future__ import annotations

import json

import numpy as np
import pytest
from curate.paradigms.sft import PARADIGM
from curate.paradigms.sft.config import load_sft_config
from curate.paradigms.sft.oneshot import combine_scores, curate_instructions, diverse_top, score_pairs

from curate.errors import ConfigError
from curate.pool import load_pool
from curate.runs import RunFolder, execute, resume_run


def run_sft(config, run_dir):
    return execute(PARADIGM, config, RunFolder(run_dir)).summary


def resume_sft(run_dir):
    return resume_run(run_dir)[1].summary

TINY = {"max_steps": 1, "per_device_train_batch_size": 4}


def tiny_recipe(tmp_path, tiny_lm_dir, **extra):
    data = {"pool": {"path": "sample:instructions"}, "eval": {"path": "sample:instructions-test"}, "eval_limit": 4,
            "model": str(tiny_lm_dir), "init": {"strategy": "random", "size": 3},
            "acquire": {"strategy": "entropy", "batch_size": 3, "sample": 6},
            "annotator": {"kind": "gold", "column": "response"}, "prices": {"human_per_label": 0.5},
            "lora": {"r": 2, "lora_alpha": 4, "target_modules": "all-linear"}, "train": TINY,
            "max_length": 48, "max_new_tokens": 4, "stop": {"rounds": 2}, **extra}
    path = tmp_path / "recipe.yaml"
    import yaml

    path.write_text(yaml.safe_dump(data))
    return path


def test_a_recipe_runs_rounds_exports_provenance_and_resumes(tiny_lm_dir, tmp_path):
    config = load_sft_config(tiny_recipe(tmp_path, tiny_lm_dir))
    summary = run_sft(config, tmp_path / "run")
    assert summary["labels"] == 6 and summary["spent"] == pytest.approx(3.0)
    assert [r["bought"] for r in summary["rounds"]] == [3, 3]
    assert all(np.isfinite(p["metric"]) and p["metric"] < 0 for p in summary["curve"])  # mean log-lik per token
    from datasets import load_dataset

    # One convention for every paradigm: train JSONL, the eval pairs as the test split, a dataset card.
    assert summary["data"] == str(tmp_path / "run" / "responses.jsonl")
    both = load_dataset(str(tmp_path / "run"))  # the card's configs name the split files
    data, test = both["train"], both["test"]
    assert len(test) == len(load_pool("sample:instructions-test")) and test[0]["messages"][0]["role"] == "user"
    card = (tmp_path / "run" / "README.md").read_text()
    assert "paradigm: sft" in card and "random (round 0), then entropy" in card and "| money spent | 3.0000 USD |" in card
    assert len(data) == 6 and set(data["provenance"]) == {"human"} and sorted(set(data["round"])) == [0, 1]
    pool = load_pool("sample:instructions")
    for row in data:
        assert row["messages"][0]["content"] == pool.column("prompt")[row["id"]]
        assert row["messages"][1]["content"] == pool.column("response")[row["id"]]
    assert (tmp_path / "run" / "curve.csv").exists() and (tmp_path / "run" / "model" / "round-2").is_dir()
    again = resume_sft(tmp_path / "run")  # a finished run resumes to the same place
    assert again["labels"] == 6 and again["rounds"] == summary["rounds"]
    with pytest.raises(ConfigError, match="already holds a run"):
        run_sft(config, tmp_path / "run")


def test_recipe_errors_name_the_key(tiny_lm_dir, tmp_path):
    with pytest.raises(ConfigError, match="acquire.stratgy"):
        load_sft_config(tiny_recipe(tmp_path, tiny_lm_dir), ["acquire.stratgy=entropy"])
    with pytest.raises(ConfigError, match="annotator.kind"):
        load_sft_config(tiny_recipe(tmp_path, tiny_lm_dir), ["annotator.kind=oracle"])
    config = load_sft_config(tiny_recipe(tmp_path, tiny_lm_dir), ["acquire.strategy=margin"])
    with pytest.raises(ConfigError, match="class probabilities"):
        run_sft(config, tmp_path / "bad")


def test_diverse_top_keeps_picks_apart_and_drops_minus_inf():
    vectors = np.array([[1, 0], [0.99, 0.14], [0, 1], [-1, 0], [0.7, 0.7]], dtype=np.float32)
    scores = np.array([5.0, 4.0, 3.0, -np.inf, 2.0])
    # 1 is within 0.01 cosine distance of 0; 3 is dropped; 4 is 0.29 from 0 and 2.
    assert diverse_top(scores, vectors, 5, min_distance=0.1).tolist() == [0, 2, 4]
    assert diverse_top(scores, vectors, 5, min_distance=0.0).tolist() == [0, 1, 2, 4]
    assert diverse_top(scores, vectors, 2, min_distance=0.1).tolist() == [0, 2]
    with pytest.raises(ConfigError, match="cosine distance"):
        diverse_top(scores, vectors, 2, min_distance=2.5)


def test_combine_scores_averages_percentile_ranks():
    combined = combine_scores({"a": np.array([1.0, 2.0, 3.0]), "b": np.array([30.0, 10.0, 20.0])}, {"a": 1, "b": 1})
    np.testing.assert_allclose(combined, [0.5, 0.25, 0.75])
    dropped = combine_scores({"a": np.array([1.0, -np.inf, 3.0])})
    assert dropped[1] == -np.inf and dropped[2] == 1.0
    with pytest.raises(ConfigError, match="weights"):
        combine_scores({"a": np.array([1.0])}, {"a": -1})


def test_oneshot_ifd_matches_a_direct_computation(tiny_backend):
    full = load_pool("sample:instructions")
    pool = load_pool([{"prompt": p, "response": r} for p, r in zip(full.column("prompt")[:10],
                                                                    full.column("response")[:10], strict=True)])
    got = score_pairs(pool, ["ifd", "length"], backend=tiny_backend, chat=False)
    prompts, responses = pool.column("prompt"), pool.column("response")
    direct = tiny_backend.perplexity(responses, prompts=prompts) / tiny_backend.perplexity(responses)
    np.testing.assert_allclose(got["ifd"], np.where(direct >= 1, -np.inf, direct), rtol=1e-6)
    assert got["length"].tolist() == [len(r.split()) for r in responses]
    rows = curate_instructions(pool, budget=4, scores=["length"], min_distance=0.0, embedder=_Embedder())
    assert rows["rank"] == [1, 2, 3, 4]
    assert rows["score_length"] == sorted(got["length"].tolist(), reverse=True)[:4]


class _Embedder:
    """Distinct one-hot vectors: every pair is far from every other (the diversity rule never bites)."""

    def encode(self, texts):
        return np.eye(len(texts), dtype=np.float32)


def test_cli_curate_writes_trl_data(tmp_path, capsys):
    from curate.cli import main

    out = tmp_path / "picked.jsonl"
    assert main(["sft", "curate", "sample:instructions", "--budget", "12", "--score", "length",
                 "--min-distance", "0.05", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 12 and rows[0]["rank"] == 1 and rows[0]["messages"][0]["role"] == "user"
    assert "kept 12 of 240" in capsys.readouterr().out


def test_real_alpaca_eval_pool_reads(shared_data):
    path = shared_data / "alpaca_eval" / "results" / "gpt4" / "model_outputs.json"
    pool = load_pool(path, columns={"prompt": "instruction", "response": "output"})
    assert len(pool) == 805 and {"prompt", "response"} <= set(pool.roles)


def test_shipped_sft_recipes_parse():
    from importlib import resources
    from pathlib import Path

    recipes = sorted(Path(str(resources.files("curate.recipes"))).glob("sft-*.yaml"))
    assert len(recipes) >= 2
    for path in recipes:
        config = load_sft_config(path)
        assert config.pool.path and config.acquire.strategy and config.stop.rounds


def test_entropy_kcenter_is_refused_before_round_0_naming_what_sft_can_use(tiny_lm_dir, tmp_path):
    """entropy_kcenter needs class probabilities; a response learner has none. Refused when the run
    is built (nothing written, nothing bought), with the strategies an SFT run can use."""
    config = load_sft_config(tiny_recipe(tmp_path, tiny_lm_dir), ["acquire.strategy=entropy_kcenter"])
    with pytest.raises(ConfigError) as err:
        run_sft(config, tmp_path / "bad")
    message = str(err.value)
    assert "strategy 'entropy_kcenter' needs class probabilities from the learner" in message
    usable = message.split("can use: ")[1]
    for name in ("random", "entropy (answer_entropy)", "kcenter", "kmeans", "votek", "answer_entropy_kcenter"):
        assert name in usable
    for name in ("margin", "badge", "entropy_kcenter,"):
        assert f" {name}" not in f" {usable}"
    assert not (tmp_path / "bad" / "journal.sqlite").exists() and not (tmp_path / "bad" / "config.yaml").exists()
