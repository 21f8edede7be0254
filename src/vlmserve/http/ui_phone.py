"""The page's phone controls: camera, live mode, read aloud, settings sheet; and their assets.

Everything here runs in the browser (``static/phone.js``, ``static/phone.css``): the
camera shot and live frames become ordinary uploads of the question box, shrunk to
1024 px JPEG before they leave the phone, so they go through the same preprocessing and
caches as any upload; speech is the browser's own ``speechSynthesis`` (nothing leaves
the machine, nothing is installed on the server). At desktop widths the bar is hidden
and the layout is the page's own.
"""

from __future__ import annotations

from importlib.resources import files

import gradio as gr

_STATIC = files("vlmserve.http") / "static"

# Buttons are plain HTML: the camera must be an <input capture> (the phone's own camera
# app, full quality), and the rest act in the browser without a server round trip.
_BAR = """
<div class="vlm-bar" role="toolbar" aria-label="Phone controls">
  <label class="vlm-bar-btn" id="vlm-camera-btn" title="Take a photo and ask">◉ Photo
    <input id="vlm-camera" type="file" accept="image/*" capture="environment"></label>
  <button type="button" class="vlm-bar-btn" id="vlm-live-btn" aria-pressed="false"
    title="Ask about what the camera sees every few seconds while you hold still">● Live</button>
  <button type="button" class="vlm-bar-btn" id="vlm-speak-btn" aria-pressed="false"
    title="Read answers aloud">♪ Read</button>
  <button type="button" class="vlm-bar-btn" id="vlm-settings-btn" aria-expanded="false"
    title="Question template and settings">⚙ Template</button>
</div>
<div class="vlm-bar"><video id="vlm-live-view" muted playsinline></video>
  <span id="vlm-phone-note" aria-live="polite"></span></div>
"""


def phone_bar() -> gr.HTML:
    """The bar above the question box (shown at narrow widths only)."""
    return gr.HTML(_BAR, elem_id="vlm-phone-bar", padding=False)


def phone_css() -> str:
    return (_STATIC / "phone.css").read_text(encoding="utf-8")


def phone_head() -> str:
    """A ``<script>`` for Gradio's ``head=``: the page's browser-side behaviour."""
    return f"<script>\n{(_STATIC / 'phone.js').read_text(encoding='utf-8')}\n</script>"
