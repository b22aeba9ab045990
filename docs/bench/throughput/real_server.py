"""curate's OpenAI-compatible backend against a real OpenAI-compatible server: FastChat 0.2.36.

Not our own test server (tests/servers/*): FastChat's controller, model_worker and
openai_api_server, three separate processes from PyPI's ``fschat``, serving the embedded
SmolLM2-135M-Instruct folder on the CPU, all bound to 127.0.0.1 on free ports. The script

(a) starts the three processes (through ``fastchat_launcher.py``, which works around FastChat's
    ``config.rope_scaling["factor"]`` under transformers 5) and waits until the model is listed;
(b) scores 40 short movie-review sentiment prompts, rendered with the model's chat template as
    curate's LLM annotator renders them, with curate's openai backend against the server and with
    the hf backend in this process, and prints max |delta| of the option log-probs (target <= 1e-3)
    and the tokens the openai backend recorded; it also shows why the chat endpoint cannot score
    (FastChat's chat answers carry no log-probs and use FastChat's own conversation template);
(c) runs ``curate run recipes/demo.yaml`` (hybrid annotator, 2 rounds) through the CLI with
    ``lm.backend=openai`` against the server, prints its exit code, the tail of its output and the
    token counts in the run's ledger (summary.json and the journal's charges), and compares its
    labels with the same run on the hf backend;
(d) stops the servers (also on failure).

    nice -n 15 env OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python -u \
        docs/bench/throughput/real_server.py | tee docs/bench/throughput/real_server.txt

The FastChat venv's python comes from $CURATE_FASTCHAT_PYTHON (default /work/fcvenv/bin/python); see
real_server.md for how to build it. Exits non-zero when a check fails.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
LAUNCHER = HERE / "fastchat_launcher.py"
DEFAULT_PYTHON = "/work/fcvenv/bin/python"
SERVED = "smollm2"
TOLERANCE = 1e-3

INSTRUCTION = "Is the sentiment of this review positive or negative? Answer with one word."  # recipes/demo.yaml
TEMPLATE = "Review: {text}"
REVIEWS = [
    ("A moving, beautifully acted film that stayed with me for days.", "positive"),
    ("The plot made no sense and the acting was wooden.", "negative"),
    ("Funny, warm and clever from the first scene to the last.", "positive"),
    ("Two hours of my life I will never get back.", "negative"),
    ("The soundtrack is gorgeous and the photography is stunning.", "positive"),
    ("A lazy sequel that recycles every joke from the original.", "negative"),
    ("I laughed, I cried, and I want to see it again.", "positive"),
    ("The dialogue is clumsy and the ending is a cheat.", "negative"),
    ("A gripping thriller with a twist I never saw coming.", "positive"),
    ("Boring, slow and far too long.", "negative"),
    ("The lead gives the performance of her career.", "positive"),
    ("The special effects look cheap and the story is thin.", "negative"),
    ("A charming family film that adults will enjoy too.", "positive"),
    ("I walked out after forty minutes.", "negative"),
    ("Smart, tense and superbly directed.", "positive"),
    ("The characters are flat and I did not care about any of them.", "negative"),
    ("An instant classic with a wonderful script.", "positive"),
    ("A mess of a movie with no heart at all.", "negative"),
    ("The cast has great chemistry and the jokes land.", "positive"),
    ("Predictable from start to finish and painfully dull.", "negative"),
    ("Visually dazzling and emotionally honest.", "positive"),
    ("The worst film I have seen this year.", "negative"),
    ("A delightful surprise that exceeded every expectation.", "positive"),
    ("Loud, confusing and completely forgettable.", "negative"),
    ("The documentary is fascinating and beautifully edited.", "positive"),
    ("A waste of a talented cast.", "negative"),
    ("Heartfelt and hilarious, a real crowd pleaser.", "positive"),
    ("The pacing drags and the jokes fall flat.", "negative"),
    ("One of the best animated films ever made.", "positive"),
    ("An ugly, cynical film that left me cold.", "negative"),
    ("The final act is thrilling and perfectly earned.", "positive"),
    ("Badly written, badly edited and badly acted.", "negative"),
    ("A tender love story told with real grace.", "positive"),
    ("I kept checking my watch the whole time.", "negative"),
    ("Brilliant performances and a script full of surprises.", "positive"),
    ("The horror film was not scary, just silly.", "negative"),
    ("A joyful musical that had the whole audience singing.", "positive"),
    ("Overlong, overwrought and underwhelming.", "negative"),
    ("The director's best work so far.", "positive"),
    ("A dull remake that nobody asked for.", "negative"),
]


def say(*parts: object) -> None:
    print(*parts, flush=True)


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def model_folder() -> str:
    from curate.models import resolve_lm

    return str(resolve_lm("SmolLM2-135M-Instruct"))


def fastchat_python() -> str:
    return os.environ.get("CURATE_FASTCHAT_PYTHON", DEFAULT_PYTHON)


def fastchat_versions(python: str) -> str:
    code = ("import importlib.metadata as m; print(', '.join(f'{p} {m.version(p)}' for p in "
            "('fschat', 'torch', 'transformers', 'fastapi', 'uvicorn', 'pydantic')))")
    return subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


# ----------------------------------------------------------------------------------------------- (a)


@contextlib.contextmanager
def fastchat_server(model: str, *, logs: Path, python: str | None = None, served: str = SERVED,
                    timeout: float = 300.0) -> Iterator[str]:
    """FastChat's controller, model_worker and openai_api_server on free loopback ports; yields the
    ``/v1`` base URL once ``/v1/models`` lists ``served``, and stops all three on exit."""
    import httpx

    python = python or fastchat_python()
    controller, worker, api = free_ports(3)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    commands = {
        "controller": [python, str(LAUNCHER), "controller", "--host", "127.0.0.1", "--port", str(controller)],
        "model_worker": ["nice", "-n", "15", python, str(LAUNCHER), "model_worker", "--host", "127.0.0.1",
                         "--port", str(worker), "--worker-address", f"http://127.0.0.1:{worker}",
                         "--controller-address", f"http://127.0.0.1:{controller}", "--model-path", model,
                         "--model-names", served, "--device", "cpu"],
        "openai_api_server": [python, str(LAUNCHER), "openai_api_server", "--host", "127.0.0.1", "--port", str(api),
                              "--controller-address", f"http://127.0.0.1:{controller}"],
    }
    logs.mkdir(parents=True, exist_ok=True)
    procs: dict[str, subprocess.Popen] = {}
    try:
        for name, cmd in commands.items():
            say(f"$ {shlex.join(cmd)}")
            log = open(logs / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
            procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(logs),
                                           start_new_session=True)
            if name == "controller":
                _wait(lambda: httpx.post(f"http://127.0.0.1:{controller}/list_models", timeout=2).status_code == 200,
                      procs, logs, 60.0, "the controller to answer")
        base_url = f"http://127.0.0.1:{api}/v1"

        def listed() -> bool:
            body = httpx.get(f"{base_url}/models", timeout=2).json()
            return any(m.get("id") == served for m in body.get("data", []))

        started = time.perf_counter()
        _wait(listed, procs, logs, timeout, f"{base_url}/models to list {served!r}")
        say(f"server ready after {time.perf_counter() - started:.1f} s: {base_url} serves {served!r}")
        yield base_url
    finally:
        for name in reversed(list(procs)):
            proc = procs[name]
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            say(f"stopped {name} (pid {proc.pid}, exit {proc.returncode})")


def _wait(ready, procs: dict[str, subprocess.Popen], logs: Path, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, proc in procs.items():
            if proc.poll() is not None:
                tail = (logs / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"FastChat {name} exited with {proc.returncode} while waiting for {what}:\n{tail}")
        with contextlib.suppress(Exception):
            if ready():
                return
        time.sleep(0.5)
    raise TimeoutError(f"gave up after {timeout:.0f} s waiting for {what}; logs in {logs}")


# ----------------------------------------------------------------------------------------------- (b)


def render(backend, text: str, verbal: list[str]) -> str:
    """The prompt curate's LLMAnnotator builds with ``chat: true`` (curate/annotate/llm.py ``_render``)."""
    body = f"{INSTRUCTION}\nAnswer with one of: {', '.join(verbal)}.\n\n{TEMPLATE.format(text=text)}"
    return backend.chat_prompt([{"role": "user", "content": body}], add_generation_prompt=True)


