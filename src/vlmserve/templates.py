"""Structured prompt templates: the built-in questions and user-defined ones.

A ``PromptTemplate`` is a ready-made question (plus an optional system prompt and an
optional JSON schema for structured answers) that the page's menu, the CLI and the API
refer to by name. ``TemplateRegistry.builtin()`` holds the built-ins;
``with_user_file(path)`` adds (or overrides) templates from a YAML or JSON file.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Hashable, Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from vlmserve.chat import ChatMessage
from vlmserve.errors import RequestError, VlmserveError
from vlmserve.grammar import bounded_schema_grammar
from vlmserve.images.budget import GROUNDING_MIN_TOKENS
from vlmserve.text_input import check_text
from vlmserve.types import PreparedImage

DEFAULT_TEMPLATE = "describe_zh"  # the product's default question
GROUNDING_TEMPLATE = "grounding"  # what a request with x_boxes (and no template) uses
# Qwen3-VL's own answer format for grounding; the system prompt makes it explicit so a
# free-form question ("where is the red cup?") with x_boxes answers with boxes too.
GROUNDING_SYSTEM = (
    "When asked to locate things, answer with a JSON list, one item per thing found: "
    '{"bbox_2d": [x1, y1, x2, y2], "label": "..."} for a box, or {"point_2d": [x, y], '
    '"label": "..."} for a point, in coordinates relative to the image on a 0-1000 grid.'
)

# Names travel in URLs, CLI flags and form values: keep them plain.
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class PromptTemplate(BaseModel):
    """A named, ready-made question for an image.

    ``name`` is the identifier used by the API and CLI; ``title`` is what the page's menu
    shows (defaults to ``name``); ``prompt`` is the user text; ``system`` an optional
    system prompt; ``language`` the prompt's language (e.g. ``"zh"``, ``"en"``);
    ``json_schema`` asks for structured output when set; ``description`` says what the
    template is for. ``min_image_tokens`` raises the image-token floor for the task
    (Qwen reads small text and small objects well only from about 1024 tokens);
    ``boxes`` says the answer holds Qwen's JSON boxes, to parse and map to the photo.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    title: str = ""
    prompt: str
    system: str | None = None
    language: str | None = None
    json_schema: dict[str, Any] | None = None
    description: str = ""
    min_image_tokens: int | None = Field(None, ge=8, le=8192)
    boxes: bool = False

    @model_validator(mode="before")
    @classmethod
    def _title_defaults_to_name(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("title") and isinstance(data.get("name"), str):
            data = {**data, "title": data["name"]}
        return data

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not _NAME_RE.fullmatch(value):
            raise ValueError(
                "must be 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit"
            )
        return value

    @field_validator("prompt")
    @classmethod
    def _prompt_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value

    @field_validator("json_schema")
    @classmethod
    def _schema_is_json(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        # YAML can produce values JSON cannot carry (dates, sets); the schema goes to a
        # grammar converter and to clients as JSON, so catch that here.
        if value is not None:
            try:
                json.dumps(value)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"must be plain JSON ({exc})") from exc
        return value

    def grammar(self) -> str | None:
        """The sampler grammar of this template's ``json_schema`` (bounded), or None.

        Bounded like batch work's (``vlmserve.grammar.bounded_schema_grammar``), so an
        answer on the page or through the API always ends as a whole JSON document.
        """
        return bounded_schema_grammar(self.json_schema) if self.json_schema else None

    def to_messages(self, *images: PreparedImage, question: str | None = None
                    ) -> list[ChatMessage]:
        """The conversation that asks this template's question (or ``question``, with
        the template's system prompt) about ``images``."""
        messages = [ChatMessage.system(self.system)] if self.system else []
        messages.append(ChatMessage.user(self.prompt if question is None else question, *images))
        return messages


def boxes_schema() -> dict[str, Any]:
    """The grounding template's answer: Qwen3-VL's own box list, as a grammar (so even a
    model that would wrap it in prose or a fence answers with parseable boxes). A fresh
    dict on every call: nothing shared can be changed."""
    return {
        "type": "array",
        "maxItems": 32,
        "items": {
            "type": "object",
            "properties": {
                "bbox_2d": {"type": "array", "items": {"type": "integer"},
                            "minItems": 4, "maxItems": 4},
                "label": {"type": "string", "maxLength": 48},
            },
            "required": ["bbox_2d", "label"],
            "additionalProperties": False,
        },
    }


def _builtin_templates() -> list[PromptTemplate]:
    # Built fresh on every call: no shared mutable objects (the JSON schema is a dict).
    return [
        PromptTemplate(
            name="describe_zh",
            title="描述图片（中文）",
            prompt="请用中文描述这张图片",
            language="zh",
            description="The default question: describe the image in Chinese.",
        ),
        PromptTemplate(
            name="describe_en",
            title="Describe (English)",
            prompt="Describe this image in detail.",
            language="en",
            description="A detailed description in English.",
        ),
        PromptTemplate(
            name="structured_zh",
            title="结构化描述（中文）",
            prompt=(
                "请仔细观察这张图片，按编号依次回答以下四个问题：\n"
                "1. 画面中的主要物体或人物有哪些？\n"
                "2. 它们之间的空间关系和动作关系是怎样的？\n"
                "3. 这可能是什么时间、什么地点？\n"
                "4. 画面传达了怎样的情绪或隐含意义？\n"
                "请用“1.”到“4.”编号作答，每个问题单独一段。"
            ),
            language="zh",
            description="Four numbered answers in Chinese: objects, relations, time and "
                        "place, mood.",
        ),
        PromptTemplate(
            name="structured_en",
            title="Structured description (English)",
            prompt=(
                "Look at this image carefully and answer these four questions in order:\n"
                "1. What are the main objects or people?\n"
                "2. How are they placed relative to each other, and what are they doing?\n"
                "3. What time and place might this be?\n"
                "4. What mood or implied meaning does the image convey?\n"
                "Number your answers 1. to 4., one paragraph each."
            ),
            language="en",
            description="Four numbered answers in English: objects, relations, time and "
                        "place, mood.",
        ),
        PromptTemplate(
            name="ocr",
            title="Transcribe text (OCR)",
            prompt=(
                "Transcribe all the text visible in this image exactly as written, in its "
                "original language and reading order, keeping the original line breaks. "
                "Output only the transcribed text: no commentary, no translation, no "
                "formatting. If there is no visible text, output exactly: (no text)"
            ),
            language="en",
            description="Faithful transcription of all visible text, line breaks kept.",
            min_image_tokens=GROUNDING_MIN_TOKENS,
        ),
        PromptTemplate(
            name="grounding",
            title="Find objects (boxes drawn on the photo)",
            system=GROUNDING_SYSTEM,
            prompt=(
                "Locate every distinct object in this image and output the bbox "
                "coordinates of each in JSON format, with a short label."
            ),
            language="en",
            description="Qwen3-VL's grounding: JSON boxes (bbox_2d on a 0-1000 grid, "
                        "label), mapped to the photo's pixels and drawn on it.",
            json_schema=boxes_schema(),
            min_image_tokens=GROUNDING_MIN_TOKENS,
            boxes=True,
        ),
        PromptTemplate(
            name="objects",
            title="Objects and positions",
            prompt=(
                "List every distinct object you can see in this image, one per line, as "
                "'object: position', where position is its approximate place in the image: "
                "top-left, top, top-right, left, center, right, bottom-left, bottom or "
                "bottom-right. Output only the list."
            ),
            language="en",
            description="One object per line with its approximate position.",
        ),
        PromptTemplate(
            name="safety",
            title="Work-site safety check (JSON)",
            system=(
                "You are a work-site safety inspector. You answer with a single JSON object "
                "and nothing else."
            ),
            prompt=(
                "Inspect this work-site image for safety compliance. Check whether every "
                "visible worker wears a safety helmet (hard hat) and a reflective "
                "high-visibility vest; whether other required protective equipment is "
                "missing (gloves, safety boots, goggles, a harness when working at height); "
                "and whether there are hazards such as unprotected edges, open holes or "
                "trenches, unsecured loads, trip hazards or fire risks. Answer with a JSON "
                'object: "helmet": true if every visible worker wears a helmet, "vest": true '
                'if every visible worker wears a reflective vest (both true when no worker '
                'is visible), "violations": a short description of each violation or hazard '
                "found (an empty list if none)."
            ),
            language="en",
            json_schema={
                "type": "object",
                "properties": {
                    "helmet": {"type": "boolean"},
                    "vest": {"type": "boolean"},
                    "violations": {"type": "array", "items": {"type": "string"}},
                },
                "required": ["helmet", "vest", "violations"],
                "additionalProperties": False,
            },
            description="PPE and hazard check (helmets, vests, other PPE) answered as JSON.",
        ),
    ]


class TemplateRegistry:
    """An immutable, ordered set of prompt templates, looked up by name."""

    def __init__(self, templates: Iterable[PromptTemplate] = ()) -> None:
        by_name: dict[str, PromptTemplate] = {}
        for template in templates:
            if template.name in by_name:
                raise VlmserveError(f"duplicate prompt template name {template.name!r}")
            by_name[template.name] = template
        self._templates = by_name  # never changed after this point

    @classmethod
    def builtin(cls) -> TemplateRegistry:
        """The built-in templates, ``describe_zh`` (the default question) first."""
        return cls(_builtin_templates())

    def get(self, name: str) -> PromptTemplate:
        """The template called ``name``; ``RequestError`` listing the names if unknown."""
        try:
            return self._templates[name]
        except (KeyError, TypeError):
            raise RequestError(
                f"unknown prompt template {name!r}; available: {', '.join(self._templates)}"
            ) from None

    def names(self) -> tuple[str, ...]:
        return tuple(self._templates)

    def all(self) -> tuple[PromptTemplate, ...]:
        return tuple(self._templates.values())

    def with_user_file(self, path: str | os.PathLike[str]) -> TemplateRegistry:
        """A new registry with the templates of a YAML or JSON file added.

        A user template with a built-in's name replaces it (keeping its place in the
        menu); new names come after. See ``load_template_file`` for the format.
        """
        merged = dict(self._templates)
        for template in load_template_file(path):
            merged[template.name] = template
        return TemplateRegistry(merged.values())

    def __contains__(self, name: object) -> bool:
        return name in self._templates

    def __iter__(self) -> Iterator[PromptTemplate]:
        return iter(self.all())

    def __len__(self) -> int:
        return len(self._templates)


# ---------------------------------------------------------------------------- user files


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses duplicate mapping keys (plain YAML keeps the last one,
    which would let a second template silently replace the first)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Hashable] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, Hashable):
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r}", key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _parse(path: Path, text: str) -> Any:
    suffix = path.suffix.lower()
    if suffix == ".json":
        try:
            return json.loads(text, object_pairs_hook=_unique_pairs)
        except json.JSONDecodeError as exc:
            raise VlmserveError(
                f"template file {path} is not valid JSON: line {exc.lineno}: {exc.msg}"
            ) from None
        except ValueError as exc:  # from _unique_pairs
            raise VlmserveError(f"template file {path}: {exc}") from None
    if suffix in (".yaml", ".yml"):
        try:
            return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass: no tags
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark
            where = f"line {mark.line + 1}: " if mark is not None else ""
            raise VlmserveError(
                f"template file {path} is not valid YAML: {where}{exc.problem}"
            ) from None
        except yaml.YAMLError as exc:
            raise VlmserveError(f"template file {path} is not valid YAML: {exc}") from None
    raise VlmserveError(f"template file {path} must end in .yaml, .yml or .json")


