"""Text patterns shared by the steps: links, @mentions, and lists of names in sentences.

    >>> URL_RE.sub(" ", "look https://t.co/abc here").split()
    ['look', 'here']
    >>> neutralise_mentions("thanks @alice!") == "thanks @\\u2060alice!"
    True
    >>> join_words(["alice", "bob", "carol"])
    'alice, bob and carol'
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import regex

# Links in posts are t.co links: ASCII, so a link ends where ASCII does ("…https://t.co/x今日は" keeps 今日は).
URL_RE = re.compile(r"(?:https?://|www\.)[!-~]+", re.IGNORECASE)
# An "@" (or X's full-width "＠") that starts a handle: what X, the Hub and GitHub turn into a mention.
MENTION_RE = regex.compile(r"([@＠])(?=[A-Za-z0-9_])")
# An invisible character that keeps "@alice" reading the same while no longer being a mention.
WORD_JOINER = "\u2060"


def neutralise_mentions(text: str) -> str:
    """Put a word joiner after every '@' that starts a handle: "@alice" reads the same, but X, the Hub
    and GitHub no longer see a mention, so published text never pings anyone."""
    return MENTION_RE.sub(lambda m: m.group(1) + WORD_JOINER, text)


def join_words(words: Sequence[str], conjunction: str = "and") -> str:
    """'a', 'a and b', 'a, b and c'."""
    words = list(words)
    if len(words) <= 1:
        return "".join(words)
    return f"{', '.join(words[:-1])} {conjunction} {words[-1]}"
