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

Tool calls, the ``tool`` role and video are left out: vlmserve sends none.

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
QWEN3VL_CHAT_TEMPLATE = r"""{#- Qwen3-VL chat format (ChatML with vision placeholders), written for vlmserve. -#}
{%- if messages[0].role == 'system' -%}
    {{- '<|im_start|>system\n' -}}
    {%- if messages[0].content is string -%}
        {{- messages[0].content -}}
    {%- else -%}
        {%- for part in messages[0].content -%}
            {%- if 'text' in part -%}
                {{- part.text -}}
            {%- endif -%}
        {%- endfor -%}
    {%- endif -%}
    {{- '<|im_end|>\n' -}}
{%- endif -%}
{%- set vision = namespace(images=0) -%}
{%- for message in messages -%}
    {%- if message.role == 'user' or message.role == 'assistant' -%}
        {{- '<|im_start|>' + message.role + '\n' -}}
        {%- if message.content is string -%}
            {{- message.content -}}
        {%- else -%}
            {%- for part in message.content -%}
                {%- if message.role == 'user' and (part.type == 'image' or 'image' in part or 'image_url' in part) -%}
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
        {{- '<|im_end|>\n' -}}
    {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- '<|im_start|>assistant\n' -}}
{%- endif -%}
"""
