"""The bad-input harness: hundreds of malformed recipes, overrides, pools, answers files and saved
indexes fed to the real CLI (``curate.cli.main``, in process). Each must end in exit code 2 with
one ``curate: error:`` paragraph (or argparse's usage error) that names the file or key at fault,
no traceback, and every input byte-identical afterwards. (Damaged journals: test_run_folder_damage.)

The corpus is built here, in code, from the recipe dataclasses themselves (a wrong type for every
field of every paradigm's recipe) plus hand-written cases for what types cannot say.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import typing
from pathlib import Path

import pytest
import yaml

from curate.cli import main

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "curate" / "data" / "sample_pool.jsonl"
DEMO = yaml.safe_load((ROOT / "recipes" / "reviews-gold.yaml").read_text())


# ---------------------------------------------------------------------------------------------- the corpus


@dataclasses.dataclass
class Case:
    id: str
    argv: list[str]                      # {d} is the case's folder
    expect: str                          # a text the error must contain (the file or key at fault)
    files: dict[str, bytes | str] = dataclasses.field(default_factory=dict)
    argparse: bool = False               # an argparse usage error (its own format, also exit 2)


def recipe(data, name="r.yaml") -> dict[str, str]:
    return {name: yaml.safe_dump(data, sort_keys=False) if not isinstance(data, str) else data}


def with_key(path: str, value):
    data = json.loads(json.dumps(DEMO))
    node = data
    parts = path.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return data


def run_argv(name="r.yaml"):
    return ["run", "{d}/" + name, "--out", "{d}/out", "--dry-run"]


def _wrong_value(hint):
    hint = _strip(hint)
    origin = typing.get_origin(hint)
    if origin is dict:
        return [1, 2]
    if origin is list:
        return {"not": "a list"}
    if hint in (int, float, bool):
        return {"not": "a number"}
    if hint is str:
        return {"not": "a string"}
    return None


def _strip(hint):
    if typing.get_origin(hint) in (typing.Union, type(int | None)):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0] if len(args) == 1 else hint
    return hint


def _fields(cls, prefix=""):
    """(dotted key, type) of every scalar, list and mapping field under dataclass ``cls``."""
    for f in dataclasses.fields(cls):
        hint = _strip(typing.get_type_hints(cls)[f.name])
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(hint):
            yield from _fields(hint, key + ".")
        elif hint is not typing.Any:
            yield key, hint


def _paradigm_configs():
    from paradigms.classify.config import ClassifyConfig
    from paradigms.distill.config import DistillConfig
    from paradigms.icl.config import ICLConfig
    from paradigms.preference.config import PrefsConfig
    from paradigms.sft.config import SFTConfig

    return {"classify": ClassifyConfig, "icl": ICLConfig, "sft": SFTConfig, "prefs": PrefsConfig,
            "distill": DistillConfig}


def type_cases() -> list[Case]:
    cases = []
    for paradigm, cls in _paradigm_configs().items():
        for key, hint in _fields(cls):
            value = _wrong_value(hint)
            if value is None:
                continue
            data = {"paradigm": paradigm, "pool": {"path": str(SAMPLE)}}
            node = data
            parts = key.split(".")
            for part in parts[:-1]:
                node = node.setdefault(part, {}) if isinstance(node.get(part, {}), dict) else node
            node[parts[-1]] = value
            cases.append(Case(f"type-{paradigm}-{key}", run_argv(), key, recipe(data)))
        for block in {k.split(".")[0] for k, _ in _fields(cls) if "." in k}:
            data = {"paradigm": paradigm, "pool": {"path": str(SAMPLE)}, block: {"no_such_key": 1}}
            cases.append(Case(f"unknown-{paradigm}-{block}", run_argv(), f"{block}.no_such_key", recipe(data)))
        cases.append(Case(f"unknown-{paradigm}-top", run_argv(), "no_such_block",
                          recipe({"paradigm": paradigm, "pool": {"path": str(SAMPLE)}, "no_such_block": 1})))
    return cases


VALUES = [  # (key, value, what the message must name): values no type check can refuse
    ("stop.rounds", 0, "stop.rounds"), ("stop.rounds", -2, "stop.rounds"), ("stop.labels", -5, "stop.labels"),
    ("stop.labels", 0, "stop.labels"), ("stop.money", -1.0, "stop.money"), ("stop.money", float("inf"), "stop.money"),
    ("stop.money", float("nan"), "stop.money"), ("stop.stable_kappa", 2.0, "stop.stable_kappa"),
    ("stop.stable_kappa", -1.0, "stop.stable_kappa"), ("stop.stable_window", 0, "stop.stable_window"),
    ("stop.plateau_window", 0, "stop.plateau_window"), ("stop.stop_set_size", 0, "stop.stop_set_size"),
    ("stop.combine", "both", "stop.combine"), ("seed", -1, "seed"), ("learner.C", -1.0, "learner.C"),
    ("learner.C", 0.0, "learner.C"), ("learner.kind", "svm", "learner.kind"),
    ("prices.human_per_label", -0.4, "prices.human_per_label"),
    ("prices.human_per_label", float("inf"), "prices.human_per_label"),
    ("prices.llm_input_per_million", -1.0, "prices.llm_input_per_million"), ("prices.currency", " ", "prices.currency"),
    ("labels", ["positive", "positive", "negative"], "labels"), ("labels", ["positive"], "labels"),
    ("labels", ["good", "bad"], "gold labels"), ("init.size", 0, "init.size"), ("init.size", -3, "init.size"),
    ("acquire.batch_size", 0, "acquire.batch_size"), ("acquire.strategy", "entropi", "entropy"),
    ("init.strategy", "no_such_strategy", "no_such_strategy"), ("annotator.kind", "robot", "annotator.kind"),
    ("annotator.column", "no_such_column", "no_such_column"), ("annotator.template", "{text", "annotator.template"),
    ("annotator.template", "{}", "annotator.template"), ("annotator.instruction", "pick {labels", "annotator.instruction"),
    ("lm.base_url", "http://user:SECRET@localhost:1/v1", "lm.base_url"), ("lm.base_url", "localhost:8000", "lm.base_url"),
    ("lm.options", {"api_key": "sk-SECRET"}, "lm.options.api_key"), ("lm.backend", "gpt", "lm.backend"),
    ("pool.path", "", "pool.path"), ("pool.path", "no/such/pool.jsonl", "no/such/pool.jsonl"),
    ("pool.id_column", "no_such_id", "no_such_id"), ("eval.path", "no/such/eval.jsonl", "no/such/eval.jsonl"),
    ("generate.kind", "poems", "generate.kind"), ("generate.per_round", 0, "generate.per_round"),
    ("generate.label", "guess", "generate.label"), ("index.kind", "btree", "btree"), ("paradigm", "cooking", "cooking"),
]


def value_cases() -> list[Case]:
    cases = []
    for key, value, expect in VALUES:
        data = with_key(key, value)
        data["pool"]["path"] = data["pool"]["path"] if key.startswith("pool.") else str(SAMPLE)
        if key == "eval.path" or "eval" in data:
            data.setdefault("eval", {})
            if key != "eval.path":
                data["eval"]["path"] = str(ROOT / "curate" / "data" / "sample_test.jsonl")
        cases.append(Case(f"value-{key}={value!r}", run_argv(), expect, recipe(data)))
    return cases


def file_cases() -> list[Case]:
    demo = with_key("pool.path", str(SAMPLE))
    demo.pop("eval", None)
    good = yaml.safe_dump(demo)
    cases = [
        Case("recipe-missing", ["run", "{d}/none.yaml", "--out", "{d}/out"], "none.yaml"),
        Case("recipe-a-list", run_argv(), "r.yaml", {"r.yaml": "- a\n- b\n"}),
        Case("recipe-a-scalar", run_argv(), "r.yaml", {"r.yaml": "42\n"}),
        Case("recipe-not-utf8", run_argv(), "r.yaml", {"r.yaml": b"pool:\n  path: \xff\xfe\n"}),
        Case("recipe-bad-yaml", run_argv(), "r.yaml", {"r.yaml": "pool: [unclosed\n"}),
        Case("recipe-tab-indent", run_argv(), "r.yaml", {"r.yaml": "pool:\n\tpath: x\n"}),
        Case("recipe-a-directory", ["run", "{d}/adir", "--out", "{d}/out"], "adir", {"adir/keep": ""}),
        Case("recipe-no-pool", run_argv(), "pool.path", recipe({"labels": ["a", "b"]})),
        Case("recipe-binary", run_argv(), "r.yaml", {"r.yaml": bytes(range(256))}),
        Case("resume-not-a-run", ["resume", "{d}"], "not a run folder", {"x.txt": "hi"}),
        Case("export-not-a-run", ["export", "{d}"], "not a run folder", {"x.txt": "hi"}),
        Case("set-no-equals", ["run", "{d}/r.yaml", "--out", "{d}/out", "--dry-run", "--set", "stop.rounds"],
             "KEY=VALUE", {"r.yaml": good}),
        Case("set-bad-yaml", ["run", "{d}/r.yaml", "--out", "{d}/out", "--dry-run", "--set", "stop.rounds=[1"],
             "stop.rounds", {"r.yaml": good}),
        Case("set-unknown-key", ["run", "{d}/r.yaml", "--out", "{d}/out", "--dry-run", "--set", "stop.roundz=3"],
             "stop.roundz", {"r.yaml": good}),
        Case("set-wrong-type", ["run", "{d}/r.yaml", "--out", "{d}/out", "--dry-run", "--set", "stop.rounds=many"],
             "stop.rounds", {"r.yaml": good}),
        Case("set-template-mapping", ["run", "{d}/r.yaml", "--out", "{d}/out", "--dry-run", "--set",
                                      "annotator.template={text"], "annotator.template", {"r.yaml": good}),
        Case("set-empty-key", ["run", "{d}/r.yaml", "--out", "{d}/out", "--dry-run", "--set", "=3"], "KEY=VALUE",
             {"r.yaml": good}),
        Case("out-under-a-file", ["run", "{d}/r.yaml", "--out", "{d}/r.yaml/run"], "r.yaml", {"r.yaml": good}),
    ]
    return cases


POOL_FILES: dict[str, tuple[str, bytes | str, str]] = {  # name -> (file name, bytes, what the error names)
    "bad-json-line": ("p.jsonl", '{"text": "a", "label": "positive"}\n{"text": oops}\n', "p.jsonl"),
    "not-an-object": ("p.jsonl", '{"text": "a"}\n[1, 2]\n', "p.jsonl"),
    "a-bare-string": ("p.jsonl", '"just text"\n', "p.jsonl"),
    "not-utf8": ("p.jsonl", b'{"text": "caf\xe9"}\n', "p.jsonl"),
    "empty": ("p.jsonl", "", "p.jsonl"),
    "only-blank-lines": ("p.jsonl", "\n\n  \n", "p.jsonl"),
    "no-text-column": ("p.jsonl", '{"body": "a"}\n{"body": "b"}\n', "text"),
    "text-not-a-string": ("p.jsonl", '{"text": 3}\n{"text": {"a": 1}}\n', "text"),
    "text-null": ("p.jsonl", '{"text": null}\n{"text": "b"}\n', "text"),
    "truncated-line": ("p.jsonl", '{"text": "a"}\n{"text": "b', "p.jsonl"),
    "nul-bytes": ("p.jsonl", b'{"text": "a"}\n\x00\x00\x00\n', "p.jsonl"),
    "csv-no-header-text": ("p.csv", "body,label\nx,positive\n", "text"),
    "csv-ragged": ("p.csv", 'text,label\n"a,positive\n', "p.csv"),
    "csv-not-utf8": ("p.csv", b"text,label\ncaf\xe9,positive\n", "p.csv"),
    "csv-empty": ("p.csv", "", "p.csv"),
    "parquet-garbage": ("p.parquet", b"PAR1 not really parquet", "p.parquet"),
    "json-garbage": ("p.json", "{not json", "p.json"),
    "tsv-garbage": ("p.tsv", b"\xff\xfe\x00t\x00", "p.tsv"),
    "unknown-suffix": ("p.xlsx", "text\nhello\n", "p.xlsx"),
    "bom-then-garbage": ("p.jsonl", "\ufeff{oops}\n", "p.jsonl"),
}


def pool_cases() -> list[Case]:
    cases = []
    for name, (fname, content, expect) in POOL_FILES.items():
        argv = ["select", "{d}/" + fname, "--strategy", "random", "--budget", "2", "--out", "{d}/out/sel.jsonl"]
        cases.append(Case(f"pool-{name}", argv, expect, {fname: content}))
    select = ["select", "{d}/p.jsonl", "--strategy", "random", "--out", "{d}/o.jsonl"]
    ok = {"p.jsonl": SAMPLE.read_text()}
    cases += [
        Case("pool-missing", ["select", "{d}/nope.jsonl", "--strategy", "random", "--budget", "2", "--out",
                              "{d}/o.jsonl"], "nope.jsonl"),
        Case("pool-a-directory", ["select", "{d}/adir", "--strategy", "random", "--budget", "2", "--out",
                                  "{d}/o.jsonl"], "adir", {"adir/keep": ""}),
        Case("select-out-is-the-pool", [*select, "--budget", "2", "--out", "{d}/p.jsonl"], "p.jsonl", ok),
        Case("select-budget-zero", [*select, "--budget", "0"], "--budget", ok, argparse=True),
        Case("select-budget-negative", [*select, "--budget", "-3"], "--budget", ok, argparse=True),
        Case("select-budget-text", [*select, "--budget", "ten"], "--budget", ok, argparse=True),
        Case("select-seed-negative", [*select, "--budget", "2", "--seed", "-1"], "--seed", ok, argparse=True),
        Case("select-unknown-strategy", ["select", "{d}/p.jsonl", "--strategy", "entropi", "--budget", "2", "--out",
                                         "{d}/o.jsonl"], "entropi", ok),
        Case("select-bad-param", [*select, "--budget", "2", "--param", "oops"], "--param", ok),
        Case("select-out-under-a-file", ["select", "{d}/p.jsonl", "--strategy", "random", "--budget", "2", "--out",
                                         "{d}/p.jsonl/x.jsonl"], "p.jsonl", ok),
        Case("select-out-a-directory", ["select", "{d}/p.jsonl", "--strategy", "random", "--budget", "2", "--out",
                                        "{d}/adir"], "adir", {**ok, "adir/keep": ""}),
        Case("score-out-is-the-pool", ["score", "{d}/p.jsonl", "--kind", "perplexity", "--out", "{d}/p.jsonl"],
             "p.jsonl", ok),
        Case("index-out-is-a-file", ["index", "build", "{d}/p.jsonl", "--out", "{d}/p.jsonl"], "p.jsonl", ok),
    ]
    return cases


def index_cases() -> list[Case]:
    """Damaged saved indexes for `curate index query` (the good index is built once, in the fixture)."""
    damage = ["no-meta", "meta-not-json", "meta-a-list", "meta-missing-keys", "meta-wrong-version", "no-ids",
              "no-vectors", "vectors-truncated", "vectors-not-npy", "ids-wrong-length", "faiss-corrupt",
              "faiss-truncated", "meta-count-wrong", "ids-pickled-object", "not-a-folder"]
    return [Case(f"index-{d}", ["index", "query", "{d}/idx", "--text", "hello"], "idx") for d in damage]


def answers_cases() -> list[Case]:
    """Bad answers files for a run waiting on people (`curate resume` reads them)."""
    bad = {
        "not-json": "{oops\n",
        "not-an-object": "[1, 2]\n",
        "unknown-label": '{"id": ITEM, "label": "maybe"}\n',
        "unknown-id": '{"id": 99999, "label": "positive"}\n',
        "id-not-asked": '{"id": OTHER, "label": "positive"}\n',
        "id-a-string": '{"id": "abc", "label": "positive"}\n',
        "no-id": '{"label": "positive"}\n',
        "no-label": '{"id": ITEM}\n',
        "label-a-list": '{"id": ITEM, "label": ["positive"]}\n',
        "two-labels-disagree": '{"id": ITEM, "label": "positive"}\n{"id": ITEM, "label": "negative"}\n',
        "not-utf8": b'{"id": ITEM, "label": "positiv\xe9"}\n',
        "nul-bytes": b"\x00\x00\n",
        "bool-id": '{"id": true, "label": "positive"}\n',
        "float-id": '{"id": 1.5, "label": "positive"}\n',
    }
    return [Case(f"answers-{name}", ["resume", "{d}/run"], "answers", {"__answers__": body})
            for name, body in bad.items()]


CASES = type_cases() + value_cases() + file_cases() + pool_cases() + index_cases() + answers_cases()


# ---------------------------------------------------------------------------------------------- the checks


def _digest(folder: Path) -> dict[str, str]:
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if p.is_file() and rel.parts[0] != "out" and not p.name.startswith((".curate.lock", "journal.sqlite-")):
            out[str(rel)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def saved_index(tmp_path_factory):
    folder = tmp_path_factory.mktemp("index") / "idx"
    assert main(["--quiet", "index", "build", str(SAMPLE), "--out", str(folder)]) == 0
    return folder


@pytest.fixture(scope="module")
def waiting_run(tmp_path_factory):
    """A classification run waiting on people: round 0's batch exported, no answers yet."""
    base = tmp_path_factory.mktemp("waiting")
    data = yaml.safe_load((ROOT / "recipes" / "reviews-human.yaml").read_text())
    data["annotator"]["queue_dir"] = "queue"
    (base / "r.yaml").write_text(yaml.safe_dump(data))
    cwd = os.getcwd()
    os.chdir(base)
    try:
        assert main(["--quiet", "run", "r.yaml", "--out", "run"]) == 0
    finally:
        os.chdir(cwd)
    batch = next((base / "queue").glob("batch-*.jsonl"))
    return base, batch


