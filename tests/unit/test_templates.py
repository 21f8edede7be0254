"""Built-in prompt templates, the registry, and user template files."""

from __future__ import annotations

import json

import pytest

from vlmserve.chat import ChatMessage, ChatRenderer
from vlmserve.chat_template import QWEN3VL_CHAT_TEMPLATE
from vlmserve.errors import RequestError, VlmserveError
from vlmserve.templates import (
    DEFAULT_TEMPLATE,
    PromptTemplate,
    TemplateRegistry,
    load_template_file,
)
from vlmserve.types import PreparedImage, UserText

BUILTIN_NAMES = ("describe_zh", "describe_en", "structured_zh", "structured_en", "ocr",
                 "grounding", "objects", "safety")


def test_builtins_are_present_with_the_default_chinese_question():
    registry = TemplateRegistry.builtin()
    assert registry.names() == BUILTIN_NAMES
    assert DEFAULT_TEMPLATE == "describe_zh"
    default = registry.get(DEFAULT_TEMPLATE)
    assert default.prompt == "请用中文描述这张图片"
    assert default.language == "zh"
    assert default.system is None
    assert registry.get("describe_en").prompt == "Describe this image in detail."
    for template in registry.all():
        assert template.title and template.description and template.prompt.strip()


def test_structured_templates_ask_four_numbered_questions():
    registry = TemplateRegistry.builtin()
    zh = registry.get("structured_zh").prompt
    for n, topic in enumerate(("主要物体", "空间关系", "时间", "情绪"), start=1):
        assert f"{n}. " in zh and topic in zh
    en = registry.get("structured_en").prompt
    for n, topic in enumerate(("main objects", "relative to each other", "time and place",
                               "mood"), start=1):
        assert f"{n}. " in en and topic in en


def test_safety_template_wants_json_with_a_schema():
    safety = TemplateRegistry.builtin().get("safety")
    assert safety.json_schema is not None
    assert safety.json_schema["required"] == ["helmet", "vest", "violations"]
    assert safety.json_schema["properties"]["helmet"] == {"type": "boolean"}
    assert "JSON" in safety.prompt and "helmet" in safety.prompt and "vest" in safety.prompt
    assert safety.system


def test_builtin_registries_share_no_mutable_objects():
    first = TemplateRegistry.builtin().get("safety").json_schema
    first["required"].append("tampered")
    assert TemplateRegistry.builtin().get("safety").json_schema["required"] == [
        "helmet", "vest", "violations"]


def test_template_renders_through_the_chat_renderer():
    photo = PreparedImage.from_rgb(bytes(12), 2, 2)
    renderer = ChatRenderer(QWEN3VL_CHAT_TEMPLATE)
    registry = TemplateRegistry.builtin()
    messages = registry.get("describe_zh").to_messages(photo)
    assert messages == [ChatMessage.user("请用中文描述这张图片", photo)]
    assert renderer.render(messages).parts == (
        "<|im_start|>user\n", photo, UserText("请用中文描述这张图片"),
        "<|im_end|>\n<|im_start|>assistant\n")
    safety = registry.get("safety").to_messages(photo)
    assert [m.role for m in safety] == ["system", "user"]


def test_templates_are_frozen():
    template = TemplateRegistry.builtin().get("ocr")
    with pytest.raises(Exception):  # noqa: B017 (pydantic's frozen-instance error)
        template.prompt = "changed"


def test_unknown_name_lists_the_available_ones():
    registry = TemplateRegistry.builtin()
    with pytest.raises(RequestError) as info:
        registry.get("poem")
    assert "unknown prompt template 'poem'" in info.value.message
    assert "describe_zh, describe_en" in info.value.message
    assert "poem" not in registry and "ocr" in registry and len(registry) == 8


YAML_LIST = """\
- name: poem
  title: 写一首诗
  prompt: 根据这张图片写一首五言绝句。
  language: zh
- name: describe_zh
  prompt: 请用中文简要描述这张图片。
"""


