"""Shared fixtures. The tests mirror the packages of bot/ (tests/sources/ for bot/sources/, ...); the
loopback servers and runners they share live in tests/fakes/, importable by name (`from fake_x import FakeX`).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "fakes"))

# huggingface_hub reads these once, at import: keep every test off the network and out of the user's cache.
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One tiny base model for every run (pretraining it takes about half a minute), built in the checkout's
# .test-cache/ rather than the user's cache, and kept between runs: its folder's name is a fingerprint of
# how it is built, so a change to the recipe builds a new one. Subprocesses inherit it.
if "HUGGINGTWEETS_TEST_CACHE" not in os.environ:
    os.environ["HUGGINGTWEETS_TEST_CACHE"] = os.path.join(os.path.dirname(os.path.dirname(__file__)), ".test-cache")
    os.makedirs(os.environ["HUGGINGTWEETS_TEST_CACHE"], exist_ok=True)
os.environ["HUGGINGTWEETS_CACHE"] = os.environ["HUGGINGTWEETS_TEST_CACHE"]
# A config.toml of the developer's own (in the checkout, where `huggingtweets init` may have put one, or
# named by HUGGINGTWEETS_CONFIG) must not change what the tests see: a command given no --config reads
# this empty file, the built-in defaults. Tests of how the file is found unset the variable themselves.
_DEFAULTS = os.path.join(os.environ["HUGGINGTWEETS_TEST_CACHE"], "defaults.toml")
open(_DEFAULTS, "w").close()
os.environ["HUGGINGTWEETS_CONFIG"] = _DEFAULTS

import signal

import pytest
from fake_hub import FakeHub

# Some tests stop a command with Ctrl-C (SIGINT). A shell that starts the tests in the background (`pytest &`
# in a script) hands them SIGINT ignored, which every command they start would inherit, and Python then never
# sees it: give this process, and so its commands, the default back.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# One loopback Hub for the session, listening before any test imports huggingface_hub (which reads
# HF_ENDPOINT at import): in-process calls and subprocesses alike reach it, never the real Hub.
LOOPBACK_HUB = FakeHub().start()
os.environ["HF_ENDPOINT"] = LOOPBACK_HUB.url

SAMPLE_ARCHIVE = os.path.join(os.path.dirname(__file__), "..", "bot", "data", "samples", "sample_archive.zip")


@pytest.fixture
def sample_archive() -> str:
    return os.path.abspath(SAMPLE_ARCHIVE)


@pytest.fixture
def fake_hub() -> FakeHub:
    """The session's loopback Hub, emptied for this test. `fake_hub.token` may write anywhere."""
    LOOPBACK_HUB.reset()
    return LOOPBACK_HUB


# --- in CI every part runs ------------------------------------------------------------------------------
# A developer without redis-server or Chromium sees those tests skipped, each saying what to install. CI
# (`.ci/run` sets HUGGINGTWEETS_REQUIRE_ALL=1) installs them, and there a skip would hide a whole executor or
# the playground behind a green run: it fails instead, but for the skips that are right on any machine.
REQUIRE_ALL = os.environ.get("HUGGINGTWEETS_REQUIRE_ALL") == "1"
SKIPS_RIGHT_ANYWHERE = ("root writes into read-only folders", "needs a CUDA device")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not (REQUIRE_ALL and report.skipped) or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if not any(right in reason for right in SKIPS_RIGHT_ANYWHERE):
        report.outcome = "failed"
        report.longrepr = f"skipped where every part must run (HUGGINGTWEETS_REQUIRE_ALL=1): {reason}"
