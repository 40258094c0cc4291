"""Shared fixtures. Loopback servers and synthetic archives live beside this file."""

from __future__ import annotations

import os

# huggingface_hub reads these once, at import: keep every test off the network and out of the user's cache.
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest

SAMPLE_ARCHIVE = os.path.join(os.path.dirname(__file__), "..", "bot", "samples", "sample_archive.zip")


@pytest.fixture
def sample_archive() -> str:
    return os.path.abspath(SAMPLE_ARCHIVE)
