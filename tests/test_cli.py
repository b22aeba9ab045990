"""The command line: help, each subcommand end to end, and clear errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from curate.cli import build_parser, main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "curate.cli", "--quiet", *args], capture_output=True, text=True)


def test_help_lists_every_subcommand():
    text = build_parser()[0].format_help()
    for name in ("demo", "env", "index", "score"):
        assert name in text
    for argv in (["index", "build", "--help"], ["index", "query", "--help"], ["score", "--help"], ["demo", "--help"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 0


def test_env_reports_versions(capsys):
    assert main(["--quiet", "env"]) == 0
    out = capsys.readouterr().out
    assert "transformers" in out and "faiss-cpu" in out and "vllm extra" in out


def test_score_perplexity_and_options_with_a_local_model(tiny_lm_dir, tmp_path):
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({"sentence": s}) + "\n" for s in ["the film was wonderful", "the cat sat"]))
    out = tmp_path / "ppl.jsonl"
    proc = run_cli("score", str(pool), "--kind", "perplexity", "--lm", str(tiny_lm_dir), "--device", "cpu", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 2 and all(r["perplexity"] > 1 for r in rows) and rows[0]["text"] == "the film was wonderful"
    out2 = tmp_path / "opt.jsonl"
    proc = run_cli("score", str(pool), "--kind", "options", "--options", "yes,no", "--template", "{text}. good?",
                   "--chat", "--lm", str(tiny_lm_dir), "--device", "cpu", "--out", str(out2))
    assert proc.returncode == 0, proc.stderr
    row = json.loads(out2.read_text().splitlines()[0])
    assert row["prediction"] in ("yes", "no") and 0.5 <= row["confidence"] <= 1


def test_bad_input_exits_2_with_a_message(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{oops}\n')
    proc = run_cli("score", str(bad), "--kind", "perplexity", "--out", str(tmp_path / "o.jsonl"))
    assert proc.returncode == 2
    assert "bad.jsonl:2: malformed JSON" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("score", str(bad), "--kind", "options", "--column", "txt", "--out", str(tmp_path / "o.jsonl"))
    assert proc.returncode == 2 and "ROLE=COLUMN" in proc.stderr


@pytest.mark.real
def test_index_build_and_query(tmp_path, monkeypatch):
    monkeypatch.setenv("CURATE_CACHE", str(tmp_path / "cache"))
    pool = tmp_path / "pool.csv"
    pool.write_text("body,label\ncats purr on the sofa,a\nthe stock market fell,b\nkittens meow softly,a\n")
    proc = run_cli("index", "build", str(pool), "--column", "text=body", "--out", str(tmp_path / "idx"))
    assert proc.returncode == 0, proc.stderr
    assert "Indexed 3 items" in proc.stdout
    proc = run_cli("index", "query", str(tmp_path / "idx"), "--text", "a purring cat", "-k", "2")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["ids"][0] in (0, 2) and result["ids"][1] in (0, 2)


@pytest.mark.real
def test_demo_runs_a_short_real_loop(capsys, tmp_path):
    assert main(["--quiet", "demo", "--out", str(tmp_path / "demo"), "--set", "stop.rounds=2", "--set", "lm.device=cpu"]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line[:5].strip().isdigit()]
    assert [int(r[0]) for r in rows] == [0, 1]
    assert [int(r[4]) for r in rows] == [8, 16]                    # labels owned after each round
    assert all(int(r[1]) + int(r[3]) == 8 for r in rows)           # each item kept from the LLM or sent to people
    assert "Stopped: 2 rounds done" in out and "human" in out and "llm" in out
    assert (tmp_path / "demo" / "curve.png").stat().st_size > 1000
    # it ends with the saving against random picks, run beside it with the same annotator and prices
    tail = out.split("Saving: ", 1)[1].splitlines()
    assert tail[0].startswith("kmeans then entropy_kcenter vs random picks") and "held-out accuracy" in tail[1]
    assert (tmp_path / "demo" / "baseline-random" / "journal.sqlite").exists()


def test_demo_saving_reads_both_curves():
    from curate.paradigms.classify.demo import saving

    mine = [{"round": 0, "spent": 2.0, "metric": 0.70}, {"round": 1, "spent": 4.0, "metric": 0.85}]
    rand = [{"round": 0, "spent": 2.0, "metric": 0.60}, {"round": 1, "spent": 4.0, "metric": 0.75},
            {"round": 2, "spent": 8.0, "metric": 0.86}]
    lines = saving(mine, rand, "s", "USD")
    assert "at 4.00 USD: held-out accuracy 0.850 vs 0.750 for random" in lines[1]
    assert "to reach 0.850: random needed 8.00 USD, s 4.00: 4.00 USD saved (50% of random's)" in lines[2]
    assert "never reached 0.850 (0.750 at most" in saving(mine, rand[:2], "s", "USD")[2]
    assert "no saving" in saving(mine, [{"round": 0, "spent": 2.0, "metric": 0.9}], "s", "USD")[2]


def test_demo_recipe_parses():
    from curate.paradigms.classify.demo import demo_config

    config = demo_config(["stop.rounds=1"])
    assert config.stop.rounds == 1 and config.annotator.kind == "hybrid" and config.labels == ["positive", "negative"]


def test_generate_with_a_local_model(tiny_lm_dir, tmp_path):
    out = tmp_path / "gen.jsonl"
    proc = run_cli("generate", "--task", "sentiment", "--labels", "positive,negative", "--n", "2", "--out", str(out),
                   "--lm", str(tiny_lm_dir), "--device", "cpu", "--max-new-tokens", "12", "--label-threshold", "0",
                   "--batch-size", "4")
    assert proc.returncode == 0, proc.stderr
    assert "length" in proc.stdout and "Stopped:" in proc.stdout  # the per-filter acceptance report
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) <= 2 and all(r["label"] in ("positive", "negative") for r in rows)


@pytest.mark.real
def test_generate_with_smollm2_accepts_real_examples(tmp_path):
    out = tmp_path / "gen.jsonl"
    proc = run_cli("generate", "--task", "movie review sentiment", "--labels", "positive,negative", "--n", "2",
                   "--out", str(out), "--device", "cpu", "--max-new-tokens", "20", "--label-threshold", "0.2",
                   "--batch-size", "2")
    assert proc.returncode == 0, proc.stderr
    assert "label_consistency" in proc.stdout
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 2 and len({r["text"] for r in rows}) == 2
    assert all(len(r["text"]) >= 12 for r in rows)


@pytest.mark.parametrize("command", [
    ["score", "{pool}", "--kind", "perplexity", "--backend", "vllm", "--lm", "some/model", "--out", "{out}"],
    ["generate", "--task", "sentiment", "--labels", "a,b", "--n", "1", "--backend", "vllm", "--lm", "some/model",
     "--out", "{out}"],
])
def test_vllm_backend_without_vllm_exits_2_naming_the_install(command, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` fails even where it is installed
    pool = tmp_path / "pool.jsonl"
    pool.write_text('{"text": "a b c"}\n')
    argv = [a.format(pool=pool, out=tmp_path / "out.jsonl") for a in command]
    assert main(["--quiet", *argv]) == 2
    err = capsys.readouterr().err
    assert "pip install vllm" in err and "Traceback" not in err
    assert "device" not in err  # the device is never passed to vLLM


@pytest.mark.real
def test_a_recipe_run_on_vllm_without_vllm_exits_2_naming_the_install(tmp_path):
    import importlib.util
    from pathlib import Path

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here: the run would start it")
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "demo.yaml"
    proc = run_cli("run", str(recipe), "--set", "lm.backend=vllm", "--out", str(tmp_path / "run"))
    assert proc.returncode == 2
    assert "pip install vllm" in proc.stderr and "Traceback" not in proc.stderr
