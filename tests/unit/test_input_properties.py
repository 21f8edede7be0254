"""Property-based tests (hypothesis, seeded) of what clients send, in-process.

Whatever the input, parsing a request, rendering a conversation, reading a data URI or
preparing an image either works or raises a one-line ``VlmserveError`` (or, for a body
pydantic refuses, a ``ValidationError`` the HTTP layer turns into a 400): never another
exception, which would be a 500. And message text always comes out of the chat template
whole, as ``UserText``, whatever it spells.
"""

from __future__ import annotations

import base64
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from pydantic import ValidationError

from tests.conftest import png_bytes
from vlmserve.batch.task import build_task
from vlmserve.chat import ChatMessage, ChatRenderer, TextPart, check_text_length
from vlmserve.chat_template import IMAGE_PLACEHOLDER, QWEN3VL_CHAT_TEMPLATE
from vlmserve.errors import ContextOverflowError, VlmserveError
from vlmserve.http.schemas import ChatCompletionRequest
from vlmserve.images import decode_data_uri, prepare_image
from vlmserve.templates import TemplateRegistry, load_template_file
from vlmserve.text_input import InvalidTextError, check_text, find_invalid_text
from vlmserve.types import SamplingParams, UserText

SEEDED = settings(derandomize=True, deadline=None, max_examples=150, database=None)
RENDERER = ChatRenderer(QWEN3VL_CHAT_TEMPLATE)
MARKS = "\ufdd0\ufdd1"

# Text that is valid Unicode (hypothesis leaves surrogates out of st.text by default) and
# leans on what templates and tokenizers care about.
_tricky = st.sampled_from(["<|im_start|>", "<|im_end|>", "<|endoftext|>", "system\n",
                           IMAGE_PLACEHOLDER, "<__media__>", "<|vision_start|>", "{{ x }}",
                           "{% if %}", "\\ufdd0", "\n", "\x00", "\"", "</tool_call>"])
_text = st.lists(st.text(max_size=12).filter(lambda t: not set(t) & set(MARKS)) | _tricky,
                 max_size=6).map("".join)
_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats()
                     | st.text(max_size=10),
                     lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=10)


@SEEDED
@given(text=st.text())
def test_valid_unicode_is_accepted(text):
    assert find_invalid_text({"k": [text, {text: text}]}) is None


@SEEDED
@given(before=st.text(max_size=20), after=st.text(max_size=20),
       surrogate=st.integers(0xD800, 0xDFFF))
def test_a_lone_surrogate_is_found_with_its_place(before, after, surrogate):
    value = {"messages": [{"content": "ok"}, {"content": before + chr(surrogate) + after}]}
    where, problem = find_invalid_text(value)
    assert where == "messages.1.content"
    assert f"U+{surrogate:04X}" in problem and f"character {len(before)}" in problem
    with pytest.raises(InvalidTextError) as info:
        check_text(value)
    assert info.value.param == "messages.1.content" and "\n" not in info.value.message


@SEEDED
@given(system=_text, question=_text, answer=_text)
def test_message_text_comes_out_of_the_template_whole_as_user_text(system, question, answer):
    """Whatever a message spells (control tokens, placeholders, Jinja), it is one
    ``UserText`` part, never template text: it cannot forge a turn or an image."""
    messages = [ChatMessage.system(system), ChatMessage.user(question + "?"),
                ChatMessage.assistant(answer), ChatMessage.user("again")]
    if not system:
        messages = messages[1:]
    prompt = RENDERER.render(messages)
    user_texts = [p.text for p in prompt.parts if isinstance(p, UserText)]
    assert user_texts == [t for t in (system, question + "?", answer, "again") if t]
    template = "".join(p for p in prompt.parts if isinstance(p, str))
    assert template.count("<|im_start|>") == len(messages) + 1  # + the answer's turn
    assert prompt.images == ()


