"""Export to TRL's formats: the columns its trainers read."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from curate.errors import ConfigError, DataError
from curate.export import save_dataset, save_run_data, to_trl
from curate.pool import load_pool


def test_messages_and_prompt_completion_keep_provenance():
    from trl.data_utils import is_conversational

    pool = load_pool([{"prompt": "Add 2 and 2.", "response": "4", "source": "teacher"}])
    msgs = to_trl(pool, "messages", system_prompt="Be brief.")
    assert msgs[0]["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Add 2 and 2."},
                                   {"role": "assistant", "content": "4"}]
    assert is_conversational(msgs[0]) and msgs[0]["source"] == "teacher" and msgs[0]["id"] == 0
    pc = to_trl(pool, "prompt_completion")
    assert pc[0]["prompt"] == "Add 2 and 2." and pc[0]["completion"] == "4" and not is_conversational(pc[0])


def test_preference_and_errors():
    pool = load_pool([{"prompt": "p", "chosen": "good", "rejected": "bad"}])
    assert set(to_trl(pool, "preference").column_names) >= {"prompt", "chosen", "rejected"}
    with pytest.raises(DataError, match="needs columns prompt, response; missing response"):
        to_trl(pool, "messages")
    with pytest.raises(ConfigError, match="Did you mean 'preference'"):
        to_trl(pool, "preferences")


@pytest.mark.parametrize("name", ["out.jsonl", "out.parquet", "outdir"])
def test_save_round_trip(tmp_path, name):
    pool = load_pool([{"prompt": "p1", "response": "r1"}, {"prompt": "p2", "response": "r2"}])
    path = save_dataset(to_trl(pool, "prompt_completion"), tmp_path / name)
    again = load_pool(path, columns={"response": "completion"})
    assert again.column("prompt") == ["p1", "p2"] and again.column("response") == ["r1", "r2"]
    with pytest.raises(ConfigError, match="Cannot save"):
        save_dataset(pool, tmp_path / "x.txt")


def _splits():
    from datasets import Dataset, DatasetDict

    return DatasetDict({"train": Dataset.from_dict({"prompt": ["p1", "p2"], "response": ["r1", "r2"]}),
                        "test": Dataset.from_dict({"prompt": ["q"], "response": ["s"]})})


def test_to_trl_converts_every_split_of_a_dataset_dict():
    out = to_trl(_splits(), "messages")
    assert list(out) == ["train", "test"] and out["test"][0]["messages"][1] == {"role": "assistant", "content": "s"}


@pytest.mark.parametrize("name", ["x.jsonl", "x.parquet", "xdir"])
def test_a_dataset_dict_saves_one_file_per_split_or_a_folder(tmp_path, name):
    from datasets import load_dataset, load_from_disk

    path = save_dataset(to_trl(_splits(), "prompt_completion"), tmp_path / name)
    assert path == tmp_path / name
    if name == "xdir":
        again = load_from_disk(str(path))
    else:  # train at the path itself (what TRL's load_dataset("json", data_files=...) reads), test beside it
        kind = name.split(".")[1].replace("jsonl", "json")
        again = load_dataset(kind, data_files={"train": str(path), "test": str(tmp_path / f"x.test.{name.split('.')[1]}")})
    assert again["train"]["completion"] == ["r1", "r2"] and again["test"]["prompt"] == ["q"]


def test_a_dataset_dict_without_train_needs_a_folder(tmp_path):
    from datasets import DatasetDict

    with pytest.raises(DataError, match=r"needs a 'train' split .*save to a folder"):
        save_dataset(DatasetDict({"validation": _splits()["test"]}), tmp_path / "x.jsonl")
    save_dataset({"validation": [{"a": 1}]}, tmp_path / "folder")  # a folder holds any splits (rows as dicts too)
    assert (tmp_path / "folder" / "validation").is_dir()


def _journal(run_dir):
    from curate.annotate.base import Annotation
    from curate.budget import Charge
    from curate.journal import Journal

    journal = Journal.of(run_dir)
    try:
        journal.start_round(0, np.array([0, 1]), [0, 0], "RandomSampling", {})
        for i in (0, 1):
            journal.record(Annotation(i, "r", "human", None, human_labels=1), Charge("human", 250_000, human_labels=1,
                                                                                     item_id=i, round=0), round=0)
    finally:
        journal.close()


def test_save_run_data_writes_train_test_and_a_dataset_card(tmp_path):
    from datasets import load_dataset

    import curate

    run = tmp_path / "run"
    _journal(run)
    splits = _splits()
    path = save_run_data(splits["train"], run / "data.jsonl", test=splits["test"], run_dir=run, paradigm="sft",
                         strategy="random (round 0), then entropy", budget={"money": 2.0, "labels": None, "rounds": 3},
                         what="responses")
    assert path == run / "data.jsonl" and (run / "data.test.jsonl").exists()
    text = (run / "README.md").read_text()
    head = yaml.safe_load(text.split("---\n")[1])
    assert head["configs"] == [{"config_name": "default", "data_files": [{"split": "train", "path": "data.jsonl"},
                                                                         {"split": "test", "path": "data.test.jsonl"}]}]
    meta = head["curate"]
    assert meta["run"] == str(run.resolve()) and meta["paradigm"] == "sft" and meta["responses"] == 2
    assert meta["spent"] == 0.5 and meta["budget"] == {"money": 2.0, "rounds": 3} and meta["rows"] == {"train": 2, "test": 1}
    assert meta["strategy"] == "random (round 0), then entropy" and meta["curate_version"] == curate.__version__
    assert meta["date"].startswith("20") and "| money spent | 0.5000 USD |" in text
    # The folder is a Hugging Face dataset folder: the card's configs name the files.
    both = load_dataset(str(run))
    assert both["train"]["prompt"] == ["p1", "p2"] and both["test"]["prompt"] == ["q"]
    # No held-out part: train only. A README.md curate did not write is left alone.
    other = tmp_path / "mine"
    other.mkdir()
    (other / "README.md").write_text("my notes\n")
    save_run_data(splits["train"], other / "x.jsonl", run_dir=run, paradigm="sft")
    assert (other / "x.jsonl").exists() and not (other / "x.test.jsonl").exists()
    assert (other / "README.md").read_text() == "my notes\n"
