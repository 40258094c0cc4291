"""The playground Space: serve `bot/publishing/playground/app.py` here, or publish it to the Hub as a Gradio Space.

    >>> from bot.common.config import load_settings
    >>> from bot.publishing.space import deploy_space, serve, space_url
    >>> settings = load_settings()
    >>> space_url(settings, "alice-bob")             # what every model card links to
    'https://huggingface.co/spaces/huggingtweets/playground?model=alice-bob'
    >>> result = deploy_space(settings)              # create or update the Space in one commit
    >>> result.changed, result.commit_url            # (False, …) when the Space already had these files
    >>> serve(settings, host="127.0.0.1", port=7860) # blocks; models from [hub] (a local folder or the Hub)

The app and its Space's requirements are package data (`bot/publishing/playground/`), so any install serves and deploys
it. The Space holds `app.py`, the one module of this package it imports (`bot/data/text.py`), `requirements.txt`,
`space_settings.json` (the organisation and the `[space]` settings) and a README.md with the Space's
metadata (Gradio, pinned to GRADIO_VERSION). A deploy uploads them all in one commit and deletes whatever
else the Space holds; huggingface_hub leaves out files that did not change, so a deploy with nothing
changed makes no commit.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from bot.publishing.card import HUB_URL, playground_url
from bot.common.errors import UserError
from bot.common.progress import Progress
from bot.publishing.hub import KEPT_ON_HUB, HubRepos, check_repo_id

if TYPE_CHECKING:
    from bot.common.config import Settings

PACKAGE_DIR = Path(__file__).resolve().parent.parent  # bot/
PLAYGROUND_DIR = PACKAGE_DIR / "publishing" / "playground"
# The Gradio the Space runs (its README's sdk_version) and the `space` extra installs: one version, tested.
GRADIO_VERSION = "6.31.0"
# Files of the package the Space carries, as they are here: its path in the Space, its path in the package.
CARRIED = {"app.py": "publishing/playground/app.py", "requirements.txt": "publishing/playground/requirements.txt",
           "bot/__init__.py": "__init__.py", "bot/data/__init__.py": "data/__init__.py", "bot/data/text.py": "data/text.py"}


@dataclass(frozen=True)
class DeployResult:
    space_id: str
    url: str
    commit_url: str
    changed: bool  # False: the Space already held exactly these files, and no commit was made


def space_id(settings: Settings) -> str:
    return f"{settings.hub.organization}/{settings.space.name}"


def space_url(settings: Settings, model_name: str | None = None) -> str:
    """The Space's page on the Hub; with `model_name`, the page with that model chosen (as the cards link)."""
    return playground_url(settings, model_name)


def space_files(settings: Settings) -> dict[str, bytes]:
    """Every file of the Space, by its path in the repo."""
    files = {}
    for target, source in CARRIED.items():
        path = PACKAGE_DIR / source
        if not path.is_file():
            raise UserError(f"{path}: missing from this install of huggingtweets; install it again")
        files[target] = path.read_bytes()
    space = settings.space
    files["space_settings.json"] = (json.dumps({
        "organization": settings.hub.organization, "cache_size": space.cache_size,
        "num_samples": space.num_samples, "max_new_tokens": space.max_new_tokens,
        "list_refresh_seconds": space.list_refresh_seconds, "queue_size": space.queue_size,
        "queue_per_visitor": space.queue_per_visitor,
    }, indent=2) + "\n").encode()
    files["README.md"] = space_readme(settings).encode()
    return files


def space_readme(settings: Settings) -> str:
    org = settings.hub.organization
    return f"""---
title: huggingtweets playground
emoji: 🐦
colorFrom: blue
colorTo: indigo
sdk: gradio
sdk_version: {GRADIO_VERSION}
app_file: app.py
pinned: false
license: apache-2.0
short_description: Generate text from any huggingtweets model
---

Generate text from the models of [{org}]({HUB_URL}/{org}): GPT-2 fine-tuned on the public posts of one to three
people. Add `?model=NAME` to this page's address to open it with one model chosen. What the models write is
generated text, not something the people said.

Published by `huggingtweets space deploy`; the app is `bot/publishing/playground/app.py` of the huggingtweets project.
"""


