"""The errors a user can cause or meet. The CLI prints them as one line on stderr, never a traceback."""

from __future__ import annotations

import os
from collections.abc import Iterable
from urllib.parse import quote


class UserError(Exception):
    """Something the user can fix: bad input, a missing file, a refused credential. Exit status 1."""

    exit_code = 1


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
)


def mask(text: str, secrets: Iterable[str]) -> str:
    """Replace each secret in `text`, as written or URL-encoded (as in a logged request), with `***`."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***").replace(quote(secret, safe=""), "***")
    return text


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
    """A failure that may pass (network, 5xx, rate limit): the bot retries later."""

    transient = True
