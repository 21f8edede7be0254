"""Capturing llama.cpp / mtmd log lines.

llama-cpp-python's own logger drops ERROR lines when ``verbose=False``, so a
failed load returns NULL with no reason. We install our own callback that keeps
the recent lines in a bounded buffer: load errors then name the real problem,
and ``VLMSERVE_LLAMA_LOG=1`` echoes everything to stderr for debugging.

Some INFO lines carry facts no C function returns (the KV, compute and output
buffer sizes llama.cpp allocated); a capture can be asked to keep INFO lines
matching a pattern too (``keep_info``).

llama.cpp has one log slot per process (``llama_log_set``; mtmd has its own,
``mtmd_helper_log_set``), so several captures (an engine, the quantizer, a second
engine in the equivalence tests) cannot each install a callback: the last one would
steal every line, and closing it would mute the rest. Instead one ``_LogFanOut``
per process is installed in both slots, once, and every open capture registers
with it: each sees every line while it is open, and closing one only unregisters it.
"""

from __future__ import annotations

import collections
import ctypes
import os
import re
import sys
import threading

import llama_cpp
from llama_cpp import mtmd_cpp

GGML_LOG_LEVEL_INFO = 2
GGML_LOG_LEVEL_WARN = 3
GGML_LOG_LEVEL_ERROR = 4
GGML_LOG_LEVEL_CONT = 5


class _LogFanOut:
    """The process's llama.cpp/mtmd log callback, handing each line to every open capture.

    Installed into llama.cpp at the first ``register`` and never replaced or removed:
    the ctypes callback it holds lives as long as the process, so llama.cpp never calls
    into a freed Python object (a log line can come from any thread, at any time).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._captures: tuple[LogCapture, ...] = ()  # replaced whole, read without the lock
        self._last_level = 0
        self._callback = llama_cpp.llama_log_callback(self._on_log)
        self._installed = False

    def register(self, capture: LogCapture) -> None:
        with self._lock:
            if not self._installed:
                llama_cpp.llama_log_set(self._callback, ctypes.c_void_p(0))
                mtmd_cpp.mtmd_helper_log_set(self._callback, ctypes.c_void_p(0))
                self._installed = True
            self._captures = (*self._captures, capture)

    def unregister(self, capture: LogCapture) -> None:
        with self._lock:
            self._captures = tuple(c for c in self._captures if c is not capture)

    def _on_log(self, level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        msg = text.decode("utf-8", errors="replace") if text else ""
        if level == GGML_LOG_LEVEL_CONT:  # a continuation of the previous line
            level = self._last_level
        self._last_level = level
        captures = self._captures
        if any(c.echo for c in captures) or (not captures and _echo_from_env()):
            sys.stderr.write(msg)
        for capture in captures:
            capture._receive(level, msg)


def _echo_from_env() -> bool:
    return os.environ.get("VLMSERVE_LLAMA_LOG") == "1"


# The one log slot llama.cpp has per process, mirrored: module-level on purpose.
_FAN_OUT = _LogFanOut()


class LogCapture:
    """Recent warnings/errors of llama.cpp and mtmd (and chosen INFO lines), while open.

    Every open capture sees every line the process logs; ``clear()`` before a call and
    ``last_error()`` after it give that call's cause.
    """

    def __init__(self, keep: int = 50, echo: bool | None = None,
                 keep_info: re.Pattern[str] | None = None) -> None:
        self._lines: collections.deque[tuple[int, str]] = collections.deque(maxlen=keep)
        # INFO lines matching ``keep_info``; not emptied by clear() (they outlive a load step).
        self._keep_info = keep_info
        self._info: collections.deque[str] = collections.deque(maxlen=keep)
        self.echo = _echo_from_env() if echo is None else echo
        self._open = True
        _FAN_OUT.register(self)

    def _receive(self, level: int, msg: str) -> None:
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
        """Stop receiving lines (idempotent); other captures keep theirs."""
        if self._open:
            self._open = False
            _FAN_OUT.unregister(self)