def _damage_index(folder: Path, how: str) -> None:
    import numpy as np

    meta = folder / "meta.json"
    if how == "no-meta":
        meta.unlink()
    elif how == "meta-not-json":
        meta.write_text("{oops")
    elif how == "meta-a-list":
        meta.write_text("[1]")
    elif how == "meta-missing-keys":
        meta.write_text(json.dumps({"format_version": json.loads(meta.read_text())["format_version"]}))
    elif how == "meta-wrong-version":
        meta.write_text(json.dumps({**json.loads(meta.read_text()), "format_version": 999}))
    elif how == "meta-count-wrong":
        meta.write_text(json.dumps({**json.loads(meta.read_text()), "count": 7}))
    elif how == "no-ids":
        (folder / "ids.npy").unlink()
    elif how == "no-vectors":
        (folder / "vectors.npy").unlink()
    elif how == "vectors-truncated":
        os.truncate(folder / "vectors.npy", (folder / "vectors.npy").stat().st_size // 2)
    elif how == "vectors-not-npy":
        (folder / "vectors.npy").write_text("not numpy")
    elif how == "ids-wrong-length":
        np.save(folder / "ids.npy", np.arange(3))
    elif how == "ids-pickled-object":
        np.save(folder / "ids.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    elif how in ("faiss-corrupt", "faiss-truncated"):
        path = folder / "index.faiss"
        if not path.exists():  # a small exact index keeps no FAISS file: damage the vectors instead
            os.truncate(folder / "vectors.npy", 100)
        elif how == "faiss-corrupt":
            path.write_bytes(b"\x00" * 64)
        else:
            os.truncate(path, path.stat().st_size // 3)
    elif how == "not-a-folder":
        shutil.rmtree(folder)
        folder.write_text("a file, not an index folder")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_bad_input_is_a_clear_error_and_changes_nothing(case, tmp_path, capsys, request):
    d = tmp_path
    if case.id.startswith("index-"):
        shutil.copytree(request.getfixturevalue("saved_index"), d / "idx")
        _damage_index(d / "idx", case.id[len("index-"):])
    if case.id.startswith("answers-"):
        base, batch = request.getfixturevalue("waiting_run")
        shutil.copytree(base / "run", d / "run")
        shutil.copytree(base / "queue", d / "queue")
        ids = [json.loads(line)["id"] for line in batch.read_text().splitlines()]
        body = case.files["__answers__"]
        body = body if isinstance(body, bytes) else body.replace("OTHER", str(max(ids) + 1 if max(ids) + 1 not in ids
                                                                               else 99)).replace("ITEM", str(ids[0]))
        if isinstance(body, bytes):
            body = body.replace(b"ITEM", str(ids[0]).encode())
        answers = d / "queue" / batch.name.replace("batch-", "answers-")
        answers.write_bytes(body if isinstance(body, bytes) else body.encode())
        config = yaml.safe_load((d / "run" / "config.yaml").read_text())
        config["annotator"]["queue_dir"] = str(d / "queue")
        (d / "run" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    for rel, content in case.files.items():
        if rel == "__answers__":
            continue
        path = d / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    before = _digest(d)
    argv = [a.replace("{d}", str(d)) for a in case.argv]
    capsys.readouterr()
    try:
        code = main(["--quiet", *argv])
    except SystemExit as exit:  # argparse
        code = exit.code
    out = capsys.readouterr()
    err = out.err.strip()
    assert code == 2, f"exit {code}; stderr: {err[-800:]}; stdout: {out.out[-300:]}"
    assert "Traceback" not in err and "internal error" not in err, err
    last = err.splitlines()[-1] if err else ""
    if case.argparse:
        assert "error:" in last and case.expect in last, err
    else:
        assert last.startswith("curate: error:") and len(err.splitlines()) <= 2, err
        assert case.expect.lower() in err.lower(), f"the error does not name {case.expect!r}: {err}"
    assert "SECRET" not in err
    assert _digest(d) == before, "a failed command changed its inputs"


def test_the_corpus_is_large():
    assert len(CASES) >= 200, len(CASES)