def compare_scores(base_url: str, model: str, hf=None, *, reviews=REVIEWS, option_sets=None) -> dict:
    """Option log-probs from the openai backend (server) and the hf backend (in process), same prompts."""
    from curate.backends.hf import TransformersBackend
    from curate.backends.openai_compat import OpenAICompatibleBackend

    hf = hf or TransformersBackend(model, device="cpu")
    option_sets = option_sets or [["positive", "negative"], [" positive", " negative"]]
    api = OpenAICompatibleBackend(SERVED, base_url=base_url, api="completions", tokenizer=model,
                                  max_concurrency=2, max_retries=1)
    verbal = ["positive", "negative"]
    prompts = [render(api, t, verbal) for t, _ in reviews]
    same_template = prompts == [render(hf, t, verbal) for t, _ in reviews]
    rows, worst = [], 0.0
    with api:
        for options in option_sets:
            for normalize in (False, True):
                t0 = time.perf_counter()
                ours = api.option_logprobs(prompts, options, normalize=normalize)
                t_api = time.perf_counter() - t0
                t0 = time.perf_counter()
                ref = hf.option_logprobs(prompts, options, normalize=normalize)
                t_hf = time.perf_counter() - t0
                delta = float(np.max(np.abs(ours - ref)))
                worst = max(worst, delta)
                agree = int(np.sum(ours.argmax(1) == ref.argmax(1)))
                rows.append({"options": options, "normalize": normalize, "max_delta": delta, "argmax_agree": agree,
                             "server_s": t_api, "hf_s": t_hf, "api": ours, "hf": ref})
        usage = api.usage
    gold = np.array([0 if label == "positive" else 1 for _, label in reviews])
    return {"prompts": prompts, "same_template": same_template, "rows": rows, "max_delta": worst,
            "usage": usage, "gold": gold, "hf": hf}


