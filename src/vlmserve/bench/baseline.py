"""Run the llama-cpp-python baseline in a child process and read its results.

A child process because (1) its peak RSS must not mix with vlmserve's, (2)
``llama_cpp.Llama`` installs its own llama.cpp log callback, process-wide, and
(3) a crash in it must not take the benchmark down. The child runs the same
protocol (``runner.measure``) with the same pictures and questions; it speaks
JSON lines on its stdout (C-level prints are moved to stderr, kept in a file).

Child: ``python -m vlmserve.bench.baseline`` with a JSON spec on stdin.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from typing import Any

from vlmserve.bench.document import measured_json
from vlmserve.bench.machine import (
    current_rss_bytes,
    load_average,
    package_version,
    peak_rss_bytes,
)
from vlmserve.bench.runner import Sample, measure
from vlmserve.bench.workload import BenchError, Workload

BASELINE_NAME = "llama-cpp-python"


def run_baseline(spec: dict[str, Any], progress: Callable[[str], None]) -> dict[str, Any]:
    """Start the child, forward its progress, return its result (``BenchError`` on failure)."""
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, "-m", "vlmserve.bench.baseline"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                                text=True, env=os.environ.copy())
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps(spec))
        proc.stdin.close()
        result: dict[str, Any] | None = None
        error: str | None = None
        for line in proc.stdout:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if event.get("event") == "progress":
                progress(event.get("label", ""))
            elif event.get("event") == "result":
                result = event["result"]
            elif event.get("event") == "error":
                error = event.get("message")
        rc = proc.wait()
        if result is not None and rc == 0:
            return result
        err.seek(0)
        tail = [ln.strip() for ln in err.read().splitlines() if ln.strip()]
    reason = error or (tail[-1] if tail else f"exit status {rc}")
    raise BenchError(f"the {BASELINE_NAME} baseline failed: {reason}")


class _BaselineTarget:
    concurrent = False  # Llama is not thread-safe: one request at a time

    def __init__(self, baseline) -> None:  # LlamaCppPythonBaseline
        self.baseline = baseline
        self.capped_runs = 0

    def count_text_tokens(self, text: str) -> int:
        return self.baseline.count_text_tokens(text)

    def request(self, png: bytes, question: str, max_tokens: int) -> Sample:
        r = self.baseline.request(png, question, max_tokens)
        self.capped_runs += int(r.capped)
        return Sample(t_start=r.t_start, t_first=r.t_first, t_end=r.t_end,
                      t_first_text=r.t_first_text, completion_tokens=r.completion_tokens,
                      finish_reason=r.finish_reason, streamed_tokens=r.completion_tokens,
                      token_times=[(t, 1) for t in r.token_times])


def _child(spec: dict[str, Any], emit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    from vlmserve.engine.llamacpp.baseline import HANDLER_NAME, LlamaCppPythonBaseline

    w = Workload(**{**spec["workload"], "concurrency": tuple(spec["workload"]["concurrency"])})
    load_start = load_average()
    rss_before = current_rss_bytes()
    baseline = LlamaCppPythonBaseline(spec["model"], spec["mmproj"], spec["n_ctx"],
                                      spec["threads"], spec.get("n_gpu_layers", -1),
                                      flash_attn=spec.get("flash_attn", False))
    target = _BaselineTarget(baseline)
    questions = spec["questions"]
    result = measure(target, w, questions, lambda label: emit({"event": "progress",
                                                                "label": label}))
    out = {
        "name": BASELINE_NAME,
        "version": package_version("llama_cpp_python"),
        "handler": HANDLER_NAME,
        "api": "Llama(model_path, chat_handler=MTMDChatHandler(mmproj), n_ctx, n_threads, "
               "n_threads_batch, n_gpu_layers=-1, flash_attn, verbose=False)"
               ".create_chat_completion(messages=[image_url data URI, text], stream=True, "
               "max_tokens, temperature=0)",
        "flash_attn": baseline.flash_attn,
        "capped_runs": target.capped_runs,
        "threads": baseline.threads,
        "n_ctx": spec["n_ctx"],
        "gpu_offload": baseline.gpu_offload,
        "load_ms": round(baseline.load_ms, 2),  # the projector loads at the first request
        "load_average": {"start": load_start, "end": load_average()},
        "rss_before_load_bytes": rss_before,
        "question_tokens": {k: target.count_text_tokens(v) for k, v in questions.items()},
        **measured_json(result),
    }
    baseline.close()
    out["peak_rss_bytes"] = peak_rss_bytes()
    return out


def main() -> int:
    # Our protocol owns the real stdout; anything C code prints goes to stderr.
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def emit(event: dict[str, Any]) -> None:
        proto.write(json.dumps(event) + "\n")

    try:
        spec = json.loads(sys.stdin.read())
        emit({"event": "result", "result": _child(spec, emit)})
    except Exception as exc:  # reported to the parent as one line
        emit({"event": "error", "message": f"{type(exc).__name__}: {exc}"})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
