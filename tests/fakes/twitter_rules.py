"""X's own rules for what a post links and how long it is: twitter-text v3, through its Python port.

    >>> from twitter_rules import extract_urls
    >>> extract_urls("see evil.com or https://x.org/a")
    ['evil.com', 'https://x.org/a']

The port reads one data file through `pkg_resources`, which setuptools 81 removed; when it is missing, this
module stands in for that one call (`resource_string`) before the port is imported.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

try:
    import pkg_resources  # noqa: F401 - present with setuptools < 81
except ImportError:
    shim = types.ModuleType("pkg_resources")
    shim.resource_string = lambda module, name: (Path(sys.modules[module].__file__).parent / name).read_bytes()
    sys.modules["pkg_resources"] = shim

from twitter_text import extract_urls_with_indices, parse_tweet  # noqa: E402,F401 - the indices for X's entities


def extract_urls(text: str) -> list[str]:
    return [found["url"] for found in extract_urls_with_indices(text)]


def weighted_length(text: str) -> int:
    return parse_tweet(text).weightedLength
