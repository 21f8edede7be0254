"""The record (one results line) for one image: its fields and how they are filled."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from vlmserve.batch.inputs import LoadedImage
from vlmserve.batch.task import Task
from vlmserve.types import RequestStats


def stats_fields(stats: RequestStats | None) -> dict[str, Any]:
    if stats is None:
        return {}
    return {
        "prompt_tokens": stats.prompt_tokens,
        "image_tokens": stats.image_tokens,
        "cached_tokens": stats.cached_tokens,
        "completion_tokens": stats.completion_tokens,
        "image_encode_ms": round(stats.image_encode_ms, 2),
        "ttft_ms": round(stats.ttft_ms, 2),
        "prefill_ms": round(stats.prefill_ms, 2),
        "decode_tokens_per_s": round(stats.decode_tokens_per_s, 2),
        "total_ms": round(stats.total_ms, 2),
    }


def make_record(item: LoadedImage, task: Task, text: str | None = None,
                finish_reason: str | None = None, stats: RequestStats | None = None,
                error: str | None = None) -> dict[str, Any]:
    """The line for one image (see docs/batch.md for the fields)."""
    answer: Any = None
    answer_text = None
    if error is not None:
        answer_text = text or None
    elif task.structured is not None:
        answer_text = text
        parsed = task.structured.parse(text or "", finish_reason or "")
        answer, error = parsed.value, parsed.error
    else:
        answer = text
    image = item.image
    return {
        "path": item.path,
        "file_sha256": item.file_sha256,
        "content_hash": item.content_hash,
        "width": image.width if image else None,
        "height": image.height if image else None,
        "template": task.template,
        "prompt": task.prompt,
        "answer": answer,
        "answer_text": answer_text,
        "finish_reason": finish_reason,
        **stats_fields(stats),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        "error": error,
    }
