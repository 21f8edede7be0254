"""The progress bar on stderr (tqdm): images done, images/s, ETA, errors, skipped."""

from __future__ import annotations

import sys
import threading

from tqdm import tqdm


class BatchProgress:
    """Thread-safe counters behind a tqdm bar. ``total=None`` for watch mode (no ETA).

    ``enabled=None`` shows the bar only when stderr is a terminal.
    """

    def __init__(self, total: int | None, enabled: bool | None = None,
                 desc: str = "images") -> None:
        self._lock = threading.Lock()
        self.done = self.errors = self.skipped = 0
        self._bar = tqdm(total=total, desc=desc, unit="img", file=sys.stderr,
                         disable=(not enabled) if enabled is not None else None,
                         dynamic_ncols=True, smoothing=0.1)

    def finished(self, error: bool) -> None:
        with self._lock:
            self.done += 1
            self.errors += bool(error)
            if error:
                self._bar.set_postfix(self._postfix(), refresh=False)
            self._bar.update(1)

    def skip(self) -> None:
        """An image already done: it leaves the total, so the rate and ETA stay honest."""
        with self._lock:
            self.skipped += 1
            if self._bar.total:
                self._bar.total -= 1
            self._bar.set_postfix(self._postfix(), refresh=False)
            self._bar.refresh()

    def _postfix(self) -> dict[str, int]:
        return {k: v for k, v in (("errors", self.errors), ("skipped", self.skipped)) if v}

    def close(self) -> None:
        with self._lock:
            self._bar.close()