def deploy_space(settings: Settings, progress: Progress | None = None) -> DeployResult:
    """Create the Space unless it exists and make its files exactly `space_files(settings)`, in one commit."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    progress = progress or (lambda _: None)
    repo_id = space_id(settings)
    check_repo_id(repo_id)
    files = space_files(settings)
    hub = HubRepos(settings.hub)
    api = hub.api
    hub.require_token()
    hub.check_reachable()
    with hub.translate_errors(repo_id, writing=True):
        progress(f"Creating the Space {repo_id} if needed")
        hub.retrying("create the Space", lambda: api.create_repo(repo_id, repo_type="space", space_sdk="gradio",
                                                                  private=settings.hub.private, exist_ok=True))
        parent = hub.retrying("read the Space", lambda: api.repo_info(repo_id, repo_type="space").sha)
        remote = api.list_repo_files(repo_id, repo_type="space", revision=parent)
        stale = sorted(set(remote) - set(files) - KEPT_ON_HUB)
        progress(f"Uploading {len(files)} files to {repo_id}")
        operations = [CommitOperationAdd(path_in_repo=path, path_or_fileobj=content) for path, content in files.items()]
        operations += [CommitOperationDelete(path_in_repo=path) for path in stale]
        info = hub.retrying("commit", lambda: api.create_commit(
            repo_id, operations, repo_type="space", commit_message="Deploy the huggingtweets playground",
            parent_commit=parent))
    url = f"{api.endpoint}/spaces/{repo_id}"
    return DeployResult(repo_id, url, info.commit_url, changed=info.oid != parent)


def load_app() -> ModuleType:
    """`bot/publishing/playground/app.py` as a module (package data rather than a module of the package: a Space runs
    it as a script, `app.py`, beside a copy of `bot/data/text.py`)."""
    path = PLAYGROUND_DIR / "app.py"
    if not path.is_file():
        raise UserError(f"{path}: missing from this install of huggingtweets; install it again")
    try:
        import gradio  # noqa: F401 - checked first, for a clear line
    except ImportError:
        raise UserError(f"the playground needs Gradio, the space extra: pip install gradio=={GRADIO_VERSION}") from None
    name = "huggingtweets_playground"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def make_playground(settings: Settings):
    """The playground over the configured models: the local Hub folder, or the organisation on the Hub."""
    app = load_app()
    source = app.LocalModels(settings.hub) if settings.hub.backend == "local" else app.HubModels(settings.hub.organization)
    space = settings.space
    return app, app.Playground(source, cache_size=space.cache_size, num_samples=space.num_samples,
                               max_new_tokens=space.max_new_tokens, refresh_seconds=space.list_refresh_seconds,
                               queue_size=space.queue_size, queue_per_visitor=space.queue_per_visitor)


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 7860,
          ready: Callable[[str], None] | None = None) -> None:
    """Serve the playground until Ctrl-C (or SIGTERM); `ready` is told its URL once it answers."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a local run
    from transformers.utils import logging as transformers_logging

    # The terminal is the operator's: no progress bar and no advice for a library's caller at each model load.
    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    app, playground = make_playground(settings)
    page = app.build_app(playground)
    try:
        # quiet: Gradio's own lines (a share=True hint among them) speak to someone calling launch() in
        # Python, not to someone who typed `huggingtweets space run`; `ready` says what matters here.
        page.launch(server_name=host, server_port=port, show_error=True, quiet=True, prevent_thread_lock=True)
    except OSError as e:
        raise UserError(f"cannot serve on {host}:{port}: {e.strerror or e}") from None
    if ready:
        ready(page.local_url)
    try:
        threading.Event().wait()  # until Ctrl-C
    except KeyboardInterrupt:
        pass
    finally:
        page.close(verbose=False)
