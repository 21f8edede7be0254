"""Ctrl-C and SIGTERM as a flag the main thread polls, never an exception mid-write.

The first signal only sets ``StopFlag.signum``; the main loop sees it within its
polling interval and stops the run cleanly. A second signal exits at once
(``os._exit``): the results file may then end in a partial line, which
``--resume`` repairs.
"""

from __future__ import annotations

import os
import signal
from types import FrameType


class StopFlag:
    def __init__(self) -> None:
        self.signum: int | None = None
        self._saved: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            os._exit(128 + signum)
        self.signum = signum

    def __enter__(self) -> StopFlag:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._saved[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)
        self._saved.clear()

    @property
    def set(self) -> bool:
        return self.signum is not None
