"""What the page does when someone sends a question: the Gradio event handlers.

The page talks to the engine in-process through ``EngineClient`` (no HTTP round trip).
The conversation the model sees is kept per browser session in a ``gr.State`` as a list
of ``ChatMessage`` (images included, so follow-up questions keep the photo in context);
the Chatbot shows the same turns plus a timing line under each answer.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from contextlib import aclosing
from pathlib import Path
from typing import Any

import gradio as gr

from vlmserve.annotate import annotated_png
from vlmserve.chat import ChatMessage
from vlmserve.config import TokenBudget, default_penalty
from vlmserve.errors import VlmserveError
from vlmserve.grounding import boxes_for
from vlmserve.http.completions import newest_geometry
from vlmserve.http.conversation import (
    PreparedChat,
    check_request_text,
    fit_and_render,
    prompt_budget,
)
from vlmserve.http.generation import Generation
from vlmserve.http.services import Services
from vlmserve.http.ui_progress import phase_html, ticking
from vlmserve.images import prepare_image
from vlmserve.images.budget import GROUNDING_MIN_TOKENS, narrow_budget
from vlmserve.templates import DEFAULT_TEMPLATE, PromptTemplate
from vlmserve.text_input import check_text
from vlmserve.types import PreparedClip, PreparedImage, Request, RequestStats, SamplingParams
from vlmserve.video import is_video_path, prepare_clip

SOURCE = "ui"  # the metrics label for requests made from the page
_REFRESH_S = 0.05  # at most ~20 page updates a second while streaming
_PHASE_TICK_S = 0.5  # the waiting line's clock, before the first word


def stats_line(stats: RequestStats) -> str:
    """``TTFT 123 ms · 45.6 tok/s · 16 tokens · 600 prompt tokens (576 image, 12 cached)``."""
    speed = (f"{stats.decode_tokens_per_s:.1f} tok/s" if stats.decode_tokens_per_s > 0
             else "– tok/s")
    detail = [f"{stats.image_tokens} image"] if stats.images else []
    if stats.cached_tokens:
        detail.append(f"{stats.cached_tokens} cached")
    prompt = f"{stats.prompt_tokens} prompt tokens" + (f" ({', '.join(detail)})" if detail
                                                         else "")
    return (f"TTFT {stats.ttft_ms:.0f} ms · {speed} · {stats.completion_tokens} tokens · "
            f"{prompt}")


def _answer_with_stats(answer: str, stats: RequestStats | None, note: str = "") -> str:
    lines = [answer or "*(empty answer)*"]
    if stats is not None:
        lines.append(f'<span class="vlm-stats">{stats_line(stats)}{note}</span>')
    return "\n\n".join(lines)


def image_tokens_for(server: TokenBudget, template: PromptTemplate) -> TokenBudget:
    """The page's image budget for a template: grounding and OCR raise the floor."""
    floor = GROUNDING_MIN_TOKENS if template.boxes else template.min_image_tokens
    return narrow_budget(server, floor=floor) if floor else server


