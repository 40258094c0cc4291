"""`run.json`: the facts of one training run, typed and versioned.

Written by the training job into the model folder; read by the card, the Hub commit and the bot.

    >>> from bot.publishing.facts import RunFacts
    >>> facts = RunFacts.load("models/dreamy_kettle")          # validated: a clear error, never a KeyError
    >>> facts.name, facts.validation_perplexity, facts.trained_posts, facts.validation_posts
    ('dreamy_kettle', 41.2, 320, 36)
    >>> facts.save("models/dreamy_kettle")                     # run.json, UTF-8, indented

A field that is missing, unknown or of the wrong type makes `load` raise `RunFactsError` naming the field
and the file. `schema_version` changes whenever a field is removed or changes meaning; a reader refuses a
version it does not know instead of guessing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bot.common.errors import UserError
from bot.common.files import write_atomically

SCHEMA_VERSION = 2
FILE_NAME = "run.json"

# Why training stopped (`stop_reason`, chosen by `bot.training.stopping`), and how the card and the CLI say it.
PLATEAU = "plateau"  # the held-out loss stopped improving
MAX_EPOCHS = "max_epochs"  # the budget of passes ran out
TIME_BUDGET = "time_budget"  # the budget of time ran out
NO_HELDOUT = "no_heldout"  # nothing held out to measure: one pass
STOP_REASONS = {
    PLATEAU: "the held-out loss stopped improving",
    MAX_EPOCHS: "it reached the most passes allowed",
    TIME_BUDGET: "it reached its time budget",
    NO_HELDOUT: "there were too few posts to hold some out, so it made one pass",
}


class RunFactsError(UserError):
    """A run.json that is missing, unreadable, or not of a version and shape this program knows."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class UserCounts(_Strict):
    """One person's posts, from download to training set (see bot/data/dataset.py)."""

    downloaded: int = Field(ge=0)
    retweets: int = Field(ge=0)
    short: int = Field(ge=0)
    duplicates: int = Field(ge=0)
    kept: int = Field(ge=0)
    language: str | None = None


# The counts shown per person (in the card's table, the commit description and the CLI), in order: the
# dataset's own (`bot.data.dataset.COUNT_ROWS`).
from bot.data.dataset import COUNT_ROWS  # noqa: E402,F401 - read from here by the hub and the CLI


class AccountFacts(_Strict):
    username: str
    display_name: str
    avatar_url: str | None = None
    # The network's id of the account (X user id, Bluesky DID) when known: the person, whatever the handle.
    account_id: str | None = None


class Hyperparameters(_Strict):
    learning_rate: float  # the peak used: the setting scaled to the model's width
    learning_rate_setting: float
    schedule: str
    warmup_steps: int
    max_epochs: int
    evals_per_epoch: int
    min_improvement: float
    patience: int
    cooldown_fraction: float
    max_minutes: float
    batch_size: int
    block_size: int
    weight_decay: float
    max_grad_norm: float
    dropout: float
    optimizer: str
    precision: str
    compiled: bool


class Measure(_Strict):
    """One measure of the held-out loss, after `step` optimiser steps (`epoch` passes)."""

    step: int
    epoch: float
    seconds: float = 0.0  # since training began
    validation_loss: float | None = None


class RunFacts(_Strict):
    schema_version: Literal[2] = SCHEMA_VERSION
    # Who and what
    name: str  # the repo name: sorted, lowercased handles joined by "-"
    model_id: str  # organisation/name on the Hub
    handles: list[str]
    users: dict[str, UserCounts]
    accounts: dict[str, AccountFacts]
    language: list[str]
    bot_handle: str  # the bot the card tells people to write to ("opt out")
    min_words: int  # the short-post rule the data was cleaned with
    # The base model
    base_model: str  # a Hub id, "tiny", or a local folder's name
    base_model_hub_id: str | None
    license: str
    # Results
    validation_loss: float | None
    validation_perplexity: float | None
    prompt: str
    samples: list[str]
    best_sample: str | None
    samples_dropped_as_memorised: int = Field(ge=0)
    # How it was trained
    hyperparameters: Hyperparameters
    seed: int
    epochs_run: float  # passes over the training posts
    steps: int
    steps_per_epoch: int
    best_step: int  # the step whose weights were kept
    stop_reason: Literal["plateau", "max_epochs", "time_budget", "no_heldout"]  # STOP_REASONS
    history: list[Measure]
    step_losses: list[float]
    train_posts: int  # texts in the training set, the balancing's repeats included
    validation_posts: int  # held out: never trained on, the validation loss is measured on them
    train_tokens: int
    validation_tokens: int
    tokens_seen: int
    # Added later, so absent from older files (None or False there):
    # the posts trained on, each once ("trained on N posts" in the CLI, the card and the commit)
    distinct_train_posts: int | None = None
    # the base model's architecture (its config.json model_type: "gpt2", "llama", ...), for the card's tags
    base_model_type: str | None = None
    # True when the bot trained the model for a mention (its job carried the request's key), so the bot's
    # "opt out" removes it and the card says so; False for a model trained by hand (`huggingtweets train`)
    made_by_bot: bool = False
    # Where and how long (never a path, a user name or a token of the machine)
    versions: dict[str, str]
    hardware: dict[str, str | int]
    peak_memory_bytes: int
    finished_at: str
    durations_s: dict[str, float]

    @property
    def kept_posts(self) -> int:
        """Posts kept after cleaning: those trained on and those held out."""
        return sum(u.kept for u in self.users.values())

    @property
    def trained_posts(self) -> int:
        """The posts trained on, each once (older files: the training set's texts)."""
        return self.distinct_train_posts if self.distinct_train_posts is not None else self.train_posts

    @classmethod
    def load(cls, folder: str | os.PathLike) -> RunFacts:
        """The run facts of a model folder (its `run.json`)."""
        path = Path(folder) / FILE_NAME
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RunFactsError(f"{path}: no such file (a model folder written by `huggingtweets train` has one)") from None
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise RunFactsError(f"{path}: not readable JSON ({e})") from None
        return cls.parse(raw, source=str(path))

    @classmethod
    def parse(cls, raw: object, source: str = FILE_NAME) -> RunFacts:
        if isinstance(raw, dict) and raw.get("schema_version") not in (None, SCHEMA_VERSION):
            raise RunFactsError(f"{source}: schema version {raw.get('schema_version')!r}; this program reads "
                                f"version {SCHEMA_VERSION} (was it written by another huggingtweets?)")
        try:
            return cls.model_validate(raw)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "the file"
            raise RunFactsError(f"{source}: {where}: {first['msg'].lower()}") from None

    def save(self, folder: str | os.PathLike) -> Path:
        return write_atomically(Path(folder) / FILE_NAME,
                                json.dumps(self.model_dump(mode="json"), ensure_ascii=False, indent=2) + "\n")
