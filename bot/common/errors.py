"""The errors a user can cause or meet, and whether trying again can help.

The CLI prints a `UserError` as one line on stderr, never a traceback. Every error also carries its retry
policy, which the bot reads (`retry_policy`): a permanent failure (an unknown account, a refused token,
too few posts) fails the request at once with a reply; a transient one (the network, a 5xx, a rate limit)
is tried again after `max(backoff_seconds(...), retry_after)`.

    >>> retry_policy(TransientError("X is rate limited", retry_after=90.0))
    RetryPolicy(transient=True, retry_after=90.0)
    >>> backoff_seconds(3, base=30.0, cap=3600.0)
    240.0
"""

from __future__ import annotations

import logging
import os
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import quote


class UserError(Exception):
    """Something the user can fix: bad input, a missing file, a refused credential. Exit status 1.

    `transient`: whether trying the same thing again later may work (class default: no).
    `retry_after`: seconds a server asked us to wait before trying again, when it said.
    """

    exit_code = 1
    transient = False
    retry_after: float | None = None


class UsageError(UserError):
    """The command was called wrongly. Exit status 2."""

    exit_code = 2


class ConfigError(UsageError):
    """config.toml has an unknown key or a bad value; the message names the key."""


class HandleError(UsageError):
    """Something that is not an X handle."""


class ArchiveError(UserError):
    """An archive that cannot be read; the message names the file."""


class NotEnoughDataError(UserError):
    """Too few posts left after cleaning; the message gives each user's counts."""


SECRET_ENV_NAMES = (
    "HF_TOKEN",
    "X_BEARER_TOKEN",
    "X_API_KEY",
    "X_API_SECRET",
    "X_ACCESS_TOKEN",
    "X_ACCESS_TOKEN_SECRET",
    "BLUESKY_APP_PASSWORD",
)


# A secret is also masked where only a piece of it appears (its start where a server cut its message, its
# end where a log's window begins inside it): any run of at least this many of its characters, in order, so
# that a short common word is never taken for part of a token.
SECRET_PIECE_CHARS = 8

