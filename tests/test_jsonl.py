"""The one JSONL reader and writer: split on "\n" only, clear errors, atomic writes, inputs untouched."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from curate.errors import DataError
from curate.jsonl import (
    check_regular_file,
    iter_jsonl,
    read_jsonl,
    split_lines,
    write_jsonl,
    write_text_atomic,
)

# Every character str.splitlines() splits at besides "\n" and "\r": all are legal raw inside a JSON string.
BREAKS = ["\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]


def test_unicode_line_breaks_inside_strings_stay_in_their_row(tmp_path):
    rows = [{"id": i, "text": f"before{ch}after"} for i, ch in enumerate(BREAKS)]
    path = tmp_path / "u.jsonl"
    path.write_bytes("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8"))
    assert len(path.read_text(encoding="utf-8").splitlines()) > len(rows)  # what broke the old readers
    assert read_jsonl(path) == [(i + 1, r) for i, r in enumerate(rows)]


def test_line_numbers_skip_blank_lines_and_crlf_and_no_final_newline(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_bytes(b'{"a": 1}\r\n\r\n  \n{"a": 2}')
    assert read_jsonl(path) == [(1, {"a": 1}), (4, {"a": 2})]
    assert split_lines("x\r\ny\n") == ["x", "y"] and split_lines("") == []


@pytest.mark.parametrize(("content", "message"), [
    (b'{"a": 1}\n{"a": \n', r"bad\.jsonl:2: malformed JSON at column"),
    (b'{"a": 1}\n[1, 2]\n', r"bad\.jsonl:2: expected a JSON object per line, got list"),
    (b'{"a": 1}\n"text"\n', r"bad\.jsonl:2: expected a JSON object per line, got str"),
    (b'{"a": 1}\n{"a": "caf\xe9"}\n', r"bad\.jsonl:2: not valid UTF-8 \(byte 0xe9"),
])
def test_errors_name_file_and_line_and_leave_the_file_alone(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        read_jsonl(path)
    assert path.read_bytes() == content


def test_a_bom_is_not_part_of_the_first_row(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}\n')
    assert read_jsonl(path) == [(1, {"a": 1})]


def test_missing_files_pipes_and_folders_are_errors_not_hangs(tmp_path):
    with pytest.raises(DataError, match=r"nope\.jsonl: no such file"):
        list(iter_jsonl(tmp_path / "nope.jsonl"))
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match=r"is a named pipe \(FIFO\), not a regular file"):
        read_jsonl(fifo)
    with pytest.raises(DataError, match="is a folder"):
        check_regular_file(tmp_path)


def test_writer_round_trips_and_replaces_atomically(tmp_path):
    rows = [{"text": f"a{ch}b", "n": i} for i, ch in enumerate(BREAKS)]
    path = write_jsonl(tmp_path / "sub" / "out.jsonl", rows)
    assert "\u2028" in path.read_text(encoding="utf-8")  # ensure_ascii=False
    assert [r for _, r in read_jsonl(path)] == rows
    before = hashlib.sha256(path.read_bytes()).hexdigest()

    class Boom:
        def __iter__(self):
            yield {"text": "half"}
            raise RuntimeError("crash while writing")

    with pytest.raises(RuntimeError):
        write_jsonl(path, Boom())
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before  # the old file, whole
    write_text_atomic(path, "x\n")
    assert path.read_text() == "x\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.jsonl"]  # no temporary file left


def test_generated_text_is_cut_at_newlines_only():
    from curate.generate.candidates import clean_generation

    assert clean_generation("\r\n1. one\u2028line\r\nsecond") == "one\u2028line"


def test_bench_metrics_log_reads_through_the_same_reader(tmp_path):
    from curate.bench.cells import MetricsLog

    (tmp_path / "metrics.jsonl").write_text('{"round": 0, "accuracy": 0.5}\n\n{"round": 1, "accuracy": 0.75}')
    assert MetricsLog.read(tmp_path) == {0: {"accuracy": 0.5}, 1: {"accuracy": 0.75}}
    (tmp_path / "metrics.jsonl").write_text('{"round": 0, "accuracy": 0.5}\n{"round": 1, "acc\n')
    with pytest.raises(DataError, match=r"metrics\.jsonl:2: malformed JSON"):
        MetricsLog.read(tmp_path)
