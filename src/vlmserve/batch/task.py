"""What a batch asks of every image: the question, the sampling, the optional schema."""

from __future__ import annotations

from dataclasses import dataclass, replace

from vlmserve.batch.schema import StructuredOutput
from vlmserve.chat import ChatMessage
from vlmserve.errors import RequestError
from vlmserve.templates import DEFAULT_TEMPLATE, PromptTemplate, TemplateRegistry
from vlmserve.text_input import check_text
from vlmserve.types import PreparedImage, SamplingParams


@dataclass(frozen=True)
class Task:
    """The same question for every image of a run.

    ``template`` is the template's name as recorded in each line (``None`` when
    ``--prompt`` replaces the default question); ``prompt`` the question asked. A
    line counts as done for a later run (resume, watch) only when both match.
    """

    template: str | None
    prompt: str
    source: PromptTemplate  # the template whose system prompt frames the question
    sampling: SamplingParams
    structured: StructuredOutput | None = None

    @property
    def key(self) -> tuple[str | None, str]:
        return (self.template, self.prompt)

    def messages(self, image: PreparedImage) -> list[ChatMessage]:
        return self.source.to_messages(image, question=self.prompt)


def build_task(registry: TemplateRegistry, template: str | None, prompt: str | None,
               sampling: SamplingParams, schema: dict | None = None,
               max_string: int | None = None, max_items: int | None = None) -> Task:
    """The task for these flags: ``prompt`` replaces the template's question, ``schema``
    (from ``--json-schema``) replaces the template's own ``json_schema``."""
    tmpl = registry.get(template or DEFAULT_TEMPLATE)
    question = tmpl.prompt if prompt is None else prompt
    check_text(question, "the prompt")  # argv bytes that are not UTF-8 arrive as surrogates
    if not question.strip():
        raise RequestError("the prompt is empty")
    schema = schema if schema is not None else tmpl.json_schema
    structured = None
    if schema is not None:
        bounds = {k: v for k, v in (("max_string", max_string), ("max_items", max_items))
                  if v is not None}
        structured = StructuredOutput(schema, **bounds)
        sampling = replace(sampling, grammar=structured.grammar)
    name = template or (DEFAULT_TEMPLATE if prompt is None else None)
    return Task(name, question, tmpl, sampling, structured)
