"""The Qwen3-VL chat template, as Jinja source.

``QWEN3VL_CHAT_TEMPLATE`` renders system/user/assistant conversations exactly as
Qwen3-VL-8B-Instruct's own ``chat_template`` does for those roles:

* ``<|im_start|>ROLE\\n ... <|im_end|>\\n`` around every message;
* a system block only when ``messages[0]`` is a system message (Qwen3-VL has no
  default system prompt); system messages elsewhere are not rendered;
* ``content`` is a string or a list of parts: an image part (``type == "image"``
  or an ``image`` / ``image_url`` key) in a user message becomes
  ``IMAGE_PLACEHOLDER``; a text part becomes its text; assistant and system
  messages render text parts only;
* ``add_vision_id`` (off by default) prefixes each image with ``Picture N: ``;
* ``add_generation_prompt`` appends ``<|im_start|>assistant\\n``.

* ``tools`` (OpenAI tool dicts) become the official ``# Tools`` system block (after the
  system prompt, if any); an assistant's ``tool_calls`` become
  ``<tool_call>\n{"name": ..., "arguments": ...}\n</tool_call>`` lines; consecutive
  ``tool`` messages share one user block, each in ``<tool_response>`` tags, images
  allowed (as the official template does).

Video is left out: vlmserve sends none.

It is written with explicit whitespace control (``{%-``/``-%}``) everywhere, so
it renders the same with or without ``trim_blocks``/``lstrip_blocks`` and stays
within the Jinja subset that llama.cpp's own template engine understands (it is
embedded in the demo model's GGUF as ``tokenizer.chat_template``, and used as
the fallback when a GGUF carries no template).
"""

from __future__ import annotations

# What the template emits for one image. llama.cpp's mtmd wraps every image in
# <|vision_start|>...<|vision_end|> itself, so the renderer replaces this whole
# string (markers included) by the image.
IMAGE_PLACEHOLDER = "<|vision_start|><|image_pad|><|vision_end|>"

# Raw string: the "\n" below are Jinja string-literal escapes, not Python ones.
QWEN3VL_CHAT_TEMPLATE = r"""{#- Qwen3-VL chat format (ChatML with vision placeholders and Qwen's tool calls), written for vlmserve. -#}
{%- macro render_content(content, images_allowed) -%}
    {%- if content is string -%}
        {{- content -}}
    {%- elif content -%}
        {%- for part in content -%}
            {%- if images_allowed and (part.type == 'image' or 'image' in part or 'image_url' in part) -%}
                {%- set vision.images = vision.images + 1 -%}
                {%- if add_vision_id -%}
                    {{- 'Picture ' + vision.images|string + ': ' -}}
                {%- endif -%}
                {{- '<|vision_start|><|image_pad|><|vision_end|>' -}}
            {%- elif 'text' in part -%}
                {{- part.text -}}
            {%- endif -%}
        {%- endfor -%}
    {%- endif -%}
{%- endmacro -%}
{%- set vision = namespace(images=0) -%}
{%- if tools -%}
    {{- '<|im_start|>system\n' -}}
    {%- if messages[0].role == 'system' -%}
        {{- render_content(messages[0].content, false) -}}
        {{- '\n\n' -}}
    {%- endif -%}
    {{- '# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>' -}}
    {%- for tool in tools -%}
        {{- '\n' -}}
        {{- tool | tojson -}}
    {%- endfor -%}
    {{- '\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n' -}}
{%- elif messages[0].role == 'system' -%}
    {{- '<|im_start|>system\n' -}}
    {{- render_content(messages[0].content, false) -}}
    {{- '<|im_end|>\n' -}}
{%- endif -%}
{%- for message in messages -%}
    {%- if message.role == 'user' -%}
        {{- '<|im_start|>user\n' -}}
        {{- render_content(message.content, true) -}}
        {{- '<|im_end|>\n' -}}
    {%- elif message.role == 'assistant' -%}
        {{- '<|im_start|>assistant\n' -}}
        {{- render_content(message.content, false) -}}
        {%- if message.tool_calls -%}
            {%- for tool_call in message.tool_calls -%}
                {%- if (loop.first and message.content) or (not loop.first) -%}
                    {{- '\n' -}}
                {%- endif -%}
                {%- if tool_call.function -%}
                    {%- set tool_call = tool_call.function -%}
                {%- endif -%}
                {{- '<tool_call>\n{"name": "' -}}
                {{- tool_call.name -}}
                {{- '", "arguments": ' -}}
                {%- if tool_call.arguments is string -%}
                    {{- tool_call.arguments -}}
                {%- else -%}
                    {{- tool_call.arguments | tojson -}}
                {%- endif -%}
                {{- '}\n</tool_call>' -}}
            {%- endfor -%}
        {%- endif -%}
        {{- '<|im_end|>\n' -}}
    {%- elif message.role == 'tool' -%}
        {%- if loop.first or messages[loop.index0 - 1].role != 'tool' -%}
            {{- '<|im_start|>user' -}}
        {%- endif -%}
        {{- '\n<tool_response>\n' -}}
        {{- render_content(message.content, true) -}}
        {{- '\n</tool_response>' -}}
        {%- if loop.last or messages[loop.index0 + 1].role != 'tool' -%}
            {{- '<|im_end|>\n' -}}
        {%- endif -%}
    {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- '<|im_start|>assistant\n' -}}
{%- endif -%}
"""
