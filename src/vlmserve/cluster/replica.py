"""``EngineReplica``: one full vlmserve engine (its own llama.cpp context, slots, image
cache) as a Ray Serve deployment replica.

The ingress calls ``generate`` as a stream (``handle.options(stream=True)``): the
engine's ``TokenDelta``s come back one by one, the last one's stats naming this replica.
Leaving the stream early cancels the call here, which aborts the engine request (the
engine client's iterator is closed). ``affinity`` is read by the router only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

from ray import serve

from vlmserve.cluster.board import BoardReporter, board_actor
from vlmserve.engine.backend import BackendInfo
from vlmserve.engine.factory import create_engine
from vlmserve.errors import VlmserveError
from vlmserve.settings import ServerSettings
from vlmserve.types import FinishReason, Prompt, Request, TokenDelta


class EngineReplica:
    def __init__(self, settings: ServerSettings) -> None:
        context = serve.get_replica_context()
        self.replica = context.replica_id.unique_id
        self._engine = create_engine(settings.to_engine_config())
        self._reporter = BoardReporter(board_actor(context.app_name), self.replica,
                                       self._engine.snapshot)

    async def generate(self, request: Request, affinity: str | None = None,
                       ) -> AsyncIterator[TokenDelta]:
        try:
            async for delta in self._engine.generate(request):
                if delta.finished:
                    delta = self._stamped(delta)
                yield delta
        except VlmserveError as exc:  # refused at submit (queue full): an answer, not a crash
            yield TokenDelta(request.request_id, finish_reason=FinishReason.ERROR, error=exc)

    def _stamped(self, delta: TokenDelta) -> TokenDelta:
        if delta.stats is None:
            return delta
        return dataclasses.replace(delta, stats=dataclasses.replace(delta.stats,
                                                                    replica=self.replica))

    def info(self) -> BackendInfo:
        return self._engine.info

    def count_text_tokens(self, texts: list[str]) -> list[int]:
        """Tokens of each text part (the ingress counts images itself)."""
        return [self._engine.count_prompt_tokens(Prompt((t,))) for t in texts]

    def __del__(self) -> None:
        reporter = getattr(self, "_reporter", None)
        if reporter is not None:
            reporter.stop()
        engine = getattr(self, "_engine", None)
        if engine is not None:
            engine.close()
