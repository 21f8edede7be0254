"""``vlmserve bench`` end to end on the tiny demo model: real runs, checked for shape and
internal consistency (never for speed: timings on a shared CI box mean nothing)."""

from __future__ import annotations

import json

import pytest

from tests.bench.cli import vlmserve
from vlmserve.bench.document import FIELDS, get_path
from vlmserve.bench.summary import summarize
from vlmserve.bench.workload import (
    BenchError,
    Workload,
    make_picture,
    parse_concurrency,
    parse_image_size,
)

MAX_TOKENS = 8




@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory):
    """The documented example, once per module: JSON to a file, markdown to stdout."""
    folder = tmp_path_factory.mktemp("bench")
    proc = vlmserve("bench", "--demo", "tiny", "--runs", "2", "--max-tokens", str(MAX_TOKENS),
                    "--concurrency", "1,2", "--threads", "1", "--json", "out.json",
                    "--markdown", "--no-progress", cwd=folder)
    assert proc.returncode == 0, proc.stderr
    return json.loads((folder / "out.json").read_text()), proc.stdout


def test_json_has_every_documented_field(tiny_run):
    doc, _ = tiny_run
    missing = [path for path in FIELDS if not get_path(doc, path)[0]]
    assert not missing, f"documented but missing: {missing}"
    assert doc["schema"] == "vlmserve-bench/1"
    assert doc["mode"] == "in-process"
    assert doc["command"].startswith("vlmserve bench --demo tiny --runs 2")
    assert doc["machine"]["cpu_model"] and doc["machine"]["logical_cores"] >= 1
    assert doc["versions"]["llama_cpp_python"] == "0.3.36"
    assert len(doc["load_average"]["start"]) == 3 and len(doc["load_average"]["end"]) == 3


def test_model_and_engine_facts(tiny_run):
    doc, _ = tiny_run
    model, engine = doc["model"], doc["engine"]
    assert model["demo_size"] == "tiny" and model["random_weights"] is True
    assert model["quant_type"] == "F16"
    assert model["file_size_bytes"] > model["weight_bytes_per_token"] > 0
    assert model["n_params"] > 0 and model["llama_model_size_bytes"] > 0
    assert engine["backend"] == "CPU" and engine["threads"] == 1
    assert engine["n_parallel"] == 2  # the largest concurrency level
    assert engine["n_ctx_per_slot"] >= 576 + 15 + MAX_TOKENS
    assert engine["kv_cache_bytes"] > 0 and engine["load_ms"] > 0


def test_runs_are_complete_and_consistent(tiny_run):
    doc, _ = tiny_run
    runs = doc["results"]["runs"]
    assert [r["kind"] for r in runs] == ["cold", "warm", "cold", "warm"]
    assert all(r["completion_tokens"] == MAX_TOKENS == r["streamed_tokens"] for r in runs)
    assert all(r["question_tokens"] == 15 for r in runs)
    assert doc["workload"]["question_tokens"] == {"cold": 15, "warm": 15}
    for cold, warm in zip(runs[::2], runs[1::2], strict=True):
        assert cold["image_seed"] == warm["image_seed"]
        assert cold["image_tokens"] == warm["image_tokens"] == 576  # 768x768
        # cold: a new picture, only the template's first tokens can be reused
        assert cold["cached_tokens"] < cold["image_tokens"]
        assert cold["image_encode_ms"] > 0
        # warm: the picture and everything before the question come from the slot's KV
        assert warm["cached_tokens"] > warm["image_tokens"]
        assert warm["image_encode_ms"] is None
        for r in (cold, warm):
            assert 0 < r["engine_ttft_ms"] <= r["ttft_ms"] <= r["total_ms"]
            assert r["decode_tok_s"] > 0 and r["prefill_tok_s"] > 0
            assert r["prompt_tokens"] == cold["prompt_tokens"]


