"""huggingtweets: a bot that fine-tunes GPT-2 on people's posts and publishes the models to the Hub.

The package is laid out by stage of a request (docs/architecture.md): `sources` (mentions and posts in),
`data` (archives into a training set), `training` (a request folder into a model folder), `publishing`
(run.json, the card, the Hub), `workers` (where jobs run) and `requests` (the state and the loop), on the
ground of `common` (settings, errors, handles, files, logs, progress, health), under `cli`, the command.

The modules' first homes keep working as names: `import bot.hub`, `from bot.x import XClient` and
`python -m bot.job` are `bot.publishing.hub`, `bot.sources.x` and `python -m bot.training.job` (MOVED).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys

__version__ = "0.1.0"

# Each module's first name, and its home now.
MOVED = {
    "adapters": "sources.adapters", "x": "sources.x", "bluesky": "sources.bluesky", "local": "sources.local",
    "archive": "data.archive", "dataset": "data.dataset", "synthetic": "data.synthetic", "text": "data.text",
    "job": "training.job", "train": "training.train", "gpt2": "training.gpt2", "tiny": "training.tiny",
    "stopping": "training.stopping", "sampling": "training.sampling",
    "facts": "publishing.facts", "card": "publishing.card", "images": "publishing.images", "hub": "publishing.hub",
    "space": "publishing.space",
    "executors": "workers.local", "celery_app": "workers.celery_app", "hf_jobs": "workers.hf_jobs",
    "lifeline": "workers.lifeline",
    "store": "requests.store", "scheduler": "requests.scheduler", "policy": "requests.policy",
    "grammar": "requests.grammar", "replies": "requests.replies", "spend": "requests.spend",
    "config": "common.config", "errors": "common.errors", "failpoints": "common.failpoints",
    "files": "common.files", "handles": "common.handles", "logs": "common.logs",
    "monitoring": "common.monitoring", "progress": "common.progress", "mentions": "common.handles",
}


class _FirstNames(importlib.abc.MetaPathFinder, importlib.abc.InspectLoader):
    """`bot.<first name>` is the very module at its home now (one module object, whichever name imports it
    first), and `python -m bot.<first name>` runs it."""

    def find_spec(self, fullname, path=None, target=None):
        package, _, name = fullname.partition(".")
        if package != __name__ or name not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def __init__(self):
        self._own_specs: dict[str, importlib.machinery.ModuleSpec] = {}

    def create_module(self, spec):
        module = importlib.import_module(self._home(spec.name))
        self._own_specs[module.__name__] = module.__spec__
        return module

    def exec_module(self, module) -> None:
        # The import system has just put the first name's spec on the module: give it back its own.
        module.__spec__ = self._own_specs.pop(module.__name__, module.__spec__)

    def get_code(self, fullname):  # what `python -m bot.<first name>` runs
        home = importlib.util.find_spec(self._home(fullname))
        return home.loader.get_code(home.name)

    def get_source(self, fullname):
        home = importlib.util.find_spec(self._home(fullname))
        return home.loader.get_source(home.name)

    @staticmethod
    def _home(fullname: str) -> str:
        return f"{__name__}.{MOVED[fullname.partition('.')[2]]}"


if not any(isinstance(finder, _FirstNames) for finder in sys.meta_path):
    sys.meta_path.append(_FirstNames())
