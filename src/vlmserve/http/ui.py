"""The web page on ``/``: upload a photo, ask (in Chinese by default), read the answer stream.

A Gradio Blocks page mounted on the app (``mount_ui``), so page and API share one
process, one port and one engine. Nothing on the page calls out of the machine: Gradio's
analytics are switched off before Gradio is imported, and the theme uses the system's
fonts instead of web fonts. At narrow widths the page is laid out for a phone held in one
hand, with a camera, live mode and read-aloud (``ui_phone``); desktop widths are unchanged.
"""

from __future__ import annotations

import hmac
import os

# Before the import: Gradio reads it at import time to decide on its usage analytics.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

import gradio as gr  # noqa: E402
from fastapi import FastAPI  # noqa: E402

from vlmserve.http.services import Services  # noqa: E402
from vlmserve.http.ui_chat import ChatHandlers  # noqa: E402
from vlmserve.http.ui_phone import phone_bar, phone_css, phone_head  # noqa: E402
from vlmserve.templates import DEFAULT_TEMPLATE  # noqa: E402

DEMO_BANNER = ("Demo model: random weights, answers are gibberish. "
               "Get the real model: <code>vlmserve pull</code> / see README")

_SEND = "Send"

_CSS = """
.vlm-demo-banner { background: #b00020; color: #fff; font-weight: 700; font-size: 1.1rem;
  padding: 12px 16px; border-radius: 8px; text-align: center; }
.vlm-demo-banner code { background: rgba(255,255,255,.2); color: #fff; padding: 1px 6px; }
.vlm-stats { color: var(--body-text-color-subdued); font-size: 0.85em; }
#vlm-status { min-height: 1.5em; color: #b00020; }
/* a photo in the chat is a reminder of what was asked about, not the main content */
#vlm-chat img { max-height: 200px; width: auto; object-fit: contain; }
/* ... but a photo with boxes drawn on it is the answer: show it large */
#vlm-chat img[src*=".boxes-"] { max-height: 560px; }
"""


def _show_stop() -> gr.MultimodalTextbox:
    return gr.MultimodalTextbox(submit_btn=False, stop_btn="Stop")


def _show_send() -> gr.MultimodalTextbox:
    return gr.MultimodalTextbox(submit_btn=_SEND, stop_btn=False)


def _theme() -> gr.themes.Base:
    system_sans = ["ui-sans-serif", "system-ui", "Noto Sans CJK SC", "PingFang SC",
                   "Microsoft YaHei", "sans-serif"]
    return gr.themes.Default(font=system_sans, font_mono=["ui-monospace", "monospace"])


def build_page(services: Services) -> gr.Blocks:
    """The page's layout and wiring (no I/O: the engine is used only when events run)."""
    handlers = ChatHandlers(services)
    settings = services.settings
    default = services.templates.get(DEFAULT_TEMPLATE)
    choices = [(t.title, t.name) for t in services.templates]

    with gr.Blocks(title="vlmserve", analytics_enabled=False) as page:
        if settings.demo:
            gr.HTML(f'<div class="vlm-demo-banner" id="vlm-demo-banner">⚠ {DEMO_BANNER}</div>')
        model_line = gr.Markdown(handlers.model_line(), elem_id="vlm-model")
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                chatbot = gr.Chatbot(
                    elem_id="vlm-chat", show_label=False, buttons=["copy"],
                    height="68vh", min_height=420,
                    placeholder="Upload a photo (drop it here, paste it, or use the clip "
                    "button) and ask about it.",
                    feedback_options=None, latex_delimiters=[])
                with gr.Column(elem_id="vlm-dock"):  # on a phone: fixed at the bottom
                    phone_bar()
                    box = gr.MultimodalTextbox(
                        value={"text": default.prompt, "files": []}, elem_id="vlm-input",
                        file_types=["image", "video"], file_count="multiple", sources=["upload"],
                        show_label=False, submit_btn=_SEND, stop_btn=False, autofocus=True,
                        placeholder="Drop, paste or upload a photo, then ask a question")
                    status = gr.Markdown("", elem_id="vlm-status")
            with gr.Column(scale=1, min_width=240, elem_id="vlm-settings"):
                template = gr.Dropdown(choices, value=default.name, label="Question template",
                                       elem_id="vlm-template")
                max_tokens = gr.Slider(16, min(4096, settings.ctx_size),
                                       value=min(settings.max_tokens, 4096), step=16,
                                       label="Max answer tokens", elem_id="vlm-max-tokens")
                temperature = gr.Slider(0.0, 2.0, value=0.7, step=0.05, label="Temperature",
                                        elem_id="vlm-temperature")
                new_chat = gr.Button("New chat", variant="secondary", elem_id="vlm-new-chat")
                gr.Markdown(
                    "Follow-up questions keep the photo in context. The same model answers "
                    "OpenAI-compatible requests on `/v1/chat/completions`.")
        history = gr.State([])

        # While an answer streams, the box's Send button turns into Stop (as in Gradio's
        # ChatInterface); Stop cancels the handler, which aborts the engine request.
        box.submit(_show_stop, None, [box], queue=False, api_visibility="undocumented")
        send = box.submit(handlers.respond,
                          inputs=[box, chatbot, history, template, max_tokens, temperature],
                          outputs=[chatbot, box, history, status],
                          concurrency_limit=None,  # the engine queues; Gradio need not
                          show_progress="hidden")
        send.then(_show_send, None, [box], queue=False, api_visibility="undocumented")
        box.stop(None, cancels=[send])
        template.change(handlers.on_template_change, inputs=[template, box], outputs=[box],
                        show_progress="hidden")
        new_chat.click(handlers.new_chat, inputs=[template],
                       outputs=[chatbot, box, history, status], cancels=[send])
        page.load(handlers.model_line, outputs=[model_line], show_progress="hidden")
    return page


def mount_ui(app: FastAPI, services: Services) -> None:
    """Mount the page on ``/`` of ``app`` (after the API routes, which keep precedence).

    With an API key set, the page asks for it as its password (any user name), so a
    server opened to the network is not an open page either.
    """
    settings = services.settings
    key = settings.api_key_value

    def check_password(_user: str, password: str) -> bool:
        return key is not None and hmac.compare_digest(password.encode(), key.encode())

    gr.mount_gradio_app(
        app, build_page(services), path="/",
        auth=check_password if key else None,
        auth_message="Enter the server's API key as the password (any user name)."
        if key else None,
        ssr_mode=False,  # no Node.js server
        footer_links=["settings"],
        run_history=False,
        max_file_size=max(settings.image_max_bytes, settings.video_options().max_bytes),
        theme=_theme(),
        css=_CSS + phone_css(),
        head=phone_head(),
    )
