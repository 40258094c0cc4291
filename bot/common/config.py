"""Settings: `config.toml` in one typed object.

    >>> from bot.common.config import find_config, load_settings
    >>> settings = load_settings()            # ./config.toml, or $HUGGINGTWEETS_CONFIG, or built-in defaults
    >>> settings.train.learning_rate
    0.0001372
    >>> settings = load_settings("my.toml")    # another file; unknown keys and bad values raise ConfigError
    >>> find_config()                          # which file that is, and why
    ConfigSource(path=PosixPath('config.toml'), reason='config.toml in the current folder')

Which file: `--config PATH` (the command line hands it to `load_settings`), else the file named by
`HUGGINGTWEETS_CONFIG`, else `config.toml` in the current folder, else none (built-in defaults).
`CONFIG_TEMPLATE` is every key with its default and a comment, as `huggingtweets init` writes it.

Every key has a default, so a file only needs the keys it changes. Secrets never come from the file:
each adapter reads its own from the environment (HF_TOKEN, X_*), and `bot.common.errors.scrub` masks them
in anything shown or logged.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bot.common.errors import ConfigError, UserError

# Every key, its default and why, commented: package data, so any install carries it (`huggingtweets init`).
CONFIG_TEMPLATE = Path(__file__).resolve().parent.parent / "config.toml"
DEFAULT_CONFIG_PATH = CONFIG_TEMPLATE  # the earlier name of the template
CONFIG_ENV = "HUGGINGTWEETS_CONFIG"
CONFIG_FILE_NAME = "config.toml"


class Section(BaseModel):
    # No infinity and no NaN anywhere: a budget or a price of `inf` would turn every check into a no-op,
    # and `status --json` would print values that strict JSON parsers refuse.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class DataSettings(Section):
    min_words: int = Field(3, ge=1, le=50)
    keep_newlines: bool = False
    validation_fraction: float = Field(0.1, ge=0.0, lt=0.5)
    min_kept_posts: int = Field(100, ge=1)
    max_handles: int = Field(3, ge=1, le=3)
    seed: int = 42


class TrainSettings(Section):
    base_model: str = "openai-community/gpt2"
    learning_rate: float = Field(1.372e-4, gt=0, lt=1)
    max_epochs: int = Field(4, ge=1, le=100)
    evals_per_epoch: int = Field(4, ge=1, le=100)
    min_improvement: float = Field(0.025, ge=0, lt=1)
    patience: int = Field(2, ge=1, le=1000)
    cooldown_fraction: float = Field(0.2, ge=0, le=1)
    max_minutes: float = Field(0.0, ge=0)
    batch_size: int = Field(0, ge=0, le=1024)
    block_size: int = Field(256, ge=16, le=8192)
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(0, ge=0)
    seed: int = 42
    prompt: str = Field("My dream is", min_length=1, max_length=200)
    num_samples: int = Field(8, ge=1, le=64)
    sample_max_new_tokens: int = Field(60, ge=8, le=512)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    max_grad_norm: float = Field(1.0, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    compile: bool = False
    output_dir: Path = Path("models")
    # Where the bot's training jobs run: a subprocess beside it, Celery workers, or Hugging Face Jobs
    # (bot.workers.local, bot.workers.celery_app, bot.workers.hf_jobs).
    executor: Literal["local", "celery", "hf-jobs"] = "local"


class HubSettings(Section):
    backend: Literal["hub", "local"] = "hub"
    organization: str = Field("huggingtweets", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")
    private: bool = False
    local_dir: Path = Path("hub")
    max_retries: int = Field(5, ge=0, le=20)
    retry_base_wait_seconds: float = Field(1.0, ge=0)
    retry_max_wait_seconds: float = Field(30.0, ge=0)


class XPrices(Section):
    """X's pay-per-use prices in US dollars (docs.x.com/x-api/getting-started/pricing, read 2026-11-22)."""

    post_read: float = Field(0.005, ge=0)
    user_read: float = Field(0.010, ge=0)
    post_created: float = Field(0.015, ge=0)
    post_created_with_link: float = Field(0.200, ge=0)


