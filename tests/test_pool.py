"""Pools: every format, role mapping, stable ids, and clear errors that lose nothing."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from curate.errors import ConfigError, DataError
from curate.pool import load_pool

ROWS = [
    {"sentence": "good film", "label": 1, "uid": "a"},
    {"sentence": "bad film", "label": 0, "uid": "b"},
    {"sentence": "fine film", "label": 1, "uid": "c"},
]


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(params=["jsonl", "json", "csv", "tsv", "parquet", "saved", "list", "dataset"])
def any_source(request, tmp_path):
    import datasets

    kind = request.param
    if kind == "jsonl":
        return write_jsonl(tmp_path / "p.jsonl", ROWS)
    if kind == "json":
        (tmp_path / "p.json").write_text(json.dumps(ROWS))
        return tmp_path / "p.json"
    if kind in ("csv", "tsv"):
        sep = "," if kind == "csv" else "\t"
        lines = [sep.join(ROWS[0])] + [sep.join(str(v) for v in r.values()) for r in ROWS]
        (tmp_path / f"p.{kind}").write_text("\n".join(lines) + "\n")
        return tmp_path / f"p.{kind}"
    ds = datasets.Dataset.from_list(ROWS)
    if kind == "parquet":
        ds.to_parquet(str(tmp_path / "p.parquet"))
        return tmp_path / "p.parquet"
    if kind == "saved":
        ds.save_to_disk(str(tmp_path / "saved"))
        return tmp_path / "saved"
    return ROWS if kind == "list" else ds


def test_every_format_loads_with_roles_and_stable_ids(any_source):
    pool = load_pool(any_source, id_column="uid")
    assert len(pool) == 3
    assert pool.roles == ("text", "label")  # 'sentence' fills the text role by default
    assert pool.texts() == ["good film", "bad film", "fine film"]
    assert pool.ids.tolist() == [0, 1, 2] and pool.ids.dtype == np.int64
    assert pool.column("key") == ["a", "b", "c"]
    assert [str(v) for v in pool.column("label")] == ["1", "0", "1"]


def test_explicit_mapping_and_select(tmp_path):
    rows = [{"q": "2+2?", "a": "4", "text": "unused"}, {"q": "3+3?", "a": "6", "text": "unused"}]
    pool = load_pool(write_jsonl(tmp_path / "qa.jsonl", rows), columns={"prompt": "q", "response": "a"})
    assert set(pool.roles) >= {"prompt", "response"}
    assert pool.select([1])["prompt"] == ["3+3?"]
    assert pool.select([1, 0])["response"] == ["6", "4"]
    with pytest.raises(ConfigError, match="not in the pool"):
        pool.select([5])


def test_role_column_clash_is_kept_under_another_name(tmp_path):
    rows = [{"text": "old", "body": "new"}]
    pool = load_pool(write_jsonl(tmp_path / "c.jsonl", rows), columns={"text": "body"})
    assert pool.texts() == ["new"]
    assert pool.column("text_original") == ["old"]


def test_prompt_response_texts_join(tmp_path):
    pool = load_pool([{"prompt": "Say hi", "response": "hi"}])
    assert pool.texts() == ["Say hi\nhi"]


def test_malformed_json_names_file_line_and_column(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok"}\n\n{"text": "broken"\n')
    before = digest(path)
    with pytest.raises(DataError, match=r"bad\.jsonl:3: malformed JSON at column"):
        load_pool(path)
    assert digest(path) == before  # input untouched


def test_wrong_encoding_names_line(tmp_path):
    path = tmp_path / "latin.jsonl"
    path.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"latin\.jsonl:2: not valid UTF-8 \(byte 0xe9"):
        load_pool(path)


def test_missing_column_lists_available_and_suggests(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", ROWS)
    with pytest.raises(DataError) as err:
        load_pool(path, columns={"text": "sentense"})
    msg = str(err.value)
    assert "'sentense'" in msg and "Available columns: sentence, label, uid" in msg and "Did you mean 'sentence'" in msg


def test_unknown_role_is_an_error():
    with pytest.raises(ConfigError, match="Did you mean 'label'"):
        load_pool(ROWS, columns={"lable": "label"})


def test_required_role_missing(tmp_path):
    with pytest.raises(DataError, match="required role 'label'"):
        load_pool([{"text": "x"}], require=("label",))


def test_empty_pool(tmp_path):
    (tmp_path / "e.jsonl").write_text("\n\n")
    with pytest.raises(DataError, match="empty"):
        load_pool(tmp_path / "e.jsonl")
    (tmp_path / "e.csv").write_text("")
    with pytest.raises(DataError, match="empty"):
        load_pool(tmp_path / "e.csv")


def test_duplicate_ids_name_both_lines(tmp_path):
    rows = [{"text": "a", "uid": 1}, {"text": "b", "uid": 2}, {"text": "c", "uid": 1}]
    with pytest.raises(DataError, match=r"d\.jsonl:3: duplicate id 1 in column 'uid' \(first at .*d\.jsonl:1\)"):
        load_pool(write_jsonl(tmp_path / "d.jsonl", rows), id_column="uid")


def test_wrong_types_are_named(tmp_path):
    with pytest.raises(DataError, match=r"t\.jsonl:2: field 'text' is int"):
        load_pool(write_jsonl(tmp_path / "t.jsonl", [{"text": "a"}, {"text": 5}]))
    with pytest.raises(DataError, match=r"n\.jsonl:2: field 'text' \(text\) must be a string, got None"):
        load_pool(write_jsonl(tmp_path / "n.jsonl", [{"text": "a"}, {"text": None}]))
    with pytest.raises(DataError, match=r"b\.jsonl:1: field 'text' \(text\) is empty"):
        load_pool(write_jsonl(tmp_path / "b.jsonl", [{"text": "  "}]))


def test_rows_with_different_fields(tmp_path):
    with pytest.raises(DataError, match=r"f\.jsonl:2: fields differ .*missing \['label'\], unexpected \['lbl'\]"):
        load_pool(write_jsonl(tmp_path / "f.jsonl", [{"text": "a", "label": 1}, {"text": "b", "lbl": 1}]))


def test_csv_field_count_and_header(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text('text,label\n"a, quoted",1\nb,0,extra\n')
    with pytest.raises(DataError, match=r"x\.csv:3: expected 2 fields \(text, label\), got 3"):
        load_pool(path)
    (tmp_path / "h.csv").write_text("text,text\na,b\n")
    with pytest.raises(DataError, match="header must name every column once"):
        load_pool(tmp_path / "h.csv")


def test_csv_bom_and_quoted_delimiters(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes('\ufefftext,label\n"a, b",1\n'.encode())
    pool = load_pool(path)
    assert pool.texts() == ["a, b"]


def test_unknown_suffix_and_format(tmp_path):
    (tmp_path / "p.txt").write_text("hello\n")
    with pytest.raises(DataError, match="cannot tell the format"):
        load_pool(tmp_path / "p.txt")
    with pytest.raises(ConfigError, match="Did you mean 'jsonl'"):
        load_pool(tmp_path / "p.txt", format="jsnl")
    assert load_pool(write_jsonl(tmp_path / "p.data", [{"text": "x"}]), format="jsonl").texts() == ["x"]


def test_json_object_with_one_list(tmp_path):
    (tmp_path / "o.json").write_text(json.dumps({"meta": 1, "data": [{"text": "x"}]}))
    assert load_pool(tmp_path / "o.json").texts() == ["x"]
    (tmp_path / "bad.json").write_text('{"a": [1], "b": [2]}')
    with pytest.raises(DataError, match="exactly one list"):
        load_pool(tmp_path / "bad.json")


@pytest.fixture
def no_hub(monkeypatch):
    """datasets.load_dataset must not be called: fail loudly if it is."""
    import datasets

    def refuse(*args, **kwargs):
        raise AssertionError(f"load_dataset was called with {args} {kwargs}")

    monkeypatch.setattr(datasets, "load_dataset", refuse)


def test_a_missing_local_path_is_no_such_file_with_a_suggestion(tmp_path, no_hub):
    write_jsonl(tmp_path / "pool.jsonl", ROWS)
    with pytest.raises(DataError, match=r"pol\.jsonl: no such file\. Did you mean '.*pool\.jsonl'\?"):
        load_pool(tmp_path / "pol.jsonl")
    with pytest.raises(DataError, match=r"no such file \(the folder .*nowhere does not exist either\)"):
        load_pool(tmp_path / "nowhere" / "p.jsonl")
    with pytest.raises(DataError, match=r"no/such-dataset-here: no such file.*write 'hf:no/such-dataset-here'"):
        load_pool("no/such-dataset-here")  # hub-like, but a hub dataset is used only when asked for
    with pytest.raises(DataError, match=r"imdb: no such file\. For a hub dataset write 'hf:imdb'"):
        load_pool("imdb")


def test_hf_prefix_or_format_hub_asks_the_hub(monkeypatch):
    import datasets

    calls = []

    def fake(name, split):
        calls.append((name, split))
        return datasets.Dataset.from_list([{"sentence": "from the hub", "label": 1}])

    monkeypatch.setattr(datasets, "load_dataset", fake)
    pool = load_pool("hf:stanfordnlp/sst2", split="validation")
    assert pool.texts() == ["from the hub"] and pool.source == "hf:stanfordnlp/sst2"
    load_pool("imdb", format="hub")
    assert calls == [("stanfordnlp/sst2", "validation"), ("imdb", "train")]


def test_a_hub_failure_is_a_data_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match=r"hf:no/such-dataset-here: could not load the hub dataset"):
        load_pool("hf:no/such-dataset-here")


def test_shipped_samples_keep_working(no_hub):
    assert len(load_pool("sample:reviews", id_column="id")) == 64
    with pytest.raises(ConfigError, match="Unknown sample 'reviewz'"):
        load_pool("sample:reviewz")


def test_pipes_devices_and_plain_folders_are_clear_errors_not_hangs(tmp_path, no_hub):
    import os

    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)  # reading it would block until a writer comes
    with pytest.raises(DataError, match=r"pipe\.jsonl: is a named pipe \(FIFO\), not a regular pool file"):
        load_pool(fifo)
    with pytest.raises(DataError, match=r"/dev/null: is a device"):
        load_pool("/dev/null", format="jsonl")
    (tmp_path / "folder").mkdir()
    with pytest.raises(DataError, match=r"folder: is a folder, but not one written by Dataset\.save_to_disk"):
        load_pool(tmp_path / "folder")
    with pytest.raises(DataError, match=r"folder: is a folder; format='csv' reads a file"):
        load_pool(tmp_path / "folder", format="csv")


def test_in_memory_datasets_frames_and_dicts(no_hub):
    import datasets
    import pandas as pd

    ds = datasets.Dataset.from_list(ROWS)
    both = datasets.DatasetDict({"train": ds, "test": ds.select([2])})
    assert load_pool(both).texts() == ["good film", "bad film", "fine film"]
    assert load_pool(both, split="test").texts() == ["fine film"]
    with pytest.raises(ConfigError, match=r"no split 'tset'\. Available splits: train, test\..*Did you mean 'test'"):
        load_pool(both, split="tset")
    assert load_pool(ds.to_iterable_dataset(), id_column="uid").column("key") == ["a", "b", "c"]
    streamed = datasets.IterableDatasetDict({"train": ds.to_iterable_dataset()})
    assert len(load_pool(streamed)) == 3
    frame = pd.DataFrame(ROWS)
    pool = load_pool(frame, id_column="uid")
    assert pool.texts() == ["good film", "bad film", "fine film"] and pool.column("label") == [1, 0, 1]
    with pytest.raises(DataError, match=r"<DataFrame>: row 2: field 'sentence' \(text\) must be a string, got None"):
        load_pool(pd.DataFrame({"sentence": ["a", None]}))
    assert load_pool({"text": ["x", "y"], "label": [0, 1]}).texts() == ["x", "y"]
    with pytest.raises(DataError, match="all lists of one length"):
        load_pool({"text": ["x", "y"], "label": [0]})
    with pytest.raises(ConfigError, match="Cannot load a pool from a int"):
        load_pool(42)
    with pytest.raises(ConfigError, match="is for files"):
        load_pool(ds, format="jsonl")


def test_an_iterable_dataset_over_the_cap_is_refused(monkeypatch):
    import datasets

    import curate.pool

    monkeypatch.setattr(curate.pool, "MAX_ITERABLE_ROWS", 2)
    with pytest.raises(DataError, match=r"<IterableDataset>: more than 2 rows.*take\(2\)"):
        load_pool(datasets.Dataset.from_list(ROWS).to_iterable_dataset())


def test_unicode_line_breaks_inside_json_strings_stay_inside_their_row(tmp_path):
    texts = ["caf\u00e9\u0085menu", "one\u2028two\u2029three", "tab\x0bform\x0cfeed"]
    path = tmp_path / "u.jsonl"
    path.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    assert "\u2028" in path.read_text(encoding="utf-8")  # written raw, as ensure_ascii=False does
    assert load_pool(path).texts() == texts
    csv_path = tmp_path / "u.csv"
    csv_path.write_text("text\n" + "\n".join(texts) + "\n", encoding="utf-8")
    assert load_pool(csv_path).texts() == texts


def test_lines_format_reads_label_text_files(tmp_path):
    path = tmp_path / "stsa.binary.train"
    path.write_text("1 a stirring , funny film\n0 apparently\treassembled\n\n1 one\u2028line\r\n", encoding="utf-8")
    with pytest.raises(DataError, match="cannot tell the format.*format='lines'"):
        load_pool(path)
    pool = load_pool(path, format="lines", require=("text", "label"))
    assert pool.texts() == ["a stirring , funny film", "apparently\treassembled", "one\u2028line"]
    assert pool.column("label") == ["1", "0", "1"]
    tabbed = tmp_path / "t.txt"
    tabbed.write_text("good film here\tpos\nbad one\tneg\n")
    pool = load_pool(tabbed, format="lines:label_last,tab")
    assert pool.texts() == ["good film here", "bad one"] and pool.column("label") == ["pos", "neg"]
    assert load_pool(tabbed, format="lines:no_label").roles == ("text",)
    bad = tmp_path / "b.txt"
    bad.write_text("1 fine\n\nlonely\n")
    with pytest.raises(DataError, match=r"b\.txt:3: expected '<label> <text>'.*'lonely'"):
        load_pool(bad, format="lines")
    with pytest.raises(ConfigError, match="Unknown option 'label_frist'.*Did you mean 'label_first'"):
        load_pool(bad, format="lines:label_frist")
    with pytest.raises(ConfigError, match="takes no options"):
        load_pool(bad, format="csv:tab")
    with pytest.raises(DataError, match=r"b\.txt:1: not valid UTF-8"):
        bad.write_bytes(b"1 caf\xe9\n")
        load_pool(bad, format="lines")


def test_cli_pool_arguments_take_a_format(tmp_path, monkeypatch, capsys):
    from curate.cli import main

    monkeypatch.setenv("CURATE_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "sst.train"
    path.write_text("1 a warm and funny film\n0 a dull film\n1 a great cast\n")
    out = tmp_path / "picked.jsonl"
    assert main(["--quiet", "select", str(path), "--format", "lines", "--strategy", "random", "--budget", "2",
                 "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 2 and {r["label"] for r in rows} <= {"0", "1"}
    assert main(["--quiet", "select", str(tmp_path / "sst.trian"), "--format", "lines", "--strategy", "random",
                 "--budget", "2", "--out", str(out)]) == 2
    assert "no such file. Did you mean" in capsys.readouterr().err


def test_no_role_column(tmp_path):
    with pytest.raises(DataError, match="no column matches any role"):
        load_pool([{"body": "x"}])


@pytest.mark.data
def test_real_trec_tsv_like_file(shared_data, tmp_path):
    """The shared TREC file is 'LABEL:fine question' per line; read it through a list of dicts."""
    lines = (shared_data / "trec" / "train.txt").read_bytes().decode("latin-1").splitlines()
    rows = [{"label": ln.split(":", 1)[0], "text": ln.split(" ", 1)[1]} for ln in lines if ln.strip()]
    pool = load_pool(rows, require=("text", "label"))
    assert len(pool) == 5452
    assert set(pool.column("label")) == {"ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"}


@pytest.mark.data
def test_real_sst2_and_trec_line_files(shared_data):
    sst = load_pool(shared_data / "sst2_sentence" / "stsa.binary.train", format="lines", require=("text", "label"))
    assert len(sst) == 6920
    labels = sst.column("label")
    assert labels.count("1") == 3610 and labels.count("0") == 3310
    trec = load_pool(shared_data / "trec" / "train.txt", format="lines", require=("text", "label"))
    assert len(trec) == 5452  # no final newline; U+FFFD on line 66 is text
    assert {label.split(":")[0] for label in trec.column("label")} == {"ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"}