def _describe_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    field = ".".join(str(part) for part in error["loc"]) or "template"
    if error["type"] == "missing":
        return f"missing field {field!r}"
    if error["type"] == "extra_forbidden":
        return f"unknown field {field!r}"
    if error["type"] == "value_error":  # our validators: the message without pydantic's prefix
        return f"field {field!r} {error['ctx']['error']}"
    return f"field {field!r}: {error['msg']}"


def load_template_file(path: str | os.PathLike[str]) -> tuple[PromptTemplate, ...]:
    """Read user prompt templates from a ``.yaml``/``.yml`` or ``.json`` file.

    The file holds either a list of template objects, or a mapping of name to template
    object (where ``name`` may be left out). Fields are those of ``PromptTemplate``; only
    ``name`` and ``prompt`` are required. A missing or unreadable file, bad syntax, an
    unknown or missing field, or a name used twice raises ``VlmserveError``.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise VlmserveError(f"template file not found: {path}") from None
    except UnicodeDecodeError:
        raise VlmserveError(f"template file {path} is not UTF-8 text") from None
    except OSError as exc:
        raise VlmserveError(f"cannot read template file {path}: {exc.strerror}") from None

    data = _parse(path, text)
    check_text(data, f"template file {path}:")  # JSON may spell a lone surrogate
    entries: list[tuple[str, Any]] = []  # (label for errors, raw object)
    if isinstance(data, list):
        entries = [(f"#{i}", item) for i, item in enumerate(data, start=1)]
    elif isinstance(data, dict):
        for key, item in data.items():
            if isinstance(item, dict):
                if "name" in item and item["name"] != key:
                    raise VlmserveError(
                        f"template file {path}: template {key!r} has a different name "
                        f"{item['name']!r}"
                    )
                item = {**item, "name": key}
            entries.append((repr(key), item))
    elif data is not None:
        raise VlmserveError(
            f"template file {path} must hold a list of templates or a mapping of name to "
            "template"
        )
    if not entries:
        raise VlmserveError(f"template file {path} defines no templates")

    templates: list[PromptTemplate] = []
    seen: set[str] = set()
    for label, item in entries:
        if not isinstance(item, dict):
            raise VlmserveError(f"template file {path}: template {label} is not a mapping")
        if isinstance(item.get("name"), str):
            label = repr(item["name"])
        try:
            template = PromptTemplate.model_validate(item)
        except ValidationError as exc:
            raise VlmserveError(
                f"template file {path}: template {label}: {_describe_error(exc)}"
            ) from None
        if template.name in seen:
            raise VlmserveError(
                f"template file {path}: template name {template.name!r} is used twice"
            )
        seen.add(template.name)
        templates.append(template)
    return tuple(templates)
