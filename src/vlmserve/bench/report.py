"""The benchmark document for people: markdown tables and a short text summary.

It only reads a finished document (``document``: its schema and assembly); it
never computes a figure, so the JSON and the tables cannot disagree.
"""

from __future__ import annotations

from typing import Any

from vlmserve.bench.summary import median

# ---------------------------------------------------------------------------- formatting


def _n(x: float | None, digits: int = 0) -> str:
    if x is None:
        return "–"
    return f"{x:,.{digits}f}"


def _mb(x: int | None) -> str:
    if not x:
        return "–"
    return f"{x / 1e9:.2f} GB" if x >= 1e9 else f"{x / 1e6:.0f} MB"


def _s(summary: dict[str, Any] | None, digits: int = 0) -> str:
    """median (min–max)"""
    if not summary:
        return "–"
    if summary["n"] == 1 or summary["min"] == summary["max"]:
        return _n(summary["median"], digits)
    return (f"{_n(summary['median'], digits)} ({_n(summary['min'], digits)}–"
            f"{_n(summary['max'], digits)})")


def hardware_label(doc: dict[str, Any]) -> str:
    m, e = doc["machine"], doc.get("engine") or {}
    if doc.get("mode") == "http":
        return f"server at {e.get('url')} (client: {m['cpu_model']})"
    backend = e.get("backend") or "CPU"
    cores = m.get("usable_cores") or m.get("logical_cores")
    threads = e.get("threads")
    label = f"{m['cpu_model']}, {cores} cores"
    if threads:
        label += f", {threads} thread{'s' if threads != 1 else ''}"
    return f"{label} ({backend})"


def model_label(doc: dict[str, Any]) -> str:
    m = doc["model"]
    demo = m.get("demo_size") and f"demo {m['demo_size']}"
    if demo and m.get("demo_vocab") == "qwen":
        demo += " (Qwen vocab)"
    parts = [demo or (m.get("name") or "model"),
             m.get("quant_type") or "?"]
    label = " / ".join(p for p in parts if p)
    if m.get("random_weights"):
        label += " (random weights)"
    return label


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [_row(header), _row(["---"] * len(header)), *(_row(r) for r in rows)]


MAIN_HEADER = ["Model / quant", "Hardware", "Image", "Prompt tok", "Output tok",
               "Image encode ms", "TTFT cold ms", "TTFT warm ms", "Warm/cold",
               "Prefill tok/s", "Decode tok/s", "Peak RSS", "File size"]


def main_rows(doc: dict[str, Any]) -> list[list[str]]:
    s = doc["results"]["summary"]
    w, m = doc["workload"], doc["model"]
    return [[
        model_label(doc), hardware_label(doc), "{}x{}".format(*w["image"]),
        str(w["prompt_tokens"]), str(w["max_tokens"]),
        _s(s["image_encode_ms"]), _s(s["cold_ttft_ms"]), _s(s["warm_ttft_ms"]),
        _n(median(s["warm_cold_ratio"]), 3), _s(s["prefill_tok_s"], 1),
        _s(s["decode_tok_s"], 1), _mb(doc["results"].get("peak_rss_bytes")),
        _mb(m.get("file_size_bytes")),
    ]]


def render_markdown(doc: dict[str, Any]) -> str:
    out: list[str] = []
    w = doc["workload"]
    out.append(f"## vlmserve bench: {model_label(doc)} on {hardware_label(doc)}")
    out.append("")
    out.append(f"`{doc['command']}`  ")
    load = doc.get("load_average") or {}
    out.append(f"{doc['date']}; load average at start {load.get('start')}, end "
               f"{load.get('end')}; medians (min–max) over {w['runs']} run"
               f"{'s' if w['runs'] != 1 else ''}.")
    out.append("")
    if doc.get("quant_table"):
        out += _quant_section(doc)
        return "\n".join(out) + "\n"
    res = doc["results"]
    out += _table(MAIN_HEADER, main_rows(doc))
    out.append("")
    s = res["summary"]
    out.append(f"Completion tokens per run: {'all ' + str(w['max_tokens']) if s['completion_ok'] else s['completion_tokens']}; "
               f"cached prompt cells cold {_s(s['cold_cached_tokens'])}, warm "
               f"{_s(s['warm_cached_tokens'])}; engine-clock TTFT cold "
               f"{_s(s['engine_cold_ttft_ms'])} ms, warm {_s(s['engine_warm_ttft_ms'])} ms "
               f"(ratio {_n(median(s['engine_warm_cold_ratio']), 3)}).")
    out.append("")
    out += _concurrency_section(doc)
    if doc.get("baseline"):
        out += _baseline_section(doc)
    if doc.get("roofline"):
        out += _roofline_section(doc)
    counters = res.get("engine_counters")
    if counters:
        out.append("Engine counters over the measured requests: "
                   f"image cache {counters['image_cache_hits']} hits / "
                   f"{counters['image_cache_misses']} misses, "
                   f"{counters['prefix_tokens_reused']:,} prompt cells reused, "
                   f"{counters['prompt_tokens_processed']:,} prefilled, mean batch "
                   f"{counters['mean_batch_tokens']} tokens (max {counters['max_batch_tokens']}).")
        out.append("")
    return "\n".join(out) + "\n"


