"""The results file and input lists, without a model: writing, repair, resume keys."""

from __future__ import annotations

import csv
import json
import threading

import pytest

from vlmserve.batch.done import DoneIndex
from vlmserve.batch.inputs import expand_inputs, is_candidate
from vlmserve.batch.results import FIELDS, ResultWriter, open_results
from vlmserve.errors import VlmserveError


def record(i: int, **extra) -> dict:
    return {"path": f"p{i}.png", "file_sha256": f"f{i}", "content_hash": f"c{i}",
            "template": "describe_zh", "prompt": "q", "answer": f"line one\nline two {i}",
            **extra}


def write(path, fmt, records) -> None:
    seen = []
    writer = ResultWriter(path, fmt, on_written=seen.append)
    threads = [threading.Thread(target=writer.put, args=(r,)) for r in records]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writer.close()
    assert len(seen) == writer.written == len(records)


def test_jsonl_lines_are_complete_and_have_every_field(tmp_path):
    out = tmp_path / "r.jsonl"
    write(out, "jsonl", [record(i) for i in range(40)])
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(line["path"] for line in lines) == sorted(f"p{i}.png" for i in range(40))
    assert all(tuple(line) == FIELDS for line in lines)


def test_a_partial_jsonl_line_is_cut_on_resume(tmp_path):
    out = tmp_path / "r.jsonl"
    write(out, "jsonl", [record(1), record(2)])
    whole = out.read_bytes()
    out.write_bytes(whole + b'{"path": "p3.png", "answ')
    with pytest.raises(VlmserveError, match="--resume"):
        open_results(out, "jsonl", resume=False)
    existing = open_results(out, "jsonl", resume=True)
    assert [r["path"] for r in existing.records] == ["p1.png", "p2.png"]
    assert existing.repaired_bytes == len(b'{"path": "p3.png", "answ')
    assert out.read_bytes() == whole


def test_a_csv_row_cut_inside_a_multiline_answer_is_cut_on_resume(tmp_path):
    out = tmp_path / "r.csv"
    write(out, "csv", [record(1, answer={"helmet": True}), record(2)])
    whole = out.read_bytes()
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["answer"] in ('{"helmet": true}', "line one\nline two 2")
    # the crash came after the first line of a quoted, multi-line answer
    out.write_bytes(whole + b'p3.png,f3,c3,,,describe_zh,q,"line one\n')
    existing = open_results(out, "csv", resume=True)
    assert sorted(r["path"] for r in existing.records) == ["p1.png", "p2.png"]
    assert out.read_bytes() == whole
    out.write_text("some,other,columns\n")
    with pytest.raises(VlmserveError, match="columns"):
        open_results(out, "csv", resume=True)


def test_done_index_resume_rules():
    done = DoneIndex([record(1), {**record(2), "content_hash": None, "error": "bad"}])
    task = ("describe_zh", "q")
    assert done.covers(task, "p1.png", "f1", None, {"p1.png"})  # same path, same bytes
    assert done.covers(task, "p1.png", "other-bytes", "c1", {"p1.png"})  # same pixels
    assert done.covers(task, "p2.png", "f2", None, {"p2.png"})  # error lines count too
    assert not done.covers(("describe_zh", "other question"), "p1.png", "f1", "c1", {"p1.png"})
    # a moved folder: the recorded path is not among this run's inputs
    assert done.covers(task, "moved/p1.png", "f1", "c1", {"moved/p1.png"})
    # a second copy of a picture in the same run keeps its own line
    assert not done.covers(task, "copy.png", "f1", "c1", {"p1.png", "copy.png"})


def test_expand_inputs_walks_folders_sorted_and_skips_hidden_and_temporary(tmp_path):
    for name in ("b.PNG", "a.jpg", "sub/c.webp", ".hid/d.png", "sub/.e.png", "f.png.part",
                 "~g.png", "h.txt", "sub/deeper/i.heic"):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    found = expand_inputs([str(tmp_path), str(tmp_path / "a.jpg"), str(tmp_path / "h.txt"),
                           str(tmp_path / "nothing-*.png")])
    rel = [p[len(str(tmp_path)) + 1:] for p in found.paths]
    assert rel == ["a.jpg", "b.PNG", "sub/c.webp", "sub/deeper/i.heic", "h.txt"]
    assert found.warnings == [f"{tmp_path / 'nothing-*.png'}: no image files found"]
    assert is_candidate("x.TIFF") and not is_candidate("x.tmp") and not is_candidate(".x.png")


_FULL_DISK_CHILD = r"""
import json, resource, signal, sys
from vlmserve.batch.results import ResultWriter
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG)
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[3]), int(sys.argv[3])))
writer = ResultWriter(sys.argv[1], sys.argv[2])
for i in range(60):
    try:
        writer.put({"path": f"p{i}.png", "answer": "x" * 150 + f" {i}"})
    except Exception:
        break
writer.close()
print(json.dumps({"written": writer.written, "failed": writer.failed}))
"""


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_a_full_disk_never_leaves_half_a_line(tmp_path, fmt):
    """A real write failure: the child's file-size limit (RLIMIT_FSIZE) stops a write in
    the middle of a line, as a full disk does; the file must end on a whole line."""
    import os
    import subprocess
    import sys

    import vlmserve

    out = tmp_path / f"r.{fmt}"
    limit = 2000  # bytes: a few lines, then a write cut short
    src = os.path.dirname(os.path.dirname(vlmserve.__file__))
    child = subprocess.run([sys.executable, "-c", _FULL_DISK_CHILD, str(out), fmt, str(limit)],
                           capture_output=True, text=True, timeout=60,
                           env={**os.environ, "PYTHONPATH": src})
    assert child.returncode == 0, child.stderr
    report = json.loads(child.stdout)
    assert report["failed"] and "too large" in report["failed"].lower(), report
    data = out.read_bytes()
    assert 0 < len(data) <= limit and data.endswith(b"\n"), data[-80:]
    if fmt == "jsonl":
        lines = [json.loads(line) for line in data.splitlines()]
    else:
        lines = list(csv.reader(data.decode().splitlines()))[1:]
    assert len(lines) == report["written"] > 0
    assert open_results(out, fmt, resume=True).repaired_bytes == 0
