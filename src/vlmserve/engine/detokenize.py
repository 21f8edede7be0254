"""Token bytes -> text deltas that never split a UTF-8 character and honour stop strings."""

from __future__ import annotations

import codecs
from collections.abc import Callable


class IncrementalDetokenizer:
    """Turns a stream of token byte-pieces into safe text deltas.

    * Bytes of a multi-byte character split across tokens are held back until
      the character is complete (a Chinese character arrives whole); bytes that
      can never form a valid character become U+FFFD.
    * Text that might be the start of a stop string is held back until it is
      clear; on a match, output ends just before the stop string.
    """

    def __init__(self, token_bytes: Callable[[int], bytes], stop: tuple[str, ...] = ()) -> None:
        self._token_bytes = token_bytes
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stop = stop
        self._held = ""  # decoded text not yet emitted (possible stop-string prefix)
        self.stopped = False
        self.text = ""  # everything emitted so far

    def push(self, token: int) -> str:
        """Feed one token; return the text that is now safe to emit (may be '')."""
        if self.stopped:
            return ""
        self._held += self._decoder.decode(self._token_bytes(token))
        return self._release(final=False)

    def flush(self) -> str:
        """End of generation: emit what is held (an incomplete character becomes U+FFFD)."""
        if not self.stopped:
            self._held += self._decoder.decode(b"", final=True)
        return self._release(final=True)

    def _release(self, final: bool) -> str:
        text = self._held
        for stop in self._stop:
            idx = text.find(stop)
            if idx >= 0:
                self.stopped = True
                self._held = ""
                return self._emit(text[:idx])
        keep = 0 if final else self._stop_prefix_len(text)
        self._held = text[len(text) - keep:] if keep else ""
        return self._emit(text[: len(text) - keep])

    def _stop_prefix_len(self, text: str) -> int:
        """Length of the longest suffix of ``text`` that begins some stop string."""
        best = 0
        for stop in self._stop:
            for n in range(min(len(stop) - 1, len(text)), best, -1):
                if stop.startswith(text[-n:]):
                    best = n
                    break
        return best

    def _emit(self, text: str) -> str:
        self.text += text
        return text
