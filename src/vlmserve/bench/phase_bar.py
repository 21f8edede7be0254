"""The benchmark's progress on stderr: one tqdm bar per phase, or nothing.

A benchmark runs in phases (loading, vlmserve's requests, the baseline's,
bandwidth): each phase ``start``s a bar sized by its planned requests, and
``note`` names what is happening between them. Unlike batch work's bar
(``batch.progress.BatchProgress``) it counts requests, not images, and is driven
from one thread.
"""

from __future__ import annotations

import sys


class PhaseBar:
    """A tqdm bar on stderr (or nothing); ``step(label)`` advances it by one."""

    def __init__(self, enabled: bool) -> None:
        self._bar = None
        self.enabled = enabled

    def start(self, total: int, desc: str) -> None:
        self.close()
        if self.enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit="req", file=sys.stderr,
                             dynamic_ncols=True, leave=False)

    def step(self, label: str = "") -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(label, refresh=False)
            self._bar.update(1)

    def note(self, text: str) -> None:
        if self._bar is not None:
            self._bar.set_description_str(text)
        elif self.enabled:
            print(f"vlmserve bench: {text}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