def chat_endpoint_probe(base_url: str, model: str, prompt_text: str) -> list[str]:
    """What FastChat's /chat/completions gives for option scoring: the raw answer, and curate's error."""
    import httpx

    from curate.backends.openai_compat import OpenAICompatibleBackend

    lines = []
    body = httpx.post(f"{base_url}/chat/completions", timeout=120, json={
        "model": SERVED, "messages": [{"role": "user", "content": prompt_text}], "max_tokens": 1,
        "logprobs": True, "top_logprobs": 20, "temperature": 0}).json()
    choice = body["choices"][0]
    lines.append(f"POST /chat/completions (max_tokens 1, logprobs true, top_logprobs 20) -> choice keys "
                 f"{sorted(choice)}, logprobs {choice.get('logprobs')!r}, usage {body.get('usage')}")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    text = tok.apply_chat_template([{"role": "user", "content": prompt_text}], tokenize=False,
                                   add_generation_prompt=True)
    n_template = len(tok(text, add_special_tokens=False)["input_ids"])
    lines.append(f"  the model's own chat template gives {n_template} prompt tokens for the same message; FastChat "
                 f"counted {body['usage']['prompt_tokens']} (it applies its own conversation template)")
    with OpenAICompatibleBackend(SERVED, base_url=base_url, api="chat", tokenizer=model, max_retries=0) as chat:
        prompt = chat.chat_prompt([{"role": "user", "content": prompt_text}])
        try:
            chat.option_logprobs([prompt], ["positive", "negative"])
            lines.append("  curate api='chat': scored (unexpected)")
        except Exception as exc:  # noqa: BLE001 - shown, not handled
            lines.append(f"  curate api='chat' option_logprobs -> {type(exc).__name__}: {exc}")
    return lines


# ----------------------------------------------------------------------------------------------- (c)


def cli_run(out: Path, extra: list[str]) -> tuple[int, str, float]:
    cmd = [str(ROOT / ".venv" / "bin" / "curate"), "run", str(ROOT / "recipes" / "demo.yaml"), "--out", str(out),
           "--set", "stop.rounds=2", *extra]
    say(f"$ {shlex.join(cmd)}")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run(["nice", "-n", "15", *cmd], capture_output=True, text=True, env=env, cwd=str(ROOT))
    return proc.returncode, proc.stdout + proc.stderr, time.perf_counter() - t0


def ledger(run: Path) -> dict:
    summary = json.loads((run / "summary.json").read_text())
    con = sqlite3.connect(run / "journal.sqlite")
    try:
        charges = con.execute("SELECT source, COUNT(*), SUM(human_labels), SUM(input_tokens), SUM(output_tokens), "
                              "SUM(micros) FROM charges GROUP BY source ORDER BY source").fetchall()
        labels = {row[0]: row[1:] for row in con.execute("SELECT item_id, label, source, confidence FROM labels")}
    finally:
        con.close()
    return {"summary": summary, "charges": charges, "labels": labels}


def show_run(name: str, rc: int, output: str, seconds: float, run: Path) -> dict | None:
    say(f"{name}: exit code {rc} after {seconds:.1f} s; output tail:")
    for line in output.strip().splitlines()[-8:]:
        say(f"  | {line}")
    if rc != 0 or not (run / "summary.json").exists():
        return None
    info = ledger(run)
    led = info["summary"]["ledger"]
    say(f"  summary.json ledger: input_tokens {led['input_tokens']}, output_tokens {led['output_tokens']}, "
        f"labels {led['labels']}, spent {led['spent']} USD (human {led['spent_human']}, llm {led['spent_llm']})")
    for source, n, human, tin, tout, micros in info["charges"]:
        say(f"  journal charges[{source}]: {n} rows, human_labels {human}, input_tokens {tin}, output_tokens {tout}, "
            f"micros {micros}")
    sources = {}
    for _, source, _ in info["labels"].values():
        sources[source] = sources.get(source, 0) + 1
    say(f"  journal labels: {len(info['labels'])} ({', '.join(f'{k} {v}' for k, v in sorted(sources.items()))})")
    return info


