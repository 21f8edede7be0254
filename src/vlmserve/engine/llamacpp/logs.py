"""Capturing llama.cpp / mtmd log lines.

llama-cpp-python's own logger drops ERROR lines when ``verbose=False``, so a
failed load returns NULL with no reason. We install our own callback that keeps
the recent lines in a bounded buffer: load errors then name the real problem,
and ``VLMSERVE_LLAMA_LOG=1`` echoes everything to stderr for debugging.

Some INFO lines carry facts no C function returns (the KV, compute and output
buffer sizes llama.cpp allocated); a capture can be asked to keep INFO lines
matching a pattern too (``keep_info``).
"""

from __future__ import annotations

import collections
import ctypes
import os
import re
import sys

import llama_cpp
from llama_cpp import mtmd_cpp

GGML_LOG_LEVEL_INFO = 2
GGML_LOG_LEVEL_WARN = 3
GGML_LOG_LEVEL_ERROR = 4
GGML_LOG_LEVEL_CONT = 5


# A do-nothing callback that lives as long as the process: installed when a
# capture is closed, so llama.cpp never calls into a freed Python object.
def _silent(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    return None


_SILENT_CALLBACK = llama_cpp.llama_log_callback(_silent)


class LogCapture:
    """Installs a log callback for llama.cpp and mtmd; remembers recent warnings/errors."""

    def __init__(self, keep: int = 50, echo: bool | None = None,
                 keep_info: re.Pattern[str] | None = None) -> None:
        self._lines: collections.deque[tuple[int, str]] = collections.deque(maxlen=keep)
        # INFO lines matching ``keep_info``; not emptied by clear() (they outlive a load step).
        self._keep_info = keep_info
        self._info: collections.deque[str] = collections.deque(maxlen=keep)
        self._last_level = 0
        self._echo = os.environ.get("VLMSERVE_LLAMA_LOG") == "1" if echo is None else echo
        # Keep a reference: ctypes must not free the callback while C holds it.
        self._callback = llama_cpp.llama_log_callback(self._on_log)
        llama_cpp.llama_log_set(self._callback, ctypes.c_void_p(0))
        mtmd_cpp.mtmd_helper_log_set(self._callback, ctypes.c_void_p(0))

    def _on_log(self, level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        msg = text.decode("utf-8", errors="replace") if text else ""
        if self._echo:
            sys.stderr.write(msg)
        if level == GGML_LOG_LEVEL_CONT:
            level = self._last_level
        self._last_level = level
        if level >= GGML_LOG_LEVEL_WARN and msg.strip():
            self._lines.append((level, msg.strip()))
        elif (level == GGML_LOG_LEVEL_INFO and self._keep_info is not None
              and self._keep_info.search(msg)):
            self._info.append(msg.strip())

    def info_lines(self) -> list[str]:
        """The INFO lines kept because they matched ``keep_info``, oldest first."""
        return list(self._info)

    def clear(self) -> None:
        self._lines.clear()

    def last_error(self) -> str | None:
        """The most telling warning/error since ``clear()``, without its function prefix.

        llama.cpp logs the specific cause first ("invalid magic characters",
        "tensor ... not within the file bounds") and generic "failed to load"
        lines after it, so the first line is the one a user needs.
        """
        if not self._lines:
            return None
        errors = [line for level, line in self._lines if level >= GGML_LOG_LEVEL_ERROR]
        line = (errors[0] if errors else self._lines[0][1]).splitlines()[0]
        for prefix in ("error loading model: ", "error: "):
            if prefix in line:
                line = line.split(prefix, 1)[1]
        head, sep, tail = line.partition(": ")
        return tail if sep and " " not in head else line

    def close(self) -> None:
        llama_cpp.llama_log_set(_SILENT_CALLBACK, ctypes.c_void_p(0))
        mtmd_cpp.mtmd_helper_log_set(_SILENT_CALLBACK, ctypes.c_void_p(0))
