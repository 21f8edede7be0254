"""Text from outside (request bodies, the page, template files, command lines) checked as
Unicode once, where it enters.

JSON may spell a lone surrogate (``"\\ud800"``) and a command line may carry bytes that
are not UTF-8 (Python keeps them as lone surrogates too). Such a string is no text: it
cannot be encoded to UTF-8, so llama.cpp's tokenizer, a log line or a session would fail
on it far from where it came in. Refused at the door, it is a 400 that names the field.
"""

from __future__ import annotations

from typing import Any

from vlmserve.errors import RequestError


class InvalidTextError(RequestError):
    """A string that is not valid Unicode (a lone surrogate)."""

    code = "invalid_text"


def _problem(text: str) -> str | None:
    """Why ``text`` is not valid Unicode, or None when it is."""
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return (f"a lone surrogate U+{ord(text[exc.start]):04X} at character {exc.start}; "
                "send UTF-8 text")
    return None


def find_invalid_text(value: Any, path: str = "") -> tuple[str, str] | None:
    """(path, problem) of the first string in a JSON-like value (object keys included)
    that is not valid Unicode; None when all are. Paths read like ``messages.0.content``."""
    stack: list[tuple[str, Any]] = [(path, value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            problem = _problem(item)
            if problem:
                return where, problem
        elif isinstance(item, dict):
            for key, child in reversed(list(item.items())):
                child_path = f"{where}.{key}" if where else str(key)
                if isinstance(key, str) and (problem := _problem(key)):
                    return where or "(body)", f"a key holds {problem}"
                stack.append((child_path, child))
        elif isinstance(item, (list, tuple)):
            stack.extend((f"{where}.{i}" if where else str(i), child)
                         for i, child in reversed(list(enumerate(item))))
    return None


def check_text(value: Any, what: str = "") -> None:
    """Raise ``InvalidTextError`` naming the field when any string in ``value`` is not
    valid Unicode. ``what`` prefixes the path (``"the question"``, ``"template file x"``)."""
    found = find_invalid_text(value)
    if found is None:
        return
    where, problem = found
    name = " ".join(p for p in (what, where) if p) or "the text"
    raise InvalidTextError(f"{name} is not valid Unicode: {problem}", param=where or None)