# ---------------------------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--no-hf-run", action="store_true", help="skip the comparison CLI run on the hf backend")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(ROOT))
    import torch
    import transformers

    torch.set_num_threads(1)
    model = model_folder()
    python = fastchat_python()
    failures = []
    say(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average before {load_average()}")
    say(f"curate side: torch {torch.__version__}, transformers {transformers.__version__}")
    say(f"server side ({python}): {fastchat_versions(python)}")
    say(f"model: {model}")
    with tempfile.TemporaryDirectory(prefix="curate-real-server-") as tmp:
        tmp = Path(tmp)
        say("\n(a) start FastChat (controller + model_worker + openai_api_server) on 127.0.0.1")
        with fastchat_server(model, logs=tmp / "logs", python=python) as base_url:
            say(f"\n(b) {len(REVIEWS)} prompts, option log-probs: openai backend ({base_url}, api=completions, "
                "echo + logprobs) vs hf backend in process")
            result = compare_scores(base_url, model)
            say(f"chat template identical on both sides: {result['same_template']}")
            say(f"first prompt: {result['prompts'][0]!r}")
            say(f"{'options':<24} {'normalize':>9} {'max |delta|':>12} {'argmax agree':>12} {'server s':>9} {'hf s':>6}")
            for row in result["rows"]:
                say(f"{str(row['options']):<24} {str(row['normalize']):>9} {row['max_delta']:>12.3e} "
                    f"{row['argmax_agree']:>9}/{len(REVIEWS)} {row['server_s']:>9.2f} {row['hf_s']:>6.2f}")
            say(f"max |delta| over all: {result['max_delta']:.3e} (target <= {TOLERANCE:g})")
            norm = next(r for r in result["rows"] if r["options"] == ["positive", "negative"] and r["normalize"])
            acc = float(np.mean(norm["api"].argmax(1) == result["gold"]))
            say(f"zero-shot accuracy on these {len(REVIEWS)} (options 'positive'/'negative'): server {acc:.3f}, "
                f"hf {float(np.mean(norm['hf'].argmax(1) == result['gold'])):.3f}")
            u = result["usage"]
            say(f"openai backend usage: input_tokens {u.input_tokens}, output_tokens {u.output_tokens}, "
                f"calls {u.calls}, by_kind {dict(u.by_kind)}")
            if result["max_delta"] > TOLERANCE or not result["same_template"]:
                failures.append("option log-probs differ")

            say("\n(b') why api=completions: FastChat's chat endpoint")
            for line in chat_endpoint_probe(base_url, model, f"{INSTRUCTION}\n\nReview: {REVIEWS[0][0]}"):
                say(line)

            say("\n(c) hybrid-annotated classification through the CLI against the server")
            options = f"{{api: completions, tokenizer: {model}}}"
            run_api = tmp / "run-openai"
            rc, output, seconds = cli_run(run_api, ["--set", "lm.backend=openai", "--set", f"lm.model={SERVED}",
                                                    "--set", f"lm.base_url={base_url}", "--set", f"lm.options={options}"])
            info_api = show_run("curate run (lm.backend=openai, FastChat)", rc, output, seconds, run_api)
            if info_api is None:
                failures.append(f"CLI run against the server exited {rc}")
        say("\n(d) servers stopped")
        if not args.no_hf_run and info_api is not None:
            say("\n(c') the same run on the hf backend in process, for comparison")
            run_hf = tmp / "run-hf"
            rc, output, seconds = cli_run(run_hf, ["--set", "lm.backend=hf", "--set", "lm.device=cpu"])
            info_hf = show_run("curate run (lm.backend=hf)", rc, output, seconds, run_hf)
            if info_hf is None:
                failures.append(f"CLI run on hf exited {rc}")
            else:
                a, b = info_api["labels"], info_hf["labels"]
                same = sorted(a) == sorted(b) and all(a[k][:2] == b[k][:2] for k in a)
                conf = [abs(a[k][2] - b[k][2]) for k in a if k in b and a[k][2] is not None and b[k][2] is not None]
                say(f"same items, labels and sources in both runs: {same}; max |delta| of journal confidences "
                    f"{max(conf) if conf else float('nan'):.3e} over {len(conf)} labels")
                la, lb = info_api["summary"]["curve"], info_hf["summary"]["curve"]
                say(f"curves: openai {[(c['labels'], c['metric']) for c in la]}, hf {[(c['labels'], c['metric']) for c in lb]}")
                if not same:
                    failures.append("the openai and hf runs labelled differently")
    say(f"\nload average after {load_average()}")
    say("FAILED: " + "; ".join(failures) if failures else "all checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