def _levels(doc_part: dict[str, Any] | None, pass_name: str) -> dict[int, dict[str, Any]]:
    if not doc_part:
        return {}
    return {lv["streams"]: lv for lv in doc_part.get("concurrency", [])
            if lv["pass"] == pass_name}


def _concurrency_section(doc: dict[str, Any]) -> list[str]:
    cold, warm = _levels(doc["results"], "cold"), _levels(doc["results"], "warm")
    if not cold:
        return []
    base = _levels(doc.get("baseline"), "cold")
    header = ["Streams", "Aggregate tok/s (new pictures)", "Decode-phase tok/s",
              "Aggregate tok/s (follow-up question)", "Per-stream decode tok/s",
              "TTFT ms (new pictures)"]
    if base:
        header += ["llama-cpp-python tok/s (sequential)", "vlmserve / baseline"]
    rows = []
    for n, lv in cold.items():
        row = [str(n), _n(lv["aggregate_tok_s"], 1), _n(lv["decode_phase_tok_s"], 1),
               _n((warm.get(n) or {}).get("aggregate_tok_s"), 1),
               _s(lv["per_stream_decode_tok_s"], 1), _s(lv["ttft_ms"])]
        if base:
            b = base.get(n) or {}
            r = (lv["aggregate_tok_s"] / b["aggregate_tok_s"]
                 if b.get("aggregate_tok_s") else None)
            row += [_n(b.get("aggregate_tok_s"), 1), _n(r, 2) + ("×" if r else "")]
        rows.append(row)
    return ["### Concurrent streams", "", *_table(header, rows), ""]


def _baseline_section(doc: dict[str, Any]) -> list[str]:
    s, b, c = doc["results"]["summary"], doc["baseline"], doc["comparison"]
    bs = b["summary"]

    def line(name: str, key: str, digits: int = 0, ratio_key: str | None = None) -> list[str]:
        r = c.get(ratio_key or key)
        return [name, _s(s[key], digits), _s(bs[key], digits),
                (_n(r, 2) + "×") if r is not None else "–"]

    rows = [
        line("TTFT, new picture (ms)", "cold_ttft_ms", 0, "cold_ttft"),
        line("TTFT, same picture, new question (ms)", "warm_ttft_ms", 0, "warm_ttft"),
        ["Warm / cold TTFT", _n(median(s["warm_cold_ratio"]), 3),
         _n(median(bs["warm_cold_ratio"]), 3), _n(c.get("warm_cold_ratio"), 2) + "×"],
        line("Decode tok/s (one stream)", "decode_tok_s", 1, "decode_tok_s"),
    ]
    for n, r in (c.get("aggregate_tok_s") or {}).items():
        v = _levels(doc["results"], "cold").get(int(n), {}).get("aggregate_tok_s")
        bv = _levels(b, "cold").get(int(n), {}).get("aggregate_tok_s")
        rows.append([f"Aggregate tok/s, {n} stream{'s' if int(n) > 1 else ''}", _n(v, 1),
                     _n(bv, 1) + " (sequential)", _n(r, 2) + "×" if r else "–"])
    rows.append(["Peak RSS", _mb(doc["results"].get("peak_rss_bytes")),
                 _mb(b.get("peak_rss_bytes")), _n(c.get("peak_rss"), 2) + "×"])
    rows.append(["Load time (ms)", _n(doc["engine"].get("load_ms")), _n(b.get("load_ms")),
                 "–"])
    match = "yes" if c.get("completion_tokens_match") else "NO"
    return ["### vlmserve vs llama-cpp-python (same model, same run)", "",
            *_table(["", "vlmserve", f"llama-cpp-python {b.get('version')}",
                     "vlmserve / baseline"], rows), "",
            f"Baseline: `{b['handler']}`, flash_attn={b.get('flash_attn')}, requests one at "
            f"a time (a `Llama` is not thread-safe); {b.get('capped_runs', 0)} of its runs "
            "were capped at max_tokens by the benchmark (see BENCHMARKS.md). Load average "
            f"vlmserve phase {_phase(doc['results'])}, baseline phase {_phase(b)}. "
            f"Output tokens equal on both sides: {match}; question tokens "
            f"equal: {'yes' if c.get('question_tokens_match') else 'NO'}. Ratios: below "
            "1 is better for times, above 1 for tok/s.", ""]