class NetworkSettings(Section):
    """What every network's client takes: its cache's lifetime, timeouts, retries and rate-limit waits."""

    cache_ttl_hours: float = Field(24.0, ge=0)
    request_timeout_seconds: float = Field(30.0, gt=0, le=600)
    max_retries: int = Field(5, ge=0, le=20)
    rate_limit_max_wait_seconds: float = Field(900.0, ge=0)
    rate_limit_default_wait_seconds: float = Field(60.0, ge=0)
    retry_base_wait_seconds: float = Field(1.0, ge=0)
    retry_max_wait_seconds: float = Field(60.0, ge=0)


class XSettings(NetworkSettings):
    max_tweets_per_user: int = Field(3200, ge=5, le=3200)
    cache_dir: Path = Path("state/x-cache")
    prices: XPrices = XPrices()


class BotSettings(Section):
    handle: str = Field("huggingtweets", pattern=r"^[A-Za-z0-9_]{1,15}$")
    mode: Literal["public", "consented", "self"] = "public"
    # Where mentions come from: "x", "bluesky" (both at once is fine), or "local" (the offline stand-in).
    sources: list[Literal["x", "bluesky", "local"]] = Field(default_factory=lambda: ["x"], min_length=1)
    state_db: Path = Path("state/bot.sqlite3")
    inbox: Path = Path("state/inbox.jsonl")
    outbox: Path = Path("state/outbox.jsonl")
    archives_dir: Path = Path("archives")
    work_dir: Path = Path("state/work")
    poll_interval_seconds: float = Field(60.0, ge=1)
    quota_per_day: int = Field(3, ge=0)
    max_queue: int = Field(50, ge=1)
    blocklist: list[str] = []
    reuse_days: float = Field(30.0, ge=0)
    job_timeout_seconds: float = Field(3600.0, ge=1)
    max_attempts: int = Field(3, ge=1, le=20)
    max_mention_age_hours: float = Field(24.0, gt=0)
    retry_base_seconds: float = Field(30.0, ge=0)
    daily_budget_usd: float = Field(0.0, ge=0)
    reply_link: bool = True

    @field_validator("blocklist")
    @classmethod
    def _blocklist_entries(cls, entries: list[str]) -> list[str]:
        """Each entry a handle (X or Bluesky, "@" optional) or an account id: `x:ID` or a Bluesky DID."""
        from bot.common.handles import normalize_handle

        clean = []
        for entry in entries:
            text = entry.strip()
            if re.fullmatch(r"x:[0-9]{1,25}|did:[a-z]+:[A-Za-z0-9._:%-]{1,2000}", text):
                clean.append(text.lower() if text.startswith("x:") else text)
                continue
            try:
                clean.append(normalize_handle(text))
            except UserError:
                raise ValueError(f"{entry!r} is neither a handle nor an account id (x:123456 or did:plc:...)") from None
        return clean

    @model_validator(mode="after")
    def _one_list_of_sources(self):
        if len(set(self.sources)) != len(self.sources) or ("local" in self.sources and len(self.sources) > 1):
            raise ValueError("sources: each network once, and \"local\" alone")
        return self


class BlueskySettings(NetworkSettings):
    # Bluesky has no 3,200-post reach: this bound keeps a download (100 posts a request) and a training
    # run the size they have on X, and a few thousand posts already make a model.
    max_posts_per_user: int = Field(3200, ge=1, le=100_000)
    cache_dir: Path = Path("state/bluesky-cache")


class CelerySettings(Section):
    # CELERY_BROKER_URL, when set, takes the place of broker_url (see `broker`).
    broker_url: str = Field("redis://localhost:6379/0", pattern=r"^rediss?://")
    visibility_timeout_seconds: float = Field(7200.0, ge=1)
    max_jobs_queued: int = Field(32, ge=1, le=10_000)
    # A job whose worker has not been heard from for this long (it records itself every 5 s,
    # `bot.workers.celery_app.HEARTBEAT_SECONDS`) is handed to another worker: docs/recovery.md.
    worker_lost_seconds: float = Field(30.0, ge=15)
    # How long `huggingtweets worker` waits for an unreachable broker at start before it exits non-zero.
    broker_wait_seconds: float = Field(60.0, ge=0)

    @property
    def broker(self) -> str:
        return os.environ.get("CELERY_BROKER_URL") or self.broker_url


