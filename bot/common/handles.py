"""Handles on the networks the bot reads, and the model names made from them.

    >>> normalize_handle("@Alice_1")                     # X: 1 to 15 letters, digits or _
    'alice_1'
    >>> normalize_handle("@Alice.bsky.social")           # Bluesky: a domain name
    'alice.bsky.social'
    >>> handle_from_input("https://x.com/Alice_1")       # as copied from a browser
    'alice_1'
    >>> handle_from_input("bsky.app/profile/alice.bsky.social")
    'alice.bsky.social'
    >>> model_name(["Bob", "@alice"])
    'alice-bob'
    >>> model_name(["my-name.bsky.social", "zed.bsky.social"])
    'my_name.bsky.social-zed.bsky.social'

A model's name is its people's handles, sorted and joined by "-". X handles have letters, digits and
"_" only. A Bluesky handle is a domain: it always has a dot, which an X handle never has, so the two
networks' names never collide; its "-" become "_" (a domain never holds "_"), so a name splits back
into its handles at each "-" and `huggingtweets delete` matches whole handles, never a part of one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from bot.common.errors import HandleError

HANDLE_RE = re.compile(r"@?([A-Za-z0-9_]{1,15})")  # an X handle
# A Bluesky handle: a domain name (the atproto handle syntax), lowercased. These top-level domains are
# never handles ("handle.invalid" is what Bluesky shows for a handle that no longer checks out).
BLUESKY_HANDLE_RE = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?")
MAX_BLUESKY_HANDLE_LENGTH = 253
NOT_HANDLE_TLDS = {"alt", "arpa", "example", "internal", "invalid", "local", "localhost", "onion"}
MAX_HANDLES = 3
# A profile's address as a browser shows it: on X (x.com, twitter.com, with or without www. or mobile.)
# the handle is the path's one part; on Bluesky (bsky.app) it follows /profile/. A trailing "/", a query
# or a fragment (as a copied address often carries) is allowed; any other path is not a profile.
PROFILE_URL_RE = re.compile(
    r"(?:https?://)?(?:(?:www\.|mobile\.)?(?:x|twitter)\.com/(?P<x>[^/?#\s]+)"
    r"|(?:www\.)?bsky\.app/profile/(?P<bluesky>[^/?#\s]+))/?(?:[?#]\S*)?", re.IGNORECASE)
HANDLE_FORMS = ("on X, 1 to 15 letters, digits or _ (alice_1, @alice_1 or x.com/alice_1); on Bluesky, a "
                "domain name (alice.bsky.social or bsky.app/profile/alice.bsky.social)")
MAX_NAME_LENGTH = 96  # the Hub's longest repo name


def is_account_entry(entry: str) -> bool:
    """Whether a blocklist entry names an account by id (`x:123456`, a Bluesky DID) rather than a handle."""
    return entry.startswith(("x:", "did:"))


def network_of(handle: str) -> str:
    """"bluesky" for a domain handle, "x" otherwise."""
    return "bluesky" if "." in handle else "x"


def normalize_handle(text: str, network: str | None = None) -> str:
    """A handle, lowercased and without '@'. Raises HandleError for anything else.

    `network` ("x" or "bluesky") says which kind is expected; None takes either, by its shape. This runs
    before a handle touches a path, a URL or a repo id.
    """
    raw = text if isinstance(text, str) else ""
    wanted = network or ("bluesky" if "." in raw else "x")
    if wanted == "bluesky":
        handle = re.sub(r"^[@＠]", "", raw).lower()
        tld = handle.rsplit(".", 1)[-1]
        if BLUESKY_HANDLE_RE.fullmatch(handle) and len(handle) <= MAX_BLUESKY_HANDLE_LENGTH and tld not in NOT_HANDLE_TLDS:
            return handle
        problem = "is not a Bluesky handle (a domain name such as alice.bsky.social)"
    else:
        match = HANDLE_RE.fullmatch(raw)
        if match:
            return match.group(1).lower()
        problem = "is not an X handle (1 to 15 letters, digits or _, optional leading @)"
    shown = text if isinstance(text, str) and len(text) <= 40 else f"{str(text)[:40]}…"
    raise HandleError(f"{shown!r} {problem}")


def handle_from_input(text: str) -> str:
    """A handle as a person gives it: 'alice', '@alice', or a profile's address copied from a browser
    (https://x.com/alice, twitter.com/alice, https://bsky.app/profile/alice.bsky.social). Lowercased,
    without '@'. Anything else raises HandleError saying what a handle looks like on each network.

    For what people type (the command line); names read from files and servers go through
    `normalize_handle`, which takes a handle's own spelling only.
    """
    raw = text.strip() if isinstance(text, str) else ""
    link = PROFILE_URL_RE.fullmatch(raw)
    network = None
    if link:
        network = "x" if link.group("x") is not None else "bluesky"
        raw = link.group(network)
    try:
        return normalize_handle(raw, network)
    except HandleError:
        shown = text if isinstance(text, str) and len(text) <= 60 else f"{str(text)[:60]}…"
        raise HandleError(f"{shown!r} is not a handle: {HANDLE_FORMS}") from None


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


def name_part(handle: str) -> str:
    """The part of a model's name that stands for one handle."""
    handle = normalize_handle(handle)
    return handle.replace("-", "_") if network_of(handle) == "bluesky" else handle


def handles_of(name: str) -> list[str]:
    """The handles a model's name was made of (the inverse of `model_name`); HandleError for a name the
    bot would never make.

        >>> handles_of("alice-my_name.bsky.social")
        ['alice', 'my-name.bsky.social']
    """
    handles = [part.replace("_", "-") if "." in part else part for part in name.split("-")]
    if model_name(handles) != name:
        raise HandleError(f"{name!r} is not a model name made of handles (sorted, lowercased, joined by '-')")
    return handles


def model_name(handles: Iterable[str]) -> str:
    """The repo name: the handles' name parts, sorted, joined by '-'."""
    name = "-".join(sorted(name_part(h) for h in normalize_handles(handles)))
    if len(name) > MAX_NAME_LENGTH:
        raise HandleError(f"these handles make a model name of {len(name)} characters; the Hub takes "
                          f"{MAX_NAME_LENGTH} at most (ask for fewer people)")
    return name