# Terminal control sequences, drawn from the ECMA-48 grammar: CSI (ESC [ or C1 0x9b) with its parameters,
# OSC/DCS/SOS/PM/APC strings up to their terminator (BEL or ST) or the end of the text, any other escape,
# then single C0 and C1 controls (but newline and tab) and the bidirectional controls that reorder what a
# reader sees (Trojan Source): none of it is text a person wrote to be read.
_CONTROL_RE = re.compile(
    r"(?:\x1b\[|\x9b)[\x30-\x3f]*[\x20-\x2f]*[\x40-\x7e]?"
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[\x20-\x2f]*[\x30-\x7e]?"
    r"|[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)


def inert(text: object, secrets: Iterable[str] = ()) -> str:
    r"""Text from elsewhere (a server's answer, a job's log, a display name, an error), made safe to log,
    store and print: terminal control sequences dropped, secrets masked. The one function every remote
    text passes at the edge, before anything else is done with it.

        >>> inert("\x1b]0;pwned\x07done \x1b[31mred\x1b[0m \x9b2J")
        'done red '

    Newlines and tabs stay (a log keeps its lines); a carriage return goes (it would let a line overwrite
    the one before it on a terminal). Masking runs on the whole text, so a token split over two lines is
    found too: see `mask`. `secrets`: more to mask besides those of the environment and the session.
    """
    text = _CONTROL_RE.sub("", str(text).replace("\r\n", "\n"))
    return mask_known(mask(scrub(text), secrets))


def mask(text: str, secrets: Iterable[str]) -> str:
    r"""Replace each secret in `text`, as written or URL-encoded (as in a logged request), with `***`.

    A piece of a secret is masked too, wherever it stands: text cut to a length (a server's error message, a
    log's last lines) may begin or end inside a token, and a log may break a token over two lines (the line
    break is kept, each side masked). Mask first, then cut: the other order would leave a piece unmasked.

        >>> mask("refused token hf_abcdefghij1234 (HTTP 401)", ["hf_abcdefghij1234"])
        'refused token *** (HTTP 401)'
        >>> mask("refused token hf_abcdefgh", ["hf_abcdefghij1234"])
        'refused token ***'
        >>> mask("token hf_abcdef\nghij1234 in the log", ["hf_abcdefghij1234"])
        'token ***\n*** in the log'
    """
    for secret in secrets:
        if secret and len(secret) >= 4:
            for form in dict.fromkeys((secret, quote(secret, safe=""))):
                text = _mask_one(text, form)
    return text


def _mask_one(text: str, secret: str) -> str:
    if len(secret) < SECRET_PIECE_CHARS:  # too short for pieces to mean anything: whole occurrences only
        return text.replace(secret, "***")
    # Where the text holds a run of the secret's characters: line breaks inside a run are skipped over (a log
    # that broke the token), and every run at least SECRET_PIECE_CHARS long is masked.
    chars = [(i, c) for i, c in enumerate(text) if c not in "\r\n"]
    flat = "".join(c for _, c in chars)
    pieces = {secret[i:i + SECRET_PIECE_CHARS] for i in range(len(secret) - SECRET_PIECE_CHARS + 1)}
    if not any(piece in flat for piece in pieces):  # the common case, at the speed of `in`
        return text
    covered = bytearray(len(flat))
    start = 0
    while start <= len(flat) - SECRET_PIECE_CHARS:
        if flat[start:start + SECRET_PIECE_CHARS] in pieces:
            covered[start:start + SECRET_PIECE_CHARS] = b"\x01" * SECRET_PIECE_CHARS
        start += 1
    if not any(covered):
        return text
    hidden = {chars[k][0] for k in range(len(flat)) if covered[k]}
    out, masking = [], False
    for i, c in enumerate(text):
        if i in hidden:
            if not masking:
                out.append("***")
                masking = True
        elif c in "\r\n" and masking:
            out.append(c)  # the line break stays; the run goes on after it
            masking = bool(i + 1 < len(text) and i + 1 in hidden)
            if masking:
                out.append("***")
        else:
            out.append(c)
            masking = False
    return "".join(out)


def clip(text: str, limit: int = 300, secrets: Iterable[str] = ()) -> str:
    """`text` made inert (see `inert`, which masks `secrets` too), on one line, and cut to `limit` characters
    with "…": for anything shown or stored. Masked before it is cut, so no piece of a secret is left at the cut."""
    text = " ".join(inert(text, secrets).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def scrub(text: str, environ: dict[str, str] | None = None) -> str:
    """Replace every secret from the environment found in `text` with `***`."""
    env = os.environ if environ is None else environ
    return mask(text, (env.get(name, "") for name in SECRET_ENV_NAMES))


class AccountError(UserError):
    """An account that cannot be modelled: unknown, suspended or protected. Permanent: never retried."""

    MESSAGES = {
        "unknown": "@{handle} does not exist",
        "suspended": "@{handle} is suspended",
        "protected": "@{handle} has protected posts, which are never downloaded",
        "changed": "@{handle} names another account now than when it was looked up",
    }

    def __init__(self, handle: str, reason: str):
        self.handle = handle
        self.reason = reason  # "unknown", "suspended", "protected" or "changed"
        super().__init__(self.MESSAGES.get(reason, "@{handle}: " + reason).format(handle=handle))


class TransientError(UserError):
    """A failure that may pass (network, 5xx, rate limit): the bot retries later, not before `retry_after`."""

    transient = True

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class RetryPolicy:
    transient: bool
    retry_after: float | None = None


def check_base_url(url: str | None, variable: str, example: str) -> str | None:
    """A server's base URL from the environment variable `variable`, without a trailing "/"; None when unset.
    Anything else than http(s)://host[:port][/path] is a one-line UsageError."""
    from urllib.parse import urlsplit

    if not url:
        return None
    url = url.rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise UsageError(f"{variable}={url!r} is not a base URL like {example}")
    return url


def retry_policy(error: BaseException) -> RetryPolicy:
    """Whether trying again may help, and the least wait a server asked for.

    Our own errors say so themselves. Anything else (a bug, a full disk, a killed process) is treated as
    passing: it is retried up to `[bot] max_attempts`, then the request fails with a reply.
    """
    if isinstance(error, UserError):
        return RetryPolicy(bool(error.transient), error.retry_after)
    return RetryPolicy(True)


def backoff_seconds(attempt: int, base: float, cap: float, jitter: bool = False) -> float:
    """The wait before retry number `attempt + 1`: `base` doubling with each attempt, at most `cap`.

    With `jitter`, a random wait between half of that and all of it, so that many clients failing
    together do not all come back at the same moment.
    """
    ceiling = min(cap, base * 2 ** attempt)
    return random.uniform(ceiling / 2, ceiling) if jitter else ceiling


class _SecretFilter(logging.Filter):
    """Masks the secrets it knows in every record of the loggers it is added to."""

    def __init__(self):
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            message = record.getMessage()
            masked = mask(message, self.secrets)
            if masked != message:
                record.msg, record.args = masked, None
        return True


_SECRET_FILTER = _SecretFilter()


def hide_in_logs(library_loggers: Iterable[str], values: Iterable[str]) -> None:
    """Mask `values` (credentials, session tokens) in every record of these libraries' loggers.

    A logger's filters apply only to its own records, so each module's logger of those libraries gets
    the filter; the HTTP libraries log headers and parameters at DEBUG level.
    """
    _SECRET_FILTER.secrets.update(v for v in values if v)
    prefixes = set(library_loggers)
    for name in list(logging.root.manager.loggerDict):
        if name.split(".")[0] in prefixes or name.startswith("bot."):
            logger = logging.getLogger(name)
            if _SECRET_FILTER not in logger.filters:
                logger.addFilter(_SECRET_FILTER)


def mask_known(text: str) -> str:
    """`text` with every secret given to `hide_in_logs` masked (session tokens, which no variable names)."""
    return mask(text, _SECRET_FILTER.secrets)