class HfJobsSettings(Section):
    """Training on Hugging Face Jobs (`[train] executor = "hf-jobs"`, bot/workers/hf_jobs.py)."""

    # The machine each job gets (a `huggingface_hub.JobHardware` name): a T4 trains a GPT-2 model in minutes.
    flavor: str = Field("t4-small", pattern=r"^[a-z0-9][a-z0-9-]{1,40}$")
    # The Docker image a job runs in: one with CUDA and torch already in it, so a job installs little.
    image: str = Field("pytorch/pytorch:2.8.0-cuda12.8-cudnn9-runtime", min_length=1, max_length=300)
    # What pip installs in the image before the job runs ("": huggingtweets at the bot's own version, so
    # the job reads the job.json this bot writes). A git URL or a wheel URL for a fork.
    package: str = Field("", max_length=500)
    # The service ends a job that runs longer than this (and bills no further): installing and training.
    timeout_seconds: float = Field(3600.0, ge=1)
    # A job still waiting for a machine this long after it was submitted is cancelled and tried again later.
    start_timeout_seconds: float = Field(1800.0, ge=10)
    # Whose account the jobs run (and are billed) under: "" for the token's own user, or an organisation.
    namespace: str = Field("", pattern=r"^([A-Za-z0-9][A-Za-z0-9_.-]{0,95})?$")
    # The private dataset repo each request's input (posts and job.json) travels through: a name in
    # [hub] organization, or ORG/NAME.
    dataset: str = Field("huggingtweets-jobs", pattern=r"^([A-Za-z0-9][A-Za-z0-9_.-]{0,95}/)?[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")
    # Seconds between two questions to the service about one job: a job takes minutes, and the Hub's API
    # is rate limited.
    poll_seconds: float = Field(10.0, ge=0)
    # Most jobs running at once: each one is a paid machine.
    max_jobs: int = Field(4, ge=1, le=1000)
    # Lines of a failed job's log kept in its error (what `huggingtweets status` shows, secrets masked).
    log_tail_lines: int = Field(20, ge=1, le=1000)


