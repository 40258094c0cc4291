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


# A secret is also masked where only its start appears (text cut short after it): this many characters
# of it at least, so that a short common word is never taken for the start of a token.
SECRET_PREFIX_CHARS = 8


def mask(text: str, secrets: Iterable[str]) -> str:
    """Replace each secret in `text`, as written or URL-encoded (as in a logged request), with `***`.

    A secret's start followed by something else, or by the end of the text, is masked as far as it goes:
    text cut to a length (a server's error message, a log line) may end in part of a token.
    Mask first, then cut: the other order would leave a token's start unmasked.

        >>> mask("refused token hf_abcdefghij1234 (HTTP 401)", ["hf_abcdefghij1234"])
        'refused token *** (HTTP 401)'
        >>> mask("refused token hf_abcdefgh", ["hf_abcdefghij1234"])
        'refused token ***'
    """
    for secret in secrets:
        if secret and len(secret) >= 4:
            for form in dict.fromkeys((secret, quote(secret, safe=""))):
                text = _mask_one(text, form)
    return text


def _mask_one(text: str, secret: str) -> str:
    head = secret[:SECRET_PREFIX_CHARS]
    pieces, pos = [], 0
    while (start := text.find(head, pos)) != -1:
        end, matched = start + len(head), len(head)
        while end < len(text) and matched < len(secret) and text[end] == secret[matched]:
            end, matched = end + 1, matched + 1
        pieces += [text[pos:start], "***"]
        pos = end
    return "".join(pieces) + text[pos:]


def clip(text: str, limit: int = 300) -> str:
    """`text` masked, on one line, and cut to `limit` characters with "…": for anything shown or stored."""
    text = " ".join(scrub(str(text)).split())
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
    }

    def __init__(self, handle: str, reason: str):
        self.handle = handle
        self.reason = reason  # "unknown", "suspended" or "protected"
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