class ChatHandlers:
    """The page's event handlers, bound to one app's services."""

    def __init__(self, services: Services) -> None:
        self.services = services

    # -- small ones

    def template(self, name: str | None) -> PromptTemplate:
        return self.services.templates.get(name or DEFAULT_TEMPLATE)

    def on_template_change(self, name: str, box: dict[str, Any] | None) -> dict[str, Any]:
        """Choosing a template puts its question in the box (the photo stays)."""
        files = (box or {}).get("files", [])
        return {"text": self.template(name).prompt, "files": files}

    def new_chat(self, name: str) -> tuple[list, dict[str, Any], list, str]:
        return [], {"text": self.template(name).prompt, "files": []}, [], ""

    def model_line(self) -> str:
        holder = self.services.holder
        model = holder.model
        if model is None:
            if holder.error:
                return f"**Model failed to load:** {holder.error}"
            return "**Model loading…** questions can be sent once it is ready."
        info = model.engine.info
        return (f"**{model.model_id}** · {info.n_parallel} parallel slots · "
                f"{info.n_ctx_per_slot} tokens each · runs on this machine, nothing leaves it")

    # -- sending a question

    async def respond(self, box: dict[str, Any] | None, chat: list[dict[str, Any]],
                      history: list[ChatMessage], template_name: str, max_tokens: float,
                      temperature: float) -> Any:
        """Async generator: yields (chat, box, history, status) as the answer streams."""
        box = box or {"text": "", "files": []}
        text = (box.get("text") or "").strip()
        files: list[str] = list(box.get("files") or [])
        chat = list(chat or [])
        history = list(history or [])

        template = self.template(template_name)
        try:
            check_text(text, "the message")  # the browser can send lone surrogates too
            model = self.services.model()
            tokens = image_tokens_for(self.services.settings.image_options().tokens, template)
            images = [await self._load_image(path, tokens) for path in files]
        except VlmserveError as exc:
            gr.Warning(exc.message)
            yield gr.skip(), gr.skip(), gr.skip(), f"⚠️ {exc.message}"
            return
        if not text and not images:
            message = "Type a question or add a photo first."
            gr.Warning(message)
            yield gr.skip(), gr.skip(), gr.skip(), message
            return

        *system, user = template.to_messages(*images, question=text or None)
        try:
            check_request_text(model, self.services.settings, [user])
        except VlmserveError as exc:
            gr.Warning(exc.message)
            yield gr.skip(), gr.skip(), gr.skip(), f"⚠️ {exc.message}"
            return
        for path in files:
            chat.append({"role": "user", "content": {"path": path}})
        chat.append({"role": "user", "content": text or template.prompt})
        t_sent = time.monotonic()
        chat.append({"role": "assistant", "content": phase_html(None, 0.0)})
        cleared = {"text": "", "files": []}
        yield chat, cleared, history, ""

        max_tokens = int(max_tokens)
        budget = prompt_budget(self.services.settings.context_budget,
                               model.engine.info.n_ctx_per_slot, max_tokens)
        generation: Generation | None = None
        try:
            grammar = template.grammar()
            settings = self.services.settings
            temp = float(temperature)
            sampling = SamplingParams(
                max_tokens=max_tokens, temperature=temp, grammar=grammar,
                presence_penalty=default_penalty(temp, settings.presence_penalty),
                frequency_penalty=default_penalty(temp, settings.frequency_penalty))
            prepared: PreparedChat = await asyncio.to_thread(
                fit_and_render, model, [*system, *history, user], budget)
            request = Request(f"ui-{uuid.uuid4().hex[:16]}", prepared.prompt, sampling,
                              report_phases=True)
            generation = self.services.generation(request, SOURCE, prepared.dropped_turns)
            await generation.start()
            answer, last_yield, phase = "", 0.0, None
            # closed before generation.close(), which must not meet a running anext
            async with aclosing(ticking(generation.deltas(), _PHASE_TICK_S)) as deltas:
                async for delta in deltas:
                    now = time.monotonic()
                    if delta is None or delta.phase is not None:  # still before the first word
                        phase = delta.phase if delta is not None else phase
                        if not answer:
                            chat[-1] = {"role": "assistant",
                                        "content": phase_html(phase, now - t_sent)}
                            yield chat, gr.skip(), gr.skip(), gr.skip()
                        continue
                    answer += delta.text
                    if delta.finished or now - last_yield >= _REFRESH_S:
                        last_yield = now
                        chat[-1] = {"role": "assistant",
                                    "content": answer or phase_html(phase, now - t_sent)}
                        if not delta.finished:
                            yield chat, gr.skip(), gr.skip(), gr.skip()
            final = generation.final
            if generation.error is not None:
                raise generation.error
        except VlmserveError as exc:  # queue full, conversation too long, engine failure
            yield self._failed(chat, box, exc.message)
            return
        finally:
            if generation is not None:
                await generation.close()  # aborts if the page stopped or left mid-answer

        note = ""
        if prepared.dropped_turns:
            note = (f" · {prepared.dropped_turns} older turn(s) left out to fit the "
                    f"{budget}-token budget")
        chat[-1] = {"role": "assistant", "content": _answer_with_stats(answer, final.stats,
                                                                       note)}
        kept = [m for m in prepared.messages if m.role != "system"]
        if template.boxes:
            # After the answer is complete: drawing is ordinary CPU work, off the loop.
            drawn = await asyncio.to_thread(self._draw, chat, answer, prepared)
            if drawn is not None:
                chat.extend(drawn)
        yield chat, gr.skip(), [*kept, ChatMessage.assistant(answer)], ""

    @staticmethod
    def _draw(chat: list[dict[str, Any]], answer: str, prepared: PreparedChat,
              ) -> list[dict[str, Any]] | None:
        """Chat entries showing the answer's boxes drawn on the newest photo (and a line
        naming them), or None when no photo is in the chat."""
        photo = next((m["content"]["path"] for m in reversed(chat)
                      if m["role"] == "user" and isinstance(m["content"], dict)), None)
        if photo is None:
            return None
        boxes = boxes_for(answer, newest_geometry(prepared.prompt))
        try:
            png = annotated_png(Path(photo).read_bytes(), boxes)
            # Beside the upload, in Gradio's own upload folder: a path it serves.
            out = Path(photo).with_name(f"{Path(photo).stem}.boxes-{uuid.uuid4().hex[:8]}.png")
            out.write_bytes(png)
        except (OSError, VlmserveError):
            return None
        labels = ", ".join(b["label"] or "?" for b in boxes[:20])
        line = (f"{len(boxes)} found: {labels}" if boxes
                else "No boxes in this answer (it did not hold Qwen's JSON boxes).")
        return [{"role": "assistant", "content": {"path": str(out)}},
                {"role": "assistant", "content": f'<span class="vlm-stats">{line}</span>'}]

    @staticmethod
    def _failed(chat: list[dict[str, Any]], box: dict[str, Any], message: str) -> tuple:
        """Outputs that show the error, drop the pending turn and give the question back."""
        gr.Warning(message)
        while chat and chat[-1]["role"] == "assistant":
            chat.pop()
        while chat and chat[-1]["role"] == "user":
            chat.pop()
        return chat, box, gr.skip(), f"⚠️ {message}"

    async def _load_image(self, path: str, tokens: TokenBudget | None = None,
                          ) -> PreparedImage | PreparedClip:
        """Read and prepare an upload; errors name the file as the person chose it."""
        name = Path(path).name
        options = self.services.settings.image_options()
        try:
            data = await asyncio.to_thread(Path(path).read_bytes)
            if is_video_path(path):  # a clip: its frame pairs take the picture's place
                return await asyncio.to_thread(prepare_clip, data,
                                               self.services.settings.video_options())
            return await asyncio.to_thread(prepare_image, data, options, None, tokens)
        except VlmserveError as exc:
            raise type(exc)(f"{name}: {exc.message}") from None
        except OSError:
            raise VlmserveError(f"{name}: the upload could not be read; try again") from None
