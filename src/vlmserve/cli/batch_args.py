"""Flags shared by ``describe`` and ``watch``: the question, sampling, schema, output."""

from __future__ import annotations

import argparse

from vlmserve.batch.results import FORMATS
from vlmserve.batch.schema import load_schema_file
from vlmserve.batch.task import Task, build_task
from vlmserve.config import QWEN_PRESENCE_PENALTY, ImageOptions, TokenBudget, default_penalty
from vlmserve.errors import VlmserveError
from vlmserve.grammar import DEFAULT_MAX_ITEMS, DEFAULT_MAX_STRING
from vlmserve.images.budget import GROUNDING_MIN_TOKENS, narrow_budget
from vlmserve.templates import TemplateRegistry
from vlmserve.types import SamplingParams


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_task_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prompt", help="the question (default: the template's, "
                   "'请用中文描述这张图片')")
    p.add_argument("--template", help="a built-in or user template name (see docs)")
    p.add_argument("--templates-file", help="YAML/JSON file with your own templates")
    p.add_argument("--max-tokens", type=int, default=512)
    p.add_argument("--temperature", type=float, default=0.7, help="0 = greedy (deterministic)")
    p.add_argument("--top-p", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=20)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--presence-penalty", type=float, default=None, metavar="P",
                   help=f"-2..2 (default: Qwen's {QWEN_PRESENCE_PENALTY} when sampling, "
                   "none with --temperature 0)")
    p.add_argument("--frequency-penalty", type=float, default=None, metavar="F",
                   help="-2..2 (default: none)")
    p.add_argument("--max-edge", type=int, default=1024, help="resize longest image edge to this")
    g = p.add_argument_group("structured answers")
    g.add_argument("--json-schema", metavar="FILE",
                   help="answer with JSON matching this schema (a template's own json_schema, "
                   "e.g. --template safety, is used when this is not given)")
    g.add_argument("--schema-max-string", type=positive_int, default=None,
                   help=f"max characters of a schema string without maxLength "
                   f"(default {DEFAULT_MAX_STRING})")
    g.add_argument("--schema-max-items", type=positive_int, default=None,
                   help=f"max items of a schema array without maxItems "
                   f"(default {DEFAULT_MAX_ITEMS})")


def add_output_args(p: argparse.ArgumentParser, required: bool) -> None:
    g = p.add_argument_group("batch output")
    g.add_argument("--output", "-o", required=required, metavar="FILE",
                   help="append one line per image to FILE (JSONL, or CSV)")
    g.add_argument("--format", choices=FORMATS, default=None,
                   help="output format (default: csv for a .csv file, else jsonl)")
    g.add_argument("--parallel", type=positive_int, default=4,
                   help="requests in flight = engine slots (default 4)")
    g.add_argument("--no-progress", action="store_true",
                   help="no progress bar (it is shown only when stderr is a terminal)")


def task_from_args(args: argparse.Namespace) -> Task:
    """Check the question flags and build the task (fails before any model is loaded)."""
    registry = TemplateRegistry.builtin()
    if args.templates_file:
        registry = registry.with_user_file(args.templates_file)
    presence = (args.presence_penalty if args.presence_penalty is not None
                else default_penalty(args.temperature, QWEN_PRESENCE_PENALTY))
    frequency = args.frequency_penalty if args.frequency_penalty is not None else 0.0
    sampling = SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature,
                              top_p=args.top_p, top_k=args.top_k, seed=args.seed,
                              presence_penalty=presence, frequency_penalty=frequency)
    schema = load_schema_file(args.json_schema) if args.json_schema else None
    return build_task(registry, args.template, args.prompt, sampling, schema,
                      args.schema_max_string, args.schema_max_items)


def image_options(args: argparse.Namespace, task: Task | None = None) -> ImageOptions:
    """The image flags as options; a task that needs detail (grounding, OCR) raises the
    image-token floor to 1024, never past the cap."""
    try:
        tokens = TokenBudget(args.image_min_tokens, args.image_max_tokens)
    except VlmserveError as exc:
        raise VlmserveError(f"--image-min-tokens / --image-max-tokens: {exc.message}") from None
    if task is not None:
        floor = GROUNDING_MIN_TOKENS if task.source.boxes else task.source.min_image_tokens
        if floor is not None:
            tokens = narrow_budget(tokens, floor=floor)
    try:
        return ImageOptions(max_edge=args.max_edge, tokens=tokens)
    except VlmserveError as exc:
        raise VlmserveError(f"--max-edge: {exc.message}") from None
