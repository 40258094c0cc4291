"""Handles and model names; later, parsing a mention into a request.

    >>> normalize_handle("@Alice_1")
    'alice_1'
    >>> model_name(["Bob", "@alice"])
    'alice-bob'
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from bot.errors import HandleError

HANDLE_RE = re.compile(r"@?([A-Za-z0-9_]{1,15})")
MAX_HANDLES = 3


def normalize_handle(text: str) -> str:
    """An X handle, lowercased and without '@'. Raises HandleError for anything else.

    This runs before a handle touches a path, a URL or a repo id.
    """
    match = HANDLE_RE.fullmatch(text) if isinstance(text, str) else None
    if not match:
        shown = text if isinstance(text, str) and len(text) <= 40 else f"{str(text)[:40]}…"
        raise HandleError(f"{shown!r} is not an X handle (1 to 15 letters, digits or _, optional leading @)")
    return match.group(1).lower()


def normalize_handles(handles: Iterable[str], max_handles: int = MAX_HANDLES) -> list[str]:
    """Validated, lowercased, de-duplicated handles in the order given (1 to `max_handles`)."""
    result: list[str] = []
    for handle in handles:
        h = normalize_handle(handle)
        if h not in result:
            result.append(h)
    if not result:
        raise HandleError("give at least one handle")
    if len(result) > max_handles:
        raise HandleError(f"at most {max_handles} handles in one model (got {len(result)})")
    return result


def model_name(handles: Iterable[str]) -> str:
    """The repo name: the sorted, lowercased handles joined by '-'."""
    return "-".join(sorted(normalize_handles(handles)))
