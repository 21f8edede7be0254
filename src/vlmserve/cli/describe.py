"""``vlmserve describe IMAGE...``: answer a question about each image, streamed to stdout."""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from dataclasses import dataclass
from typing import TextIO

from vlmserve.chat import ChatMessage, ChatRenderer
from vlmserve.chat_template import QWEN3VL_CHAT_TEMPLATE
from vlmserve.cli.engine_args import add_model_args, engine_config_from_args
from vlmserve.config import ImageOptions
from vlmserve.engine.client import EngineClient
from vlmserve.errors import RequestError, VlmserveError
from vlmserve.images import load_image_file
from vlmserve.templates import DEFAULT_TEMPLATE, TemplateRegistry
from vlmserve.types import PreparedImage, Request, RequestStats, SamplingParams


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("describe", help="describe images (or answer a question about them)",
                       description="Stream an answer about each IMAGE to stdout.")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--prompt", help="the question (default: the template's, "
                   "'请用中文描述这张图片')")
    p.add_argument("--template", help="a built-in or user template name (see docs)")
    p.add_argument("--templates-file", help="YAML/JSON file with your own templates")
    p.add_argument("--max-tokens", type=int, default=512)
    p.add_argument("--temperature", type=float, default=0.7, help="0 = greedy (deterministic)")
    p.add_argument("--top-p", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=20)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--max-edge", type=int, default=1024, help="resize longest image edge to this")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per image with the answer and its figures")
    add_model_args(p)
    p.set_defaults(func=run)


@dataclass(frozen=True)
class Answer:
    text: str
    finish_reason: str
    stats: RequestStats


def build_messages(registry: TemplateRegistry, template: str | None, prompt: str | None,
                   image: PreparedImage) -> list[ChatMessage]:
    """The conversation for one image: the template's system prompt and question,
    with ``prompt`` replacing the question when given."""
    tmpl = registry.get(template or DEFAULT_TEMPLATE)
    question = tmpl.prompt if prompt is None else prompt
    if not question.strip():
        raise RequestError("the prompt is empty")
    messages = [ChatMessage.system(tmpl.system)] if tmpl.system else []
    return [*messages, ChatMessage.user(question, image)]


def answer(engine: EngineClient, renderer: ChatRenderer, messages: list[ChatMessage],
           sampling: SamplingParams, out: TextIO | None) -> Answer:
    """Run one request; stream its text to ``out`` when given."""
    request = Request(f"cli-{uuid.uuid4().hex[:12]}", renderer.render(messages), sampling)
    parts: list[str] = []
    for delta in engine.generate_sync(request):
        if delta.text:
            parts.append(delta.text)
            if out is not None:
                out.write(delta.text)
                out.flush()
        if delta.finished:
            if delta.error:
                raise VlmserveError(delta.error)
            return Answer("".join(parts), delta.finish_reason.value, delta.stats)
    raise VlmserveError("the engine stopped without finishing the request")


def stats_json(stats: RequestStats) -> dict[str, float | int]:
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


def run(args: argparse.Namespace) -> int:
    from vlmserve.engine.factory import create_engine  # loads llama.cpp: only when needed

    sampling = SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature,
                              top_p=args.top_p, top_k=args.top_k, seed=args.seed)
    registry = TemplateRegistry.builtin()
    if args.templates_file:
        registry = registry.with_user_file(args.templates_file)
    registry.get(args.template or DEFAULT_TEMPLATE)  # unknown names fail before loading
    if args.prompt is not None and not args.prompt.strip():
        raise RequestError("the prompt is empty")
    options = ImageOptions(max_edge=args.max_edge)
    failed = 0
    with create_engine(engine_config_from_args(args)) as engine:
        renderer = ChatRenderer(engine.info.chat_template or QWEN3VL_CHAT_TEMPLATE)
        for path in args.images:
            try:
                image = load_image_file(path, options)
                messages = build_messages(registry, args.template, args.prompt, image)
                if args.json:
                    ans = answer(engine, renderer, messages, sampling, None)
                    print(json.dumps({"image": path, "text": ans.text,
                                      "finish_reason": ans.finish_reason,
                                      **stats_json(ans.stats)}, ensure_ascii=False), flush=True)
                else:
                    if len(args.images) > 1:
                        print(f"### {path}", flush=True)
                    answer(engine, renderer, messages, sampling, sys.stdout)
                    print(flush=True)
            except VlmserveError as exc:
                failed += 1
                if args.json:
                    print(json.dumps({"image": path, "error": exc.message}, ensure_ascii=False),
                          flush=True)
                print(f"vlmserve: error: {exc.message}", file=sys.stderr)
    return 1 if failed else 0