def test_yaml_list_adds_and_overrides(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(YAML_LIST, encoding="utf-8")
    base = TemplateRegistry.builtin()
    registry = base.with_user_file(path)
    assert registry.names() == (*BUILTIN_NAMES, "poem")
    assert registry.get("poem").title == "写一首诗"
    assert registry.get("describe_zh").prompt == "请用中文简要描述这张图片。"
    assert registry.get("describe_zh").title == "describe_zh"  # title defaults to name
    assert base.get("describe_zh").prompt == "请用中文描述这张图片"  # original untouched


def test_yaml_mapping_form(tmp_path):
    path = tmp_path / "mine.yml"
    path.write_text(
        "count:\n"
        "  prompt: How many people are in this image? Answer with a number.\n"
        "  json_schema: {type: integer}\n"
        "caption:\n"
        "  name: caption\n"
        "  prompt: One-line caption.\n",
        encoding="utf-8",
    )
    templates = load_template_file(path)
    assert [t.name for t in templates] == ["count", "caption"]
    assert templates[0].json_schema == {"type": "integer"}


def test_json_file(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps([{"name": "brief", "prompt": "One sentence, please.",
                                 "system": "Be terse.", "description": "short"}]),
                    encoding="utf-8")
    registry = TemplateRegistry.builtin().with_user_file(str(path))
    brief = registry.get("brief")
    assert (brief.system, brief.description, brief.json_schema) == ("Be terse.", "short", None)
    path.write_text(json.dumps({"brief2": {"prompt": "x"}}), encoding="utf-8")
    assert load_template_file(path)[0].name == "brief2"


@pytest.mark.parametrize(
    ("filename", "content", "fragment"),
    [
        ("t.yaml", "- name: a\n  prompt: [unclosed\n", "is not valid YAML: line"),
        ("t.json", '[{"name": "a", "prompt": "x"},]', "is not valid JSON: line 1"),
        ("t.yaml", "- name: a\n", "missing field 'prompt'"),
        ("t.yaml", "- prompt: x\n", "missing field 'name'"),
        ("t.yaml", "- name: a\n  prompt: x\n  colour: red\n", "unknown field 'colour'"),
        ("t.yaml", "- name: a\n  prompt: '   '\n", "field 'prompt'"),
        ("t.yaml", "- name: bad name!\n  prompt: x\n", "field 'name'"),
        ("t.yaml", "- name: a\n  prompt: x\n- name: a\n  prompt: y\n", "'a' is used twice"),
        ("t.yaml", "a:\n  prompt: x\na:\n  prompt: y\n", "duplicate key 'a'"),
        ("t.json", '{"a": {"prompt": "x"}, "a": {"prompt": "y"}}', "duplicate key 'a'"),
        ("t.yaml", "a:\n  name: b\n  prompt: x\n", "different name 'b'"),
        ("t.yaml", "just a string\n", "must hold a list of templates"),
        ("t.yaml", "", "defines no templates"),
        ("t.yaml", "[]\n", "defines no templates"),
        ("t.yaml", "- just a string\n", "is not a mapping"),
        ("t.yaml", "- name: a\n  prompt: x\n  json_schema: [1]\n", "field 'json_schema'"),
        ("t.yaml", "- name: a\n  prompt: x\n  json_schema: {d: 2024-01-01}\n", "plain JSON"),
        ("t.toml", "name = 'a'\n", "must end in .yaml, .yml or .json"),
    ],
)
def test_bad_files_raise_clear_errors(tmp_path, filename, content, fragment):
    path = tmp_path / filename
    path.write_text(content, encoding="utf-8")
    with pytest.raises(VlmserveError) as info:
        TemplateRegistry.builtin().with_user_file(path)
    assert fragment in info.value.message
    assert "\n" not in info.value.message
    assert not isinstance(info.value, RequestError)  # a configuration problem, not a request


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(VlmserveError, match="template file not found"):
        load_template_file(tmp_path / "nope.yaml")
    with pytest.raises(VlmserveError, match="cannot read template file"):
        load_template_file(tmp_path)  # a directory
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(VlmserveError, match="not UTF-8"):
        load_template_file(binary)


def test_registry_rejects_duplicate_names():
    template = PromptTemplate(name="x", prompt="y")
    with pytest.raises(VlmserveError, match="duplicate"):
        TemplateRegistry([template, template])