def test_summary_matches_runs(tiny_run):
    doc, _ = tiny_run
    s, runs = doc["results"]["summary"], doc["results"]["runs"]
    assert s["completion_ok"] is True and s["completion_tokens"] == [MAX_TOKENS] * 4
    cold = [r for r in runs if r["kind"] == "cold"]
    warm = [r for r in runs if r["kind"] == "warm"]
    assert s["cold_ttft_ms"]["values"] == [r["ttft_ms"] for r in cold]
    assert s["warm_ttft_ms"]["values"] == [r["ttft_ms"] for r in warm]
    for c, w, ratio in zip(cold, warm, s["warm_cold_ratio"]["values"], strict=True):
        assert ratio == pytest.approx(w["ttft_ms"] / c["ttft_ms"], abs=1e-3)
    assert s["warm_cached_tokens"]["min"] > 0
    for key in ("image_encode_ms", "cold_ttft_ms", "warm_ttft_ms", "prefill_tok_s",
                "decode_tok_s", "engine_decode_tok_s"):
        v = s[key]
        assert 0 < v["min"] <= v["median"] <= v["max"], key


def test_concurrency_levels(tiny_run):
    doc, _ = tiny_run
    levels = doc["results"]["concurrency"]
    assert [(lv["streams"], lv["pass"]) for lv in levels] == [
        (1, "cold"), (1, "warm"), (2, "cold"), (2, "warm")]
    for lv in levels:
        assert lv["mode"] == "concurrent" and lv["completion_ok"] is True
        assert lv["completion_tokens"] == lv["streams"] * MAX_TOKENS
        assert lv["aggregate_tok_s"] == pytest.approx(
            lv["completion_tokens"] / (lv["wall_ms"] / 1000), rel=0.01)
        assert lv["ttft_ms"]["n"] == lv["streams"]
        if lv["pass"] == "warm":
            assert lv["cached_tokens"]["min"] > 576


def test_engine_counters_count_the_measured_requests(tiny_run):
    doc, _ = tiny_run
    c = doc["results"]["engine_counters"]
    requests = 2 * 2 + 2 * (1 + 2)  # runs x (cold, warm) + levels x (cold, warm)
    assert c["admitted"] == requests
    assert c["completion_tokens"] == requests * MAX_TOKENS
    assert c["image_cache_misses"] == 2 + 1 + 2  # one per new picture
    assert c["prefix_tokens_reused"] > 0
    assert c["mean_batch_tokens"] >= 1 and c["max_batch_tokens"] >= c["mean_batch_tokens"]
    assert doc["results"]["peak_rss_bytes"] > doc["results"]["rss_before_load_bytes"] > 0


def test_roofline(tiny_run):
    doc, _ = tiny_run
    r = doc["roofline"]
    assert r["bandwidth"]["gb_s"] > 0
    assert r["bytes_per_token"] == r["weight_bytes_per_token"] + r["kv_bytes_per_token"]
    assert r["limit_tok_s"] == pytest.approx(r["bandwidth"]["gb_s"] * 1e9 / r["bytes_per_token"],
                                             rel=0.01)
    assert 0 < r["fraction"] < 1.5
    assert r["weights_exceed_llc"] is False  # 5 MB of weights: the limit is moot, and says so


def test_markdown_tables(tiny_run):
    _, stdout = tiny_run
    assert "| Model / quant | Hardware | Image | Prompt tok | Output tok |" in stdout
    assert "TTFT cold ms" in stdout and "Decode tok/s" in stdout
    assert "### Concurrent streams" in stdout and "### Decode roofline" in stdout
    assert "demo tiny / F16 (random weights)" in stdout


