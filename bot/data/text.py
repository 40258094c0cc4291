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

# A link with a scheme, where X may make one: only after a space, punctuation or the start (twitter-text's
# validUrlPrecedingChars; "0https://x.org" is plain text), running to the next space or control character.
SCHEME_URL_RE = re.compile(r"(?<![A-Za-z0-9@＠$#＃])(?:https?://|www\.)[^\s<>\"\x00-\x1f\x7f-\x9f]+", re.IGNORECASE)
# Any link at all, wherever it starts, for `unlink`: what must not become a link is looked for widely.
ANY_URL_RE = re.compile(r"(?:https?://|www\.)[^\s<>\"]+", re.IGNORECASE)
TRAILING_PUNCTUATION = ".,:;!?'\")]}"
# What stands in for "." in a link that must not be one: it reads as a dot, and no domain holds it.
DOT_LEADER = "\u2024"
# Anything that may be a domain, for `unlink`: wider than what X links (any letters, no look at what comes
# before), since a dot made plain by mistake costs nothing and a link let through is the harm.
_LABEL = r"[^\s!-,./:-@\[-^`{-~]+"  # anything but spaces and ASCII punctuation (a hyphen and "_" allowed)
MAYBE_DOMAIN_RE = re.compile(_LABEL + r"(?:\." + _LABEL + r")*\.[^\W\d_]{2,63}(?:/[^\s<>\"]*)?")


def _is_under(link: str, prefix: str) -> bool:
    """Whether `link` is `prefix` and one plain name after it ("…/org/" + "alice-bob"): no "..", no more path."""
    if not link.lower().startswith(prefix.lower()):
        return False
    rest = link[len(prefix):]
    return bool(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}", rest)) and ".." not in rest


def link_candidates(text: str) -> list[tuple[int, int]]:
    """(start, end) of every run of `text` that X may make a link of, or part of one, in order and never
    overlapping (runs that overlap are joined): wider than what X links, as `MAYBE_DOMAIN_RE` is.

        >>> text = "see https://huggingface.co/a, or example.com."
        >>> [text[s:e] for s, e in link_candidates(text)]
        ['https://huggingface.co/a', 'example.com']
    """
    spans = sorted((m.start(), m.start() + len(m.group().rstrip(TRAILING_PUNCTUATION)))
                   for pattern in (SCHEME_URL_RE, MAYBE_DOMAIN_RE) for m in pattern.finditer(text))
    joined: list[tuple[int, int]] = []
    for start, end in spans:
        if end <= start:
            continue
        if joined and start < joined[-1][1]:
            joined[-1] = (joined[-1][0], max(end, joined[-1][1]))
        else:
            joined.append((start, end))
    return joined


def unlink(text: str, allowed: Sequence[str] = (), mention: str | None = None) -> str:
    """`text` with every link that does not start with one of `allowed` made plain text: each "." in it
    becomes a dot leader, so it reads the same but names no domain that X or anyone else would link.
    Every candidate counts, overlapping ones too ("0.https://evil.com" is a bare "0.https" and a link), but
    what lies inside an allowed link, and `mention` written as a mention ("@alice.bsky.social": a Bluesky
    handle is a domain; Bluesky links nothing a post does not mark).

        >>> unlink("mine https://huggingface.co/org/a, not evil.com/login", ["https://huggingface.co/org/"])
        'mine https://huggingface.co/org/a, not evil\\u2024com/login'
    """
    kept: list[tuple[int, int]] = []
    for m in ANY_URL_RE.finditer(text):
        link = m.group().rstrip(TRAILING_PUNCTUATION)
        if any(_is_under(link, prefix) for prefix in allowed):
            kept.append((m.start(), m.start() + len(link)))
    if mention:
        for m in re.finditer(r"[@＠](" + re.escape(mention) + r")(?![\w.-])", text, re.IGNORECASE):
            kept.append(m.span(1))
    broken = bytearray(len(text))
    for pattern in (ANY_URL_RE, MAYBE_DOMAIN_RE):
        for m in pattern.finditer(text):
            start, end = m.start(), m.start() + len(m.group().rstrip(TRAILING_PUNCTUATION))
            if end > start and not any(s <= start and end <= e for s, e in kept):
                broken[start:end] = b"\x01" * (end - start)
    return "".join(DOT_LEADER if c == "." and broken[i] else c for i, c in enumerate(text))


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
