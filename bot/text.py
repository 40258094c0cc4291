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
from collections.abc import Callable, Sequence

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


ELLIPSIS = "…"


def shorten_keeping_links(units: list[tuple[str, bool]], fits: Callable[[str], bool]) -> str:
    """The longest start of `units` that `fits`, then "…" and every link that was cut off.

    `units` are (text, is_link) pairs: graphemes of prose and whole links, so a link is never cut.
    The cut goes back to a space when one is within 20 graphemes. When even the links alone do not
    fit, links are dropped from the end.
    """

    def render(keep: int) -> str:
        head = "".join(u for u, _ in units[:keep]).rstrip()
        links = [u for u, is_link in units[keep:] if is_link]
        return " ".join([head + ELLIPSIS] + links)

    lo, hi = 0, len(units)  # the most units that fit: the length grows with `keep`, so bisect
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(render(mid)) else (lo, mid - 1)
    keep = lo
    # Cut at a space when one is close, rather than in the middle of a word.
    if 0 < keep < len(units) and not units[keep][0].isspace() and not units[keep - 1][0].isspace():
        for back in range(keep - 1, max(keep - 20, 0), -1):
            if units[back][0].isspace():
                keep = back
                break
    result = render(keep) if fits(render(keep)) else render(lo)
    while not fits(result) and " " in result:  # only links left, and too many of them
        result = result.rsplit(" ", 1)[0]
    return result


def join_words(words: Sequence[str], conjunction: str = "and") -> str:
    """'a', 'a and b', 'a, b and c'."""
    words = list(words)
    if len(words) <= 1:
        return "".join(words)
    return f"{', '.join(words[:-1])} {conjunction} {words[-1]}"