class SpaceSettings(Section):
    name: str = Field("playground", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")
    cache_size: int = Field(3, ge=1, le=64)
    num_samples: int = Field(3, ge=1, le=16)
    max_new_tokens: int = Field(40, ge=8, le=512)
    list_refresh_seconds: float = Field(300.0, ge=0)
    queue_size: int = Field(8, ge=1, le=1000)
    queue_per_visitor: int = Field(2, ge=1, le=1000)


class MonitoringSettings(Section):
    """The health and metrics endpoint of `huggingtweets run` and `worker` (bot/common/monitoring.py), and the logs."""

    # HOST:PORT for /healthz and /metrics ("" : none). No authentication: a loopback or private address.
    listen: str = Field("", max_length=300)
    # /healthz answers 503 once a network has gone this many poll intervals without a successful poll.
    missed_polls: int = Field(3, ge=1, le=1000)
    # "plain" lines, or "json": one object per line (time, level, logger, message, request, state, network).
    log_format: Literal["plain", "json"] = "plain"

    @field_validator("listen")
    @classmethod
    def _host_and_port(cls, value: str) -> str:
        if value:
            split_listen(value)
        return value

    @property
    def address(self) -> tuple[str, int] | None:
        """(host, port) to listen on, or None when monitoring is off."""
        return split_listen(self.listen) if self.listen else None


def split_listen(value: str) -> tuple[str, int]:
    """An address as (host, port): "127.0.0.1:9464" -> ("127.0.0.1", 9464), "[::1]:9464" -> ("::1", 9464);
    ValueError for anything else."""
    host, sep, port = value.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535 or any(c in host for c in "/[] "):
        raise ValueError(f"{value!r} is not HOST:PORT (like 127.0.0.1:9464, or [::1]:9464)")
    return host, int(port)


class Settings(Section):
    data: DataSettings = DataSettings()
    train: TrainSettings = TrainSettings()
    hub: HubSettings = HubSettings()
    x: XSettings = XSettings()
    bot: BotSettings = BotSettings()
    bluesky: BlueskySettings = BlueskySettings()
    celery: CelerySettings = CelerySettings()
    hf_jobs: HfJobsSettings = HfJobsSettings()
    space: SpaceSettings = SpaceSettings()
    monitoring: MonitoringSettings = MonitoringSettings()

    @model_validator(mode="after")
    def _redelivery_after_the_time_limit(self):
        # A job still running when its message becomes visible again would be trained a second time.
        if self.train.executor == "celery" and self.celery.visibility_timeout_seconds <= self.bot.job_timeout_seconds:
            raise ValueError("celery.visibility_timeout_seconds must be longer than bot.job_timeout_seconds")
        if self.space.queue_per_visitor > self.space.queue_size:
            raise ValueError("space.queue_per_visitor must be at most space.queue_size")
        return self


@dataclass(frozen=True)
class ConfigSource:
    """The settings file an invocation reads (None: the built-in defaults), and why that one."""

    path: Path | None
    reason: str

    def describe(self) -> str:
        """'/srv/bot/config.toml (from config.toml in the current folder)', or what the defaults mean."""
        if self.path is None:
            return f"built-in defaults ({self.reason})"
        return f"{self.path.resolve()} (from {self.reason})"


def find_config(path: str | os.PathLike | None = None) -> ConfigSource:
    """Which settings file to read: `path` (from --config), else $HUGGINGTWEETS_CONFIG, else
    ./config.toml, else none. A file named by --config or the variable must exist (load_settings says so)."""
    if path is not None:
        return ConfigSource(Path(path), "--config")
    if os.environ.get(CONFIG_ENV):
        return ConfigSource(Path(os.environ[CONFIG_ENV]), CONFIG_ENV)
    if Path(CONFIG_FILE_NAME).is_file():
        return ConfigSource(Path(CONFIG_FILE_NAME), f"{CONFIG_FILE_NAME} in the current folder")
    return ConfigSource(None, f"no --config, no {CONFIG_ENV} and no {CONFIG_FILE_NAME} in the current folder")


def load_settings(path: str | os.PathLike | None = None) -> Settings:
    """Read a config file: `path`, else the one `find_config` finds, else the built-in defaults.

    Relative paths inside the file are kept as written: they are relative to the working directory.
    """
    source = find_config(path)
    if source.path is None:
        return Settings()
    path = source.path
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        named = f" (named by {CONFIG_ENV})" if source.reason == CONFIG_ENV else ""
        raise ConfigError(f"{path}: no such config file{named}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    except OSError as e:  # a folder, a file we may not read
        raise ConfigError(f"{path}: cannot read the config file ({e.strerror or e})") from None
    return parse_settings(raw, source=str(path))


def parse_settings(raw: dict, source: str = "config") -> Settings:
    """Settings from an already-parsed TOML table; the first problem becomes one ConfigError line."""
    try:
        return Settings.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        if first["type"] == "extra_forbidden":
            section = first["loc"][0] if len(first["loc"]) > 1 else None
            model = Settings.model_fields[section].annotation if section in Settings.model_fields else Settings
            allowed = ", ".join(model.model_fields)
            raise ConfigError(f"{source}: unknown key '{key}' (allowed here: {allowed})") from None
        if first["type"] == "model_type":  # `data = 3` where a [data] table belongs
            raise ConfigError(f"{source}: '{key}' must be a table ([{key}] with its keys)") from None
        if not key:  # a rule across sections
            raise ConfigError(f"{source}: {first['msg'].removeprefix('Value error, ')}") from None
        given = first.get("input")
        shown = f" = {given!r}" if isinstance(given, (str, int, float, bool)) else ""
        raise ConfigError(f"{source}: '{key}'{shown}: {first['msg']}") from None