def _phase(part: dict[str, Any]) -> str:
    la = part.get("load_average") or {}
    start, end = la.get("start") or [None], la.get("end") or [None]
    return f"{start[0]}→{end[0]}"


def _roofline_section(doc: dict[str, Any]) -> list[str]:
    r = doc["roofline"]
    bw = r["bandwidth"]
    rows = [[f"best ({bw['threads']} thread{'s' if bw['threads'] != 1 else ''})",
             f"{bw['gb_s']:.1f} (read {bw['read_gb_s']:.1f}, copy "
             f"{bw['copy_gb_s']:.1f})", _mb(r["bytes_per_token"]), _n(r["limit_tok_s"], 1),
             _n(r["achieved_tok_s"], 1), _n(r["fraction"], 3)]]
    et = r.get("engine_threads")
    if et:
        rows.append([f"{et['bandwidth']['threads']} thread(s) (engine)",
                     f"{et['bandwidth']['gb_s']:.1f}", _mb(r["bytes_per_token"]),
                     _n(et["limit_tok_s"], 1), _n(r["achieved_tok_s"], 1),
                     _n(et["fraction"], 3)])
    note = "" if r["weights_exceed_llc"] else (
        " The weights fit in the last-level cache, so decoding is not bound by DRAM "
        "bandwidth here and the fraction says little.")
    if r.get("applies") is False:
        note += (" Decoding ran on a GPU: this is the host's memory bandwidth, not the GPU's, "
                 "so the limit and fraction do not apply.")
    return ["### Decode roofline", "",
            *_table(["Bandwidth at", "GB/s", "Bytes/token", "Limit tok/s", "Achieved tok/s",
                     "Fraction"], rows), "",
            f"Bytes per token: {r['counted']}.{note}", ""]


def _quant_section(doc: dict[str, Any]) -> list[str]:
    rows = []
    for q in doc["quant_table"]:
        rows.append([q["quant"], _mb(q["file_size_bytes"]), _mb(q["memory_bytes"]),
                     _mb(q["peak_rss_bytes"]), _s(q["cold_ttft_ms"]), _s(q["warm_ttft_ms"]),
                     _s(q["prefill_tok_s"], 1), _s(q["decode_tok_s"], 1),
                     _n(q.get("roofline_fraction"), 3)])
    bw = (doc.get("roofline") or {}).get("bandwidth") or {}
    return ["### Quantization", "",
            *_table(["Quant", "File size", "Model + KV (llama.cpp)", "Peak RSS",
                     "TTFT cold ms", "TTFT warm ms", "Prefill tok/s", "Decode tok/s",
                     "Roofline fraction"], rows), "",
            f"One stream; roofline against {bw.get('gb_s', 0):.1f} GB/s measured memory "
            "bandwidth.", ""]


def render_text(doc: dict[str, Any]) -> str:
    """A few plain lines for the terminal (the default output)."""
    if doc.get("quant_table"):
        return render_markdown(doc)
    s = doc["results"]["summary"]
    lines = [
        f"{model_label(doc)} on {hardware_label(doc)}",
        f"image encode  {_s(s['image_encode_ms'])} ms",
        f"TTFT cold     {_s(s['cold_ttft_ms'])} ms",
        f"TTFT warm     {_s(s['warm_ttft_ms'])} ms  (warm/cold "
        f"{_n(median(s['warm_cold_ratio']), 3)})",
        f"prefill       {_s(s['prefill_tok_s'], 1)} tok/s",
        f"decode        {_s(s['decode_tok_s'], 1)} tok/s  (completion tokens "
        f"{'ok' if s['completion_ok'] else s['completion_tokens']})",
    ]
    for lv in doc["results"]["concurrency"]:
        lines.append(f"{lv['streams']} stream(s), {lv['pass']:<4}  {_n(lv['aggregate_tok_s'], 1)}"
                     f" tok/s aggregate")
    if doc["results"].get("peak_rss_bytes"):
        lines.append(f"peak RSS      {_mb(doc['results']['peak_rss_bytes'])}")
    if doc.get("roofline") and doc["roofline"].get("fraction") is not None:
        r = doc["roofline"]
        lines.append(f"roofline      {r['achieved_tok_s']} / {r['limit_tok_s']} tok/s = "
                     f"{r['fraction']} ({r['bandwidth']['gb_s']} GB/s)")
    if doc.get("comparison"):
        c = doc["comparison"]
        lines.append(f"vs {doc['baseline']['name']}: cold TTFT {c['cold_ttft']}×, warm TTFT "
                     f"{c['warm_ttft']}×, decode {c['decode_tok_s']}×")
    return "\n".join(lines) + "\n"
