"""Which images a results file already covers, for ``--resume`` and ``watch``.

A record is keyed by its task (template, prompt) and by two image keys: the sha256
of the file's bytes (known without decoding, so resuming a large folder mostly skips
the decode) and the content hash of the decoded pixels (the same picture re-encoded,
renamed or moved still matches). Lines with an error count as done too: re-running a
broken file gives the same error; delete those lines to retry them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

Key = tuple[str | None, str, str]  # template, prompt, "f:<file sha256>" or "c:<content hash>"


def image_keys(file_sha256: str | None, content_hash: str | None) -> list[str]:
    keys = [f"f:{file_sha256}"] if file_sha256 else []
    return keys + ([f"c:{content_hash}"] if content_hash else [])


class DoneIndex:
    """(task, image key) -> the paths whose lines have it."""

    def __init__(self, records: Iterable[dict[str, Any]] = ()) -> None:
        self._paths: dict[Key, set[str]] = {}
        for record in records:
            self.add(record)

    def add(self, record: dict[str, Any]) -> None:
        task = (record.get("template"), str(record.get("prompt") or ""))
        for key in image_keys(record.get("file_sha256"), record.get("content_hash")):
            self._paths.setdefault((*task, key), set()).add(str(record.get("path")))

    def paths(self, task: tuple[str | None, str], file_sha256: str | None,
              content_hash: str | None = None) -> set[str]:
        """The paths of the lines that already answer ``task`` for this image."""
        found: set[str] = set()
        for key in image_keys(file_sha256, content_hash):
            found |= self._paths.get((*task, key), set())
        return found

    def covers(self, task: tuple[str | None, str], path: str, file_sha256: str | None,
               content_hash: str | None, current_paths: set[str] | frozenset[str]) -> bool:
        """Resume rule: done if this path has a line for this image, or if the lines for
        this image name paths that are not among this run's inputs (the folder was moved
        or renamed). Two copies of one picture in one run each keep their own line."""
        paths = self.paths(task, file_sha256, content_hash)
        return path in paths or bool(paths and not paths & current_paths)
