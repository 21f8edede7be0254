"""``vlmserve describe IMAGE|DIR|GLOB...``: answer a question about each image.

Without ``--output``: the answers stream to stdout one image after another (or one
JSON object per image with ``--json``). With ``--output FILE``: a batch run with
``--parallel`` requests in flight, one line per image appended to FILE, resumable
(``--resume``); see docs/batch.md.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from vlmserve.batch.inputs import expand_inputs
from vlmserve.batch.records import stats_fields as stats_json
from vlmserve.batch.results import format_for, open_results
from vlmserve.batch.signals import StopFlag
from vlmserve.batch.task import Task
from vlmserve.chat import ChatMessage, ChatRenderer
from vlmserve.cli.batch_args import (
    add_output_args,
    add_task_args,
    image_options,
    task_from_args,
)
from vlmserve.cli.engine_args import add_model_args, engine_config_from_args
from vlmserve.cli.video_args import add_video_args, video_sampling
from vlmserve.engine.run_to_end import run_to_end
from vlmserve.errors import VlmserveError
from vlmserve.grounding import boxes_for
from vlmserve.images import load_image_file, read_image_bytes
from vlmserve.types import (
    PreparedClip,
    PreparedImage,
    Request,
    RequestStats,
    SamplingParams,
    TokenDelta,
)
from vlmserve.video import is_video_path, load_clip_file
from vlmserve.video.summary import clip_summary

if TYPE_CHECKING:
    from vlmserve.config import ImageOptions
    from vlmserve.engine.client import EngineClient


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("describe", help="describe images, folders of images (batch)",
                       description="Answer a question about each image. Folders are walked "
                       "recursively for image files; globs are expanded ('**' recurses). "
                       "Without --output the answers stream to stdout; with --output FILE "
                       "they are appended to FILE, one JSON line (or CSV row) per image.")
    p.add_argument("images", nargs="+", metavar="IMAGE|CLIP|DIR|GLOB")
    add_task_args(p)
    add_video_args(p)
    p.add_argument("--json", action="store_true",
                   help="without --output: one JSON object per image on stdout")
    p.add_argument("--draw", metavar="OUT", type=Path, default=None,
                   help="without --output: write a copy of the photo with the answer's boxes "
                   "drawn (use with --template grounding); OUT is a .png/.jpg file for one "
                   "image, else a folder (IMAGE-NAME.boxes.png in it)")
    add_output_args(p, required=False)
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run: repair FILE's last line and skip the "
                   "images it already has (same image content and question)")
    add_model_args(p)
    g = p.add_argument_group("Ray Data (needs the vlmserve[ray] extra; docs/scale-out.md)")
    g.add_argument("--ray", action="store_true",
                   help="run the --output job on Ray Data: an actor pool of engines (a local "
                   "Ray is started unless --ray-address is given); inputs may be URIs Ray "
                   "Data reads (s3://..., gs://...)")
    g.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="an existing Ray cluster (e.g. ray://head:10001 or auto)")
    g.add_argument("--actors", type=int, default=2, metavar="N",
                   help="engine actors in the pool (default 2), each with --parallel slots")
    p.set_defaults(func=run)


@dataclass(frozen=True)
class Answer:
    text: str
    finish_reason: str
    stats: RequestStats


def answer(engine: EngineClient, renderer: ChatRenderer, messages: list[ChatMessage],
           sampling: SamplingParams, out: TextIO | None) -> Answer:
    """Run one request; stream its text to ``out`` when given."""
    request = Request(f"cli-{uuid.uuid4().hex[:12]}", renderer.render(messages), sampling)

    def show(delta: TokenDelta) -> None:
        if delta.text and out is not None:
            out.write(delta.text)
            out.flush()

    end = run_to_end(engine, request, show if out is not None else None)
    if end is None:
        raise VlmserveError("the engine stopped without finishing the request")
    if end.error is not None:
        raise end.error
    return Answer(end.text, end.finish_reason.value, end.stats)


def run(args: argparse.Namespace) -> int:
    task = task_from_args(args)  # unknown templates, bad schemas fail before loading
    options = image_options(args, task)
    video_sampling(args)  # bad clip flags fail before loading too
    if args.ray or args.ray_address:
        return run_ray_batch(args, task, options)
    inputs = expand_inputs(args.images)
    for warning in inputs.warnings:
        print(f"vlmserve: warning: {warning}", file=sys.stderr)
    if args.output:
        clips = [path for path in inputs.paths if is_video_path(path)]
        if clips:
            raise VlmserveError(f"{clips[0]}: video clips are described without --output "
                                "(batch files take pictures)")
        return run_batch(args, task, inputs.paths, options)
    if args.resume or args.format:
        raise VlmserveError("--resume and --format need --output FILE")
    if args.draw is not None:
        check_draw_target(args.draw, len(inputs.paths))
    return run_stream(args, task, inputs.paths, options)


def check_draw_target(out: Path, n_images: int) -> None:
    """Refuse an OUT that cannot be written before the model loads."""
    if n_images > 1 or out.is_dir():
        if out.exists() and not out.is_dir():
            raise VlmserveError(f"--draw {out}: with several images OUT must be a folder")
        return
    if out.suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp"):
        raise VlmserveError(f"--draw {out}: give a .png, .jpg or .webp file name (or a folder)")
    if not out.parent.is_dir():
        raise VlmserveError(f"--draw {out}: folder {out.parent} does not exist")


def draw_path(out: Path, image_path: str, n_images: int) -> Path:
    if n_images > 1 or out.is_dir():
        out.mkdir(parents=True, exist_ok=True)
        return out / f"{Path(image_path).stem}.boxes.png"
    return out


def write_drawing(out: Path, data: bytes, boxes: list[dict]) -> None:
    from vlmserve.annotate import draw_boxes, upright_photo

    picture = draw_boxes(upright_photo(data), boxes)
    try:
        picture.save(out, quality=92) if out.suffix.lower() in (".jpg", ".jpeg") \
            else picture.save(out)
    except OSError as exc:
        raise VlmserveError(f"--draw: cannot write {out}: {exc.strerror or exc}") from None


def run_stream(args: argparse.Namespace, task: Task, paths: list[str], options: ImageOptions) -> int:
    """One image after another, answers on stdout (the original ``describe``)."""
    import json

    from vlmserve.engine.factory import create_engine  # loads llama.cpp: only when needed

    failed = 0
    with create_engine(engine_config_from_args(args)) as engine:
        renderer = ChatRenderer.for_model(engine.info.chat_template)
        want_boxes = task.source.boxes or args.draw is not None
        for path in paths:
            try:
                if is_video_path(path):
                    if args.draw is not None:
                        raise VlmserveError(f"{path}: --draw takes pictures, not video clips")
                    image = load_clip_file(path, *video_sampling(args))
                else:
                    image = load_image_file(path, options)
                messages = task.messages(image)
                if args.json:
                    ans = answer(engine, renderer, messages, task.sampling, None)
                    extra = ({"boxes": boxes_for(ans.text, image.geometry)}
                             if want_boxes and isinstance(image, PreparedImage) else {})
                    if isinstance(image, PreparedClip):
                        extra["video"] = clip_summary(image)
                    print(json.dumps({"image": path, "text": ans.text,
                                      "finish_reason": ans.finish_reason,
                                      **stats_json(ans.stats), **extra}, ensure_ascii=False),
                          flush=True)
                else:
                    if len(paths) > 1:
                        print(f"### {path}", flush=True)
                    ans = answer(engine, renderer, messages, task.sampling, sys.stdout)
                    print(flush=True)
                if args.draw is not None:
                    boxes = boxes_for(ans.text, image.geometry)
                    target = draw_path(args.draw, path, len(paths))
                    write_drawing(target, read_image_bytes(path, options.max_bytes), boxes)
                    print(f"vlmserve: {len(boxes)} boxes drawn on {target}", file=sys.stderr)
            except VlmserveError as exc:
                failed += 1
                if args.json:
                    print(json.dumps({"image": path, "error": exc.message}, ensure_ascii=False),
                          flush=True)
                print(f"vlmserve: error: {exc.message}", file=sys.stderr)
    return 1 if failed else 0


def resume_command(argv: list[str]) -> str:
    """This command line with ``--resume`` (when it is this process's command line)."""
    if argv[:1] != ["describe"]:
        return "the same command with --resume"
    return shlex.join(["vlmserve", *[a for a in argv if a != "--resume"], "--resume"])


def run_ray_batch(args: argparse.Namespace, task: Task, options: ImageOptions) -> int:
    """``--ray``: the same job and results file, on Ray Data (``cluster.data_job``)."""
    if not args.output:
        raise VlmserveError("--ray needs --output FILE")
    if args.actors < 1:
        raise VlmserveError(f"--actors must be >= 1, got {args.actors}")
    try:
        from vlmserve.cluster.data_job import DataJob, describe_on_ray, is_uri
        from vlmserve.cluster.local import start_ray
    except ImportError as exc:
        raise VlmserveError(f"--ray needs Ray: pip install 'vlmserve[ray]' ({exc})") from None
    from vlmserve.batch.done import DoneIndex

    uris = [a for a in args.images if is_uri(a)]
    if uris and len(uris) != len(args.images):
        raise VlmserveError("give either URIs or local paths, not both")
    paths = list(args.images) if uris else expand_inputs(args.images).paths
    if not paths:
        raise VlmserveError("no image files to describe")
    clips = [path for path in paths if is_video_path(path)]
    if clips:
        raise VlmserveError(f"{clips[0]}: video clips are described without --output "
                            "(batch files take pictures)")
    fmt = format_for(args.output, args.format)
    existing = open_results(args.output, fmt, args.resume)  # refuses to mix runs
    config = engine_config_from_args(args, n_parallel=args.parallel)
    job = DataJob(config, task, options, DoneIndex(existing.records), frozenset(paths))
    with StopFlag() as flag:
        started = start_ray(args.ray_address)
        try:
            outcome = describe_on_ray(job, paths, args.output, fmt, existing, args.actors,
                                      float(config.n_threads or 1), 0.0, flag,
                                      progress_enabled=False if args.no_progress else None)
        finally:
            if started:
                import ray

                ray.shutdown()
    summary = (f"{outcome.written} lines written to {args.output} ({outcome.errors} errors, "
               f"{outcome.skipped} already there) on Ray")
    return report_outcome(outcome, summary)


def run_batch(args: argparse.Namespace, task: Task, paths: list[str], options: ImageOptions) -> int:
    from vlmserve.batch.folder import describe_files
    from vlmserve.engine.factory import create_engine

    fmt = format_for(args.output, args.format)
    existing = open_results(args.output, fmt, args.resume)  # refuses to mix runs
    if existing.repaired_bytes:
        print(f"vlmserve: cut a partial last line ({existing.repaired_bytes} bytes) from "
              f"{args.output}", file=sys.stderr)
    if existing.bad_lines:
        print(f"vlmserve: warning: {existing.bad_lines} unreadable lines in {args.output} "
              "are ignored", file=sys.stderr)
    if not paths:
        raise VlmserveError("no image files to describe")
    with StopFlag() as flag:
        config = engine_config_from_args(args, n_parallel=args.parallel)
        with create_engine(config) as engine:
            if flag.set:  # Ctrl-C while the model loaded
                return 128 + flag.signum
            outcome = describe_files(engine, task, paths, args.output, fmt, existing,
                                     args.parallel, options, flag,
                                     progress_enabled=False if args.no_progress else None)
    summary = (f"{outcome.written} lines written to {args.output} ({outcome.errors} errors, "
               f"{outcome.skipped} already there) in {outcome.seconds:.1f} s, "
               f"{outcome.images_per_s:.2f} images/s")
    return report_outcome(outcome, summary, f"; {outcome.left} left")


def report_outcome(outcome, summary: str, left: str = "") -> int:
    """The batch job's last line and exit status, local or on Ray: 1 after a write error
    or failed images, 128 + the signal when interrupted (with the resume command)."""
    if outcome.write_error:
        print(f"vlmserve: error: {outcome.write_error}; {summary}", file=sys.stderr)
        return 1
    if outcome.signum is not None:
        print(f"vlmserve: interrupted: {summary}{left}. Resume with: "
              f"{resume_command(sys.argv[1:])}", file=sys.stderr)
        return 128 + outcome.signum
    print(f"vlmserve: {summary}", file=sys.stderr)
    return 1 if outcome.errors else 0