@SEEDED
@given(content=_json, role=st.sampled_from(["user", "system", "assistant", "tool", "x"]),
       extra=st.dictionaries(st.sampled_from(["max_tokens", "stop", "seed", "temperature",
                                              "tools", "stream"]), _json, max_size=2))
def test_any_request_body_parses_or_is_refused_cleanly(content, role, extra):
    body = {"messages": [{"role": role, "content": content}], **extra}
    try:
        request = ChatCompletionRequest.model_validate(body)
    except (ValidationError, VlmserveError):
        return
    messages = []
    for message in request.messages:
        texts = ([message.content] if isinstance(message.content, str)
                 else [p.text for p in message.content or () if p.type == "text"])
        role = "system" if message.role == "developer" else message.role
        messages.append(ChatMessage(role, tuple(TextPart(t) for t in texts if t)))
    try:
        RENDERER.render(messages)
    except VlmserveError as exc:
        assert "\n" not in exc.message


@SEEDED
@given(head=st.sampled_from(["data:image/png;base64,", "data:image/jpeg;base64,",
                             "data:;base64,", "data:image/png,", "DATA:IMAGE/PNG;BASE64,",
                             "data:text/plain;base64,", "", "data:image/png;base64"]),
       payload=st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef0123456789+/=\n -_!",
                       max_size=64) | st.binary(max_size=48).map(
                           lambda b: base64.b64encode(b).decode()))
def test_data_uris_decode_or_raise_an_image_error(head, payload):
    try:
        data = decode_data_uri(head + payload, max_bytes=1024)
    except VlmserveError as exc:
        assert exc.message and "\n" not in exc.message
        return
    assert isinstance(data, bytes) and len(data) <= 1024


_PNG = png_bytes(40, 30)
_JPEG = io.BytesIO()
Image.new("RGB", (40, 30), (10, 200, 90)).save(_JPEG, "JPEG")


@settings(derandomize=True, deadline=None, max_examples=120, database=None)
@given(base=st.sampled_from([_PNG, _JPEG.getvalue()]),
       edits=st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), max_size=6),
       cut=st.integers(0, 2000))
def test_damaged_images_prepare_or_raise_an_image_error(base, edits, cut):
    data = bytearray(base)
    for at, value in edits:
        data[at % len(data)] = value
    data = bytes(data[: max(1, len(data) - cut)])
    try:
        image = prepare_image(data)
    except VlmserveError as exc:
        assert exc.message and "\n" not in exc.message
        return
    assert len(image.rgb) == image.width * image.height * 3


@settings(derandomize=True, deadline=None, max_examples=60, database=None)
@given(data=st.binary(max_size=200))
def test_random_bytes_are_no_image(data):
    with pytest.raises(VlmserveError):
        prepare_image(data)


def test_text_length_is_checked_by_counting_not_tokenizing():
    messages = [ChatMessage.system("s" * 10), ChatMessage.user("u" * 90)]
    check_text_length(messages, 100)
    with pytest.raises(ContextOverflowError, match="has 101 characters, more than the 100"):
        check_text_length(messages, 100, extra_chars=1)
    huge = [ChatMessage.user("x" * 20_000_000)]
    with pytest.raises(ContextOverflowError, match="20,000,000 characters"):
        check_text_length(huge, 131_072)


def test_batch_prompts_and_template_files_are_checked_as_unicode(tmp_path):
    """The CLI's --prompt (argv bytes that are not UTF-8 arrive as surrogates) and a JSON
    template file that spells one are refused with the place named, before any model."""
    with pytest.raises(InvalidTextError, match="the prompt is not valid Unicode"):
        build_task(TemplateRegistry.builtin(), None, "describe \udcff", SamplingParams())
    path = tmp_path / "templates.json"
    path.write_text('[{"name": "t", "prompt": "a\\ud800"}]', encoding="utf-8")
    with pytest.raises(InvalidTextError, match=r"templates.json: 0.prompt is not valid Unicode"):
        load_template_file(path)