def test_baseline_side_by_side(tmp_path):
    proc = vlmserve("bench", "--demo", "tiny", "--runs", "1", "--max-tokens", str(MAX_TOKENS),
                    "--concurrency", "1", "--threads", "1", "--baseline", "llama-cpp-python",
                    "--no-roofline", "--no-progress", "--json", "b.json", "--markdown",
                    cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((tmp_path / "b.json").read_text())
    b, c = doc["baseline"], doc["comparison"]
    assert b["name"] == "llama-cpp-python" and b["version"] == "0.3.36"
    assert b["handler"].endswith("MTMDChatHandler") and b["threads"] == 1
    assert [r["completion_tokens"] for r in b["runs"]] == [MAX_TOKENS, MAX_TOKENS]
    assert b["question_tokens"] == {"cold": 15, "warm": 15}
    assert c["completion_tokens_match"] is True and c["question_tokens_match"] is True
    assert [lv["mode"] for lv in b["concurrency"]] == ["sequential"]
    assert b["peak_rss_bytes"] > 0 and b["load_ms"] > 0
    for key in ("cold_ttft", "warm_ttft", "decode_tok_s", "peak_rss"):
        assert c[key] > 0, key
    assert c["aggregate_tok_s"]["1"] > 0
    assert "### vlmserve vs llama-cpp-python" in proc.stdout


def test_quant_table(tmp_path):
    proc = vlmserve("bench", "--demo", "tiny", "--quant-table", "--runs", "1", "--max-tokens",
                    "4", "--threads", "1", "--no-progress", "--json", "q.json", "--markdown",
                    cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((tmp_path / "q.json").read_text())
    rows = {r["quant"]: r for r in doc["quant_table"]}
    assert list(rows) == ["F16", "Q8_0", "Q5_K_S", "Q4_K_M"]
    # tiny's 256-wide rows fit K-quant blocks only partly (fallbacks): sizes still shrink
    assert rows["F16"]["file_size_bytes"] > rows["Q8_0"]["file_size_bytes"] > rows["Q4_K_M"][
        "file_size_bytes"]
    for r in rows.values():
        assert r["completion_ok"] is True
        assert r["memory_bytes"] == r["llama_model_size_bytes"] + r["kv_cache_bytes"] > 0
        assert r["peak_rss_bytes"] > 0 and r["decode_tok_s"]["median"] > 0
        assert r["cold_ttft_ms"]["median"] > 0 and r["warm_ttft_ms"]["median"] > 0
        assert 0 < r["roofline_fraction"] < 1.5
    assert "### Quantization" in proc.stdout and "| Q4_K_M |" in proc.stdout


@pytest.mark.parametrize("args", [
    ["--demo", "tiny", "--image", "0x5"],
    ["--demo", "tiny", "--concurrency", "0"],
    ["--demo", "tiny", "--concurrency", "1,two"],
    ["--demo", "tiny", "--runs", "0"],
    ["--demo", "giant"],
    ["--model", "/nonexistent/model.gguf"],
    ["--url", "http://127.0.0.1:9", "--demo", "tiny"],
    [],  # no model at all
])
def test_bad_input_is_one_line(tmp_path, args):
    proc = vlmserve("bench", "--no-progress", *args, cwd=tmp_path)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vlmserve: error: "), proc.stderr
    assert "Traceback" not in proc.stderr


def test_parsers_and_helpers():
    assert parse_image_size("768x768") == (768, 768)
    assert parse_image_size(" 1024X512 ") == (1024, 512)
    assert parse_concurrency("8,1,2,2") == (1, 2, 8)
    for bad in ("0x5", "768", "x", "-1x3"):
        with pytest.raises(BenchError):
            parse_image_size(bad)
    for bad in ("0", "", "1,,2", "65"):
        with pytest.raises(BenchError):
            parse_concurrency(bad)
    with pytest.raises(BenchError):
        Workload(max_tokens=0)
    assert make_picture(64, 48, 3) == make_picture(64, 48, 3) != make_picture(64, 48, 4)
    assert summarize([3, 1, 2]) == {"median": 2, "min": 1, "max": 3, "n": 3,
                                    "values": [3, 1, 2]}
    assert summarize([None]) is None
