"""The `huggingtweets` command. Every step of the bot also runs by hand from here.

Run `huggingtweets --help` for the list of commands and `huggingtweets COMMAND --help` for each.
A user mistake prints one line on stderr and exits 2 (bad usage) or 1 (failed).
"""

from __future__ import annotations

import copy
import errno
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, NoReturn, Optional

import typer
from rich.console import Console
from rich.table import Table

import bot
from bot.common.config import CONFIG_FILE_NAME, CONFIG_TEMPLATE, ConfigSource, Settings, find_config, load_settings
from bot.common.errors import UsageError, UserError, inert, scrub
from bot.common.progress import progress


class _Commands(typer.core.TyperGroup):
    """The command group: every subcommand also takes --config after its name, as the group does before it
    (`huggingtweets status --config FILE` and `huggingtweets --config FILE status` are the same)."""

    def get_command(self, ctx, cmd_name):
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            _give_config_option(command, next(p for p in self.params if p.name == "config"))
        return command


def _give_config_option(command, root_option) -> None:
    """Add a copy of the root's --config to `command` (and, for a group such as `space`, to its commands)."""
    if not any(p.name == "config" for p in command.params):
        option = copy.copy(root_option)
        option.expose_value, option.callback = False, _config_after_the_command
        command.params.append(option)
    for sub in getattr(command, "commands", {}).values():
        _give_config_option(sub, root_option)


def _config_after_the_command(ctx, param, value):
    if value is not None:  # given after the command: it wins over one given before
        ctx.find_object(Invocation).config_path = value
    return value


app = typer.Typer(
    name="huggingtweets",
    cls=_Commands,
    help="Fine-tune GPT-2 on people's posts and publish the models to the Hugging Face Hub.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts are shown as written: "[bot] source" stays "[bot] source"
    context_settings={"help_option_names": ["-h", "--help"]},
)
class InertConsole(Console):
    """Plain text out: names, posts, samples and paths are printed as they are, never read as terminal markup,
    and made inert first (`bot.common.errors.inert`): a display name, a server's message or a model's sample may hold
    control sequences."""

    def print(self, *objects, **options) -> None:
        super().print(*(inert(o) if isinstance(o, str) else o for o in objects), **options)


out = InertConsole(soft_wrap=True, markup=False, highlight=False)
err = InertConsole(stderr=True, soft_wrap=True, markup=False, highlight=False)

START, STEPS, BOT = "Start here", "One step at a time", "Running the bot"


class Invocation:
    """What one run of the command knows: the settings file it was given (--config, before or after
    the command), read when first needed."""

    def __init__(self, config_path: Path | None, log_format: str | None = None):
        self.config_path = config_path
        self.log_format = log_format  # --log-format, else [monitoring] log_format
        self._settings: Settings | None = None

    @property
    def source(self) -> ConfigSource:
        """Which settings file this run reads, and why (--config, HUGGINGTWEETS_CONFIG, ./config.toml)."""
        return find_config(self.config_path)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config_path)
        return self._settings


class LogFormat(str, Enum):
    plain = "plain"
    json = "json"


def _version(value: bool) -> None:
    if value:
        out.print(f"huggingtweets {bot.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", metavar="FILE", help="Settings file (default: $HUGGINGTWEETS_CONFIG, else config.toml in the current folder, else built-in defaults). Also accepted after the command.")] = None,
    version: Annotated[bool, typer.Option("--version", metavar="", callback=_version, is_eager=True, help="Show the version and exit.")] = False,
    log_format: Annotated[Optional[LogFormat], typer.Option("--log-format", help="Log lines of run, worker and demo: plain, or json (one object per line, with the request id, state and network). Default: log_format in the monitoring section of the config.")] = None,
) -> None:
    ctx.obj = Invocation(config, log_format.value if log_format else None)


def settings(ctx: typer.Context) -> Settings:
    """The settings for this invocation (`--config` or the default file), loaded once."""
    return ctx.obj.settings  # subcommands share the root's object (click hands it down)


def log_format(ctx: typer.Context) -> str:
    """The log format, "plain" or "json": `--log-format`, else `[monitoring] log_format`."""
    return ctx.obj.log_format or settings(ctx).monitoring.log_format


def listening_at(ctx: typer.Context, listen: str | None) -> Settings:
    """The settings, with `--listen` in place of `[monitoring] listen` when it is given."""
    config = settings(ctx)
    if listen is None:
        return config
    from bot.common.config import split_listen

    if listen:
        try:
            split_listen(listen)
        except ValueError as e:
            raise UsageError(f"--listen: {e}") from None
    return config.model_copy(update={"monitoring": config.monitoring.model_copy(update={"listen": listen})})


Listen = Annotated[Optional[str], typer.Option("--listen", metavar="HOST:PORT", help="Serve /healthz and /metrics here (default: listen in the monitoring section of the config; \"\" for none).")]


def _handles_given(value):
    """Each handle as a person gives it ('alice', '@alice', a profile's address) as the handle it names."""
    from bot.common.handles import handle_from_input

    return [handle_from_input(v) for v in value] if isinstance(value, list) else handle_from_input(value)


Handles = Annotated[list[str], typer.Argument(metavar="HANDLE", callback=_handles_given, help="1 to 3 handles of one network: X handles (alice, @alice or x.com/alice), or Bluesky handles, domain names (alice.bsky.social or bsky.app/profile/alice.bsky.social).", show_default=False)]
Handle = Annotated[str, typer.Argument(metavar="HANDLE", callback=_handles_given, help="An X handle (alice, @alice or x.com/alice), or a Bluesky handle, a domain name (alice.bsky.social or bsky.app/profile/alice.bsky.social).", show_default=False)]
# An argument is named by its metavar alone in help ("HANDLE"), as options are, not "HANDLE <list[str]>".
typer.core.TyperArgument.display_type_rich = lambda self, ctx: None
Archives = Annotated[Optional[list[Path]], typer.Option("--archive", "-a", metavar="PATH", help="An X data export (.zip, folder or tweets.js) or a .jsonl of API v2 posts; one per handle. 'sample' is the bundled sample archive (@dreamy_kettle, a made-up account).")]
# The bundled sample: a made-up account's synthetic posts (bot/data/synthetic.py), package data in any install.
SAMPLE_ARCHIVE = Path(bot.__file__).resolve().parent / "data" / "samples" / "sample_archive.zip"
Flag = {"metavar": ""}  # a switch: no value to describe


# --- start here ----------------------------------------------------------------------------------

DEMO_MARKER = ".huggingtweets-demo"


@app.command(rich_help_panel=START)
def demo(
    ctx: typer.Context,
    folder: Annotated[Path, typer.Option("--dir", metavar="DIR", help="Where the demo keeps its inbox, outbox, state, models and local Hub (made afresh).")] = Path("demo"),
    mention: Annotated[str, typer.Option(metavar="TEXT", help="The mention to answer.")] = "@huggingtweets train @dreamy_kettle",
) -> None:
    """Answer one sample mention end to end, offline, and say what happened.

    A bundled sample archive (a made-up account, @dreamy_kettle), the tiny base model built on this
    machine, a folder standing in for the Hub and a file standing in for X. Takes seconds.
    """
    import shutil
    import time

    from bot.sources.local import LocalX
    from bot.requests.scheduler import Bot

    if folder.exists():
        if not (folder / DEMO_MARKER).exists() and any(folder.iterdir()):
            raise UsageError(f"{folder} exists and is not a demo folder; choose another --dir")
        shutil.rmtree(folder)
    root = folder.resolve()
    (root / "archives").mkdir(parents=True)
    (root / DEMO_MARKER).touch()
    shutil.copy(SAMPLE_ARCHIVE, root / "archives" / "dreamy_kettle.zip")
    config = root / "config.toml"
    demo_config = {
        "train": {"base_model": "tiny"},
        "hub": {"backend": "local", "local_dir": str(root / "hub")},
        "bot": {"sources": ["local"], "state_db": str(root / "bot.sqlite3"), "inbox": str(root / "inbox.jsonl"),
                "outbox": str(root / "outbox.jsonl"), "archives_dir": str(root / "archives"),
                "work_dir": str(root / "work")},
    }
    config.write_text("# The demo's settings: everything local, the tiny base model.\n" + to_toml(demo_config),
                      encoding="utf-8")
    demo_settings = load_settings(config)
    x = LocalX.from_settings(demo_settings)
    x.add_mention(author_username="sleepy_reader", text=mention)
    out.print(f"A mention from @sleepy_reader: {mention}")
    out.print(f"The posts: the bundled sample archive of a made-up account, {SAMPLE_ARCHIVE} (--archive sample)")

    started = time.monotonic()
    setup_logging(root / "bot.log", ctx.obj.log_format or "plain")  # the bot's own account of each step; the summary follows
    demo_bot = Bot(demo_settings, source=x)
    with _steps("Answering it") as step, _following_the_log(step):
        demo_bot.run(once=True)
    elapsed = time.monotonic() - started

    request = demo_bot.store.requests(limit=1)[0]
    states = [h[2] for h in demo_bot.store.history(request.id)]
    path = " -> ".join(s for i, s in enumerate(states) if i == 0 or s != states[i - 1])  # retries stay in place
    out.print(f"Request {request.id}: {path}, in {elapsed:.0f} s"
              + (f" ({request.reason})" if request.state in ("failed", "rejected") else ""))
    model_dir = demo_bot.request_dir(request) / "model"
    if (model_dir / "run.json").exists():
        from bot.publishing.facts import RunFacts

        facts = RunFacts.load(model_dir)
        out.print(f"\nThe model was trained on {facts.trained_posts:,} posts of @{', @'.join(facts.handles)}; "
                  f"on {facts.validation_posts:,} more, held out, its perplexity is {facts.validation_perplexity}.")
        if facts.best_sample:
            out.print(f"It wrote: “{facts.best_sample}”")
        out.print(f"Model folder: {model_dir}")
    if request.model_url:
        out.print(f"Published (local Hub): {request.model_url}")
    for reply in LocalX._read(x.outbox):
        out.print(f"\nThe bot's reply (in {x.outbox}):\n  " + reply["text"].replace("\n", "\n  "))
    out.print(f"\nEvery step is logged in {folder}/bot.log. Next:\n"
              f"  huggingtweets --config {folder}/config.toml status           the request queue\n"
              f"  huggingtweets --config {folder}/config.toml space run        the model in your browser (needs the space extra)\n"
              f"  huggingtweets train HANDLE --archive YOUR-X-EXPORT.zip --base-model tiny   a model of your own posts\n"
              f"  huggingtweets init                                           a config.toml to edit, here")
    if request.state != "done":
        raise typer.Exit(1)


@app.command(rich_help_panel=START)
def init() -> None:
    """Write a config.toml to edit into the current folder: every setting, its default and why.

    Commands run in this folder read it from then on (unless --config or HUGGINGTWEETS_CONFIG names
    another file). An existing config.toml is never overwritten.
    """
    target = Path(CONFIG_FILE_NAME)
    try:
        with open(target, "x", encoding="utf-8") as f:  # "x": fails if it exists, even if made a moment ago
            f.write(CONFIG_TEMPLATE.read_text(encoding="utf-8"))
    except FileExistsError:
        raise UserError(f"{target.resolve()} already exists; edit it, or move it away and run init again") from None
    out.print(f"Wrote {target.resolve()}: every setting with its default and a comment. Commands run in this "
              f"folder read it; `huggingtweets config` checks it.")


@app.command("config", rich_help_panel=START)
def config_command(ctx: typer.Context) -> None:
    """Say which settings file commands read here, and check it.

    The file named by --config, else by HUGGINGTWEETS_CONFIG, else config.toml in the current folder,
    else none (the built-in defaults). Exits 2, with the problem, when the file is not valid.
    """
    source = ctx.obj.source
    settings(ctx)  # a mistake in the file is the one-line error, as for any command
    out.print(f"Settings: {source.describe()}"
              + (". `huggingtweets init` writes a config.toml to edit." if source.path is None else "; it is valid."))


# --- one step at a time ----------------------------------------------------------------------------


@app.command(rich_help_panel=STEPS)
def download(
    ctx: typer.Context,
    handle: Handle,
    out_file: Annotated[Optional[Path], typer.Option("--out", "-o", metavar="FILE.jsonl", help="Where to write the posts; the account goes beside it in NAME.user.json. Default: HANDLE.jsonl here.")] = None,
) -> None:
    """Download a person's posts from X (or Bluesky) as JSONL of API v2 posts, ready for --archive.

    Reads through the cache (cache_dir in the x or bluesky section of config.toml): a person read less
    than cache_ttl_hours ago is not read again. An X handle needs X_BEARER_TOKEN; a Bluesky handle (a
    domain name such as alice.bsky.social) needs BLUESKY_HANDLE and BLUESKY_APP_PASSWORD.

    Example: huggingtweets download dreamy_kettle --out dreamy_kettle.jsonl
    """
    from bot.common.handles import normalize_handle
    from bot.sources.x import export_archive

    name = normalize_handle(handle)
    target = out_file or Path(f"{name}.jsonl")
    if target.suffix.lower() not in (".jsonl", ".ndjson"):
        raise UsageError(f"--out {target}: the file must end in .jsonl (it is read back as JSONL of X API v2 posts)")
    archive = download_posts([name], settings(ctx))[name]
    count = export_archive(archive, target)
    out.print(f"Wrote {count:,} posts of @{archive.account.username or name} to {target}")


@app.command(rich_help_panel=STEPS)
def dataset(
    ctx: typer.Context,
    handles: Handles,
    archive: Archives = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", "-o", metavar="DIR", help="Write train.jsonl, validation.jsonl and stats.json here.")] = None,
    as_json: Annotated[bool, typer.Option("--json", **Flag, help="Print the per-person counts as JSON.")] = False,
) -> None:
    """Clean posts into a training set and show the counts per person.

    Without --archive, the posts are downloaded from X (or from Bluesky, for Bluesky handles).

    Example: huggingtweets dataset dreamy_kettle --archive sample
    """
    with _steps("Reading and cleaning posts"):
        ds = load_dataset(settings(ctx), handles, archive)
    if out_dir:
        ds.save(out_dir)
    if as_json:
        print(json.dumps(ds.counts_json(), ensure_ascii=False))
    else:
        out.print(counts_table(ds))
        out.print(f"{ds.distinct_train_posts:,} posts to train on and {len(ds.validation):,} held out to measure the model"
                  + (f" (with repeats that make each person weigh the same, {len(ds.train):,} training posts)"
                     if len(ds.train) != ds.distinct_train_posts else "")
                  + (f"; written to {out_dir}" if out_dir else ""))


@app.command(rich_help_panel=STEPS)
def train(
    ctx: typer.Context,
    handles: Handles,
    archive: Archives = None,
    base_model: Annotated[Optional[str], typer.Option("--base-model", metavar="ID|DIR|tiny", help="A Hub id, a local model folder, or 'tiny' (built on this machine; no download). Default: base_model in the train section of the config.")] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", "-o", metavar="DIR", help="The model folder to write (default: output_dir in the train section of the config, then the model's name).")] = None,
    max_epochs: Annotated[Optional[int], typer.Option("--max-epochs", metavar="N", min=1, max=100, help="The most passes over the training posts; training stops sooner when the held-out loss stops improving (default: from the config).")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", metavar="N", help="Seed for initialisation, shuffling and samples (default: from the config).")] = None,
    push: Annotated[bool, typer.Option("--push", **Flag, help="Publish the folder when it is written (as `huggingtweets publish`).")] = False,
) -> None:
    """Fine-tune a model on the posts and write a Hub-ready model folder.

    Without --archive, the posts are downloaded from X (or from Bluesky, for Bluesky handles).

    Example: huggingtweets train dreamy_kettle --archive sample --base-model tiny
    """
    from bot.training.job import TrainJob, train_job
    from bot.training.stopping import REASONS
    from bot.training.train import check_out_dir

    if out_dir:
        check_out_dir(out_dir)  # before a download, not after
    config = settings(ctx)
    ds = load_dataset(config, handles, archive)
    overrides = {k: v for k, v in (("max_epochs", max_epochs), ("seed", seed)) if v is not None}
    if overrides:
        config = config.model_copy(update={"train": config.train.model_copy(update=overrides)})
    folder = out_dir or config.train.output_dir / ds.name
    result = train_job(ds, TrainJob.from_settings(config, ds.name, base_model), folder, progress=True)
    perplexity = f"{result.perplexity:,.2f}" if result.perplexity is not None else "n/a (nothing held out)"
    out.print(f"Model folder: {result.folder}")
    out.print(f"Trained on {ds.distinct_train_posts:,} posts; {len(ds.validation):,} held out")
    out.print(f"Validation perplexity: {perplexity} (loss {result.validation_loss})")
    out.print(f"Stopped after {result.epochs_run:g} passes because {REASONS[result.stop_reason]}")
    out.print(f"Took {result.timings['total']:.1f} s ({result.timings['train']:.1f} s training, "
              f"{result.tokens_seen:,} tokens)")
    if push:
        _publish(result.folder, config)


@app.command(rich_help_panel=STEPS)
def publish(
    ctx: typer.Context,
    folder: Annotated[Path, typer.Argument(metavar="DIR", help="The model folder (from `huggingtweets train`).", show_default=False)],
    repo_id: Annotated[Optional[str], typer.Option("--repo-id", metavar="ORG/NAME", help="The repo to publish to (default: the configured organization / the run's name).")] = None,
    message: Annotated[Optional[str], typer.Option("--message", "-m", metavar="TEXT", help="Commit message (default: 'Train on N posts from @handle').")] = None,
) -> None:
    """Publish a model folder as one commit, then print the model and commit URLs.

    Files the repo had that the folder lacks are deleted in the same commit. The token comes from
    HF_TOKEN (or `hf auth login`). With backend = "local" in the hub section of the config, the repo
    is a folder.

    Example: huggingtweets publish models/dreamy_kettle
    """
    _publish(folder, settings(ctx), repo_id=repo_id, message=message)


def _publish(folder: Path, config: Settings, **options) -> None:
    from huggingface_hub.utils import disable_progress_bars

    from bot.publishing.hub import publish_folder

    disable_progress_bars()  # one progress display on stderr: ours
    with _steps(f"Publishing {folder}") as step:
        result = publish_folder(folder, config, progress=step, **options)
    out.print(f"Model: {result.model_url}")
    out.print(f"Commit: {result.commit_url}")


@app.command(rich_help_panel=STEPS)
def delete(
    ctx: typer.Context,
    handle: Handle,
    yes: Annotated[bool, typer.Option("--yes", "-y", **Flag, help="Delete without asking.")] = False,
) -> None:
    """Delete every model made from HANDLE's posts, after listing them and asking.

    These are the organisation's repos whose name has HANDLE as one of its '-'-separated parts.

    Example: huggingtweets delete alice (deletes alice and alice-bob, never malice)
    """
    from bot.publishing.hub import delete_repos, find_repos_for, require_write_access
    from bot.common.handles import normalize_handle

    handle = normalize_handle(handle)
    config = settings(ctx)
    org = config.hub.organization
    require_write_access(config)  # before looking: without a token nothing could be deleted anyway
    with _steps(f"Looking for models of @{handle} in {org}"):
        repos = find_repos_for(handle, config)
    if not repos:
        out.print(f"No model of {org} is made from @{handle}'s posts.")
        return
    out.print(f"Models of {org} made from @{handle}'s posts:")
    for repo in repos:
        out.print(f"  {repo}")
    what = "it" if len(repos) == 1 else f"these {len(repos)}"
    if not yes and not typer.confirm(f"Delete {what}? This cannot be undone", default=False):
        raise UserError("nothing deleted")
    with _steps("Deleting") as step:
        delete_repos(repos, config, progress=step)
    out.print(f"Deleted {len(repos)} repo{'s' if len(repos) > 1 else ''}.")


# --- the playground ----------------------------------------------------------------------------------

TRY = "Trying the models"
space_app = typer.Typer(
    help="The playground: a Gradio app that generates text from any of the organisation's models.",
    no_args_is_help=True, rich_markup_mode=None,
)
app.add_typer(space_app, name="space", rich_help_panel=TRY)


@space_app.command("run")
def space_run(
    ctx: typer.Context,
    host: Annotated[str, typer.Option("--host", metavar="HOST", help="The address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", metavar="N", min=1, max=65535, help="The port to listen on.")] = 7860,
) -> None:
    """Serve the playground here until Ctrl-C.

    Models come from the hub section of the config: the local Hub folder with backend = "local" (the
    demo's models), else the organisation on the Hub. Needs the space extra: pip install -e '.[space]'.

    Example: huggingtweets --config demo/config.toml space run --port 7860, then open
    http://127.0.0.1:7860/?model=dreamy_kettle
    """
    from bot.publishing.space import serve

    def ready(url: str) -> None:
        out.print(f"Serving the playground at {url} (Ctrl-C stops it); {url}?model=NAME opens one model.")

    serve(settings(ctx), host=host, port=port, ready=ready)
    out.print("Stopped.")


@space_app.command("deploy")
def space_deploy(ctx: typer.Context) -> None:
    """Create or update the playground Space on the Hub, in one commit, and print its URL.

    The Space is <organization>/<name> from the hub and space sections of the config; the token comes
    from HF_TOKEN (or `hf auth login`). A deploy with nothing changed makes no commit.
    """
    from huggingface_hub.utils import disable_progress_bars

    from bot.publishing.space import deploy_space

    disable_progress_bars()
    with _steps("Deploying the playground") as step:
        result = deploy_space(settings(ctx), progress=step)
    out.print(f"Space: {result.url}")
    out.print(f"Commit: {result.commit_url}" if result.changed else "No change: the Space already runs this version.")


# --- running the bot --------------------------------------------------------------------------------


@app.command(rich_help_panel=BOT)
def run(
    ctx: typer.Context,
    once: Annotated[bool, typer.Option("--once", **Flag, help="Poll once, take every request as far as it goes, then exit.")] = False,
    listen: Listen = None,
) -> None:
    """Run the bot: poll mentions, train, publish and reply, until SIGTERM or Ctrl-C.

    Mentions come from X (or, with sources = ["local"] in the bot section of the config, from the inbox
    file). State lives in the state database (state_db); a restart resumes every request where it stood.
    With listen in the monitoring section of the config (or --listen), /healthz and /metrics are served
    there (docs/operating.md).
    """
    from bot.requests.scheduler import Bot

    config = listening_at(ctx, listen)
    setup_logging(fmt=log_format(ctx))
    Bot(config).run(once=once)


@app.command(rich_help_panel=BOT)
def status(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option("--limit", "-n", metavar="N", help="Most recent requests to show.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", **Flag, help="Print the requests as JSON, one object each, for scripts.")] = False,
) -> None:
    """Show the request queue: state, requester, handles, where the job runs, attempts and last error."""
    import time

    from bot.requests.store import Store

    path = Path(settings(ctx).bot.state_db)
    if not path.exists():
        hint = (" (the demo keeps its own: huggingtweets --config demo/config.toml status)"
                if (Path("demo") / DEMO_MARKER).exists() else " (run `huggingtweets run` or `huggingtweets demo` first)")
        raise UserError(f"{path}: no bot state yet{hint}")
    store = Store(path)
    requests = store.requests(limit=limit)
    spend = store.spend_of(r.id for r in requests)
    now = time.time()
    today, week = store.spend_since(now - now % 86400), store.spend_since(now - now % 86400 - 6 * 86400)
    budget = settings(ctx).bot.daily_budget_usd
    waiting = store.waiting_for_budget(now)
    if as_json:
        print(json.dumps({"requests": [status_record(r, spend[r.id]) for r in requests],
                          "spend_usd": {"today": today, "last_7_days": week, "daily_budget": budget or None},
                          "waiting_for_budget": waiting,
                          "waiting_or_in_progress": store.queue_length()}, ensure_ascii=False, indent=2,
                         allow_nan=False))
        return
    table = Table(title=f"Requests in {path}", title_justify="left")
    for column in ("id", "state", "requester", "handles", "age", "job", "attempts", "spend", "last error"):
        table.add_column(column, overflow="fold")
    for r in requests:
        shown = r.reason if r.state in ("failed", "rejected") or r.attempts or r.next_attempt_at > now else ""
        # Every cell made inert once more: what a server or a job said reaches no terminal raw.
        table.add_row(*(inert(cell) for cell in (
            str(r.id), r.state, f"@{r.requester}", " ".join(f"@{h}" for h in r.handles), _age(now - r.created_at),
            where_it_runs(r), str(r.attempts), f"${spend[r.id]:.3f}", shown or "")))
    # In a pipe or a log there is no width to fit: print wide rather than fold every cell.
    (out if out.is_terminal else InertConsole(width=200, markup=False, highlight=False)).print(table)
    out.print(f"{store.queue_length()} waiting or in progress. Spent today (UTC): ${today:.2f}"
              + (f" of ${budget:.2f}" if budget else "") + f"; last 7 days: ${week:.2f}"
              + (f". {waiting} request{'s wait' if waiting != 1 else ' waits'} for tomorrow's budget." if waiting else ""))
    out.print(f"Settings: {ctx.obj.source.describe()}")


@app.command(rich_help_panel=BOT)
def worker(
    ctx: typer.Context,
    name: Annotated[Optional[str], typer.Option("--name", metavar="NAME", help="The worker's name in status and workers (%h: the host; a name without @ gets @HOST). Default: huggingtweets-gpuN@HOST with CUDA_VISIBLE_DEVICES=N, else huggingtweets-PID@HOST.")] = None,
    listen: Listen = None,
) -> None:
    """Run one training worker: take jobs from the queue one at a time, train, publish, until SIGTERM.

    For a bot with executor = "celery" in the train section of the config; start one worker per GPU
    (CUDA_VISIBLE_DEVICES=0, =1, ...). The queue is broker_url in the celery section, or
    CELERY_BROKER_URL; a broker that does not answer within broker_wait_seconds is an error. The worker
    publishes the models itself, under its own organisation (the hub section of its own config), so it
    needs HF_TOKEN; it reads nothing from X and shares no disk with the bot. A worker killed mid-job has
    its job handed to another (docs/recovery.md). With --listen (or listen in the monitoring section of
    the config), /healthz says whether the broker answers, and /metrics counts the jobs this worker took:
    give each worker on one machine its own port.
    """
    from bot.workers.celery_app import run_worker

    config = listening_at(ctx, listen)
    setup_logging(fmt=log_format(ctx))
    run_worker(config, name, banner=log_format(ctx) != "json")


@app.command(rich_help_panel=BOT)
def health(
    ctx: typer.Context,
    listen: Annotated[Optional[str], typer.Option("--listen", metavar="HOST:PORT", help="Where to ask (default: listen in the monitoring section of the config).")] = None,
    timeout: Annotated[float, typer.Option("--timeout", metavar="SECONDS", min=0.1, help="How long to wait for the answer.")] = 10.0,
) -> None:
    """Ask a running bot (or worker) whether it is healthy: exit 0 and "ok: ..." when it is, else exit 1
    with the reason on one line (no successful poll for a while, the state database cannot be written,
    the broker cannot be reached, nothing answers).

    For scripts and container health checks. Example: huggingtweets health && echo fine
    """
    from bot.common.monitoring import ask_health

    where = listen if listen is not None else settings(ctx).monitoring.listen
    if not where:
        raise UsageError("nothing to ask: listen in the monitoring section of the config is not set (or give --listen HOST:PORT)")
    answer = ask_health(where, timeout)
    if not answer.healthy:
        raise UserError(f"unhealthy: {answer.reason}")
    out.print(answer.reason)


@app.command(rich_help_panel=BOT)
def workers(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", **Flag, help="Print the workers as JSON, for scripts.")] = False,
) -> None:
    """Show the Celery workers heard from in the last day: alive or lost, last heartbeat, current job.

    A worker is lost when it has not been heard from for worker_lost_seconds (celery section of the
    config); the bot then hands its job to another. Reads the broker (broker_url or CELERY_BROKER_URL).
    """
    from bot.workers.celery_app import list_workers

    config = settings(ctx)
    found = list_workers(config)
    requests = _requests_by_job(config)
    for worker in found:
        worker["jobs"] = [{"job_id": j, **requests.get(j, {"request": None, "repo": None})} for j in worker["jobs"]]
    if as_json:
        print(json.dumps({"workers": found}, ensure_ascii=False, indent=2))
        return
    if not found:
        out.print("No worker has recorded itself in the last day (start one with `huggingtweets worker`).")
        return
    table = Table(title="Workers", title_justify="left")
    for column in ("worker", "state", "last heartbeat", "pid", "gpu", "job"):
        table.add_column(column, overflow="fold")
    for w in found:
        jobs = ", ".join(f"request {j['request']} ({j['repo']})" if j["request"] is not None else j["job_id"]
                         for j in w["jobs"]) or "-"
        table.add_row(w["name"], w["state"], f"{_age(w['last_heartbeat_seconds'])} ago", str(w["pid"]),
                      w["gpu"] or "-", jobs)
    (out if out.is_terminal else Console(width=200, markup=False, highlight=False)).print(table)
    alive = sum(w["state"] == "alive" for w in found)
    out.print(f"{alive} of {len(found)} alive; a worker is lost after {config.celery.worker_lost_seconds:.0f} s "
              "without a heartbeat, and its job goes to another.")


def _requests_by_job(config: Settings) -> dict[str, dict]:
    """The requests whose jobs are under way, by job id, from the bot's state database when there is one here."""
    from bot.requests.store import Store

    path = Path(config.bot.state_db)
    if not path.exists():
        return {}
    return {r.job_id: {"request": r.id, "repo": r.repo} for r in Store(path).jobs_under_way()}


def status_record(r, spend_usd: float) -> dict:
    """One request as `status --json` shows it."""
    return {"id": r.id, "state": r.state, "kind": r.kind, "requester": r.requester, "handles": list(r.handles),
            "repo": r.repo, "attempts": r.attempts, "last_error": r.reason if r.state == "failed" or r.attempts else None,
            "reason": r.reason, "executor": r.executor, "worker": r.job_host, "job_id": r.job_id, "model_url": r.model_url,
            "reply": r.reply_status, "spend_usd": spend_usd, "created_at": r.created_at, "updated_at": r.updated_at,
            "accounts": [{"id": account_id, "handle": handle} for account_id, handle in r.accounts],
            "next_attempt_at": r.next_attempt_at or None}


def where_it_runs(r) -> str:
    """'local', 'celery', or 'celery on huggingtweets@gpu-2' once the worker is known."""
    return f"{r.executor} on {r.job_host}" if r.executor and r.job_host else r.executor or ""


# --- helpers -------------------------------------------------------------------------------------------


def load_dataset(config: Settings, handles: list[str], archives: list[Path] | None):
    """Read the archives (or download, when none are given) and build the dataset."""
    from bot.data.archive import open_archive
    from bot.data.dataset import build_dataset, pair_archives
    from bot.common.handles import normalize_handles

    handles = normalize_handles(handles, config.data.max_handles)
    if not archives:
        opened = download_posts(handles, config)
    else:
        opened = pair_archives(handles, [open_archive(archive_path(p)) for p in archives])
    return build_dataset(opened, config.data)


def archive_path(path: Path) -> Path:
    """`--archive sample` is the bundled sample archive, unless a file of that name is here."""
    return SAMPLE_ARCHIVE if str(path) == "sample" and not path.exists() else path


def download_posts(handles: list[str], config: Settings) -> dict:
    """Each person's posts from their network (X, or Bluesky for a domain handle), through its cache."""
    from bot.common.handles import network_of

    networks = {network_of(h) for h in handles}
    if len(networks) > 1:
        raise UsageError("a model is made of people on one network: give X handles or Bluesky handles, not both")
    if networks == {"bluesky"}:
        from bot.sources.bluesky import BlueskyClient  # reads from Bluesky; see bot/sources/bluesky.py

        with BlueskyClient.from_settings(config) as client:
            return client.download_archives(handles, progress=True, console=err)
    from bot.sources.x import download_archives  # reads from X; see bot/sources/x.py

    return download_archives(handles, config, console=err)


def counts_table(dataset) -> Table:
    from bot.publishing.facts import COUNT_ROWS

    table = Table(title=f"Training data for {dataset.name}", title_justify="left")
    table.add_column("")
    for user in dataset.users:
        table.add_column(f"@{user.username}", justify="right")
    for row in COUNT_ROWS:
        table.add_row(row.capitalize(), *(f"{getattr(u.counts, row):,}" for u in dataset.users))
    table.add_row("Language", *(u.counts.language or "?" for u in dataset.users))
    return table


def setup_logging(path: Path | None = None, fmt: str = "plain") -> None:
    """Log lines on stderr (or into `path`), with every secret from the environment masked: plain lines,
    or with `fmt` "json" one JSON object per line (`bot.common.logs.JsonFormatter`)."""
    import logging

    from bot.common.logs import AboutFilter, JsonFormatter

    class ScrubbingFormatter(logging.Formatter):
        # The whole line, tracebacks included, made inert: no secret in an exception's text, and no terminal
        # control sequence from a server's message, a display name or a job's log.
        def format(self, record: logging.LogRecord) -> str:
            return inert(super().format(record))

    handler = logging.FileHandler(path, encoding="utf-8") if path else logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         ScrubbingFormatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    handler.addFilter(AboutFilter())
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    # A library's warning (Celery's, say) is a record too: in JSON logs, a line of JSON like the rest.
    logging.captureWarnings(fmt == "json")
    for noisy in ("httpx", "httpx2", "httpcore", "urllib3", "tweepy", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # The work job is skipped every few seconds while a model trains; that is by design, not news.
    logging.getLogger("apscheduler").setLevel(logging.ERROR)


@contextmanager
def _steps(title: str) -> Iterator[Callable[[str], None]]:
    """A spinner on stderr with the current step; yields the function that announces the next one."""
    with progress(console=err) as display:
        task = display.add(title)
        yield lambda step: display.update(task, description=step)


@contextmanager
def _following_the_log(step: Callable[[str], None]) -> Iterator[None]:
    """Show each of the bot's log lines as the current step while it runs."""
    import logging

    class Follow(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            step(scrub(record.getMessage())[:100])

    handler, logger = Follow(logging.INFO), logging.getLogger("huggingtweets")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def to_toml(tables: dict[str, dict]) -> str:
    """Tables of plain values as TOML. JSON's string, number and list syntax is valid TOML, and its
    escaping keeps any path or text from breaking out of its string."""
    return "\n".join(f"[{name}]\n" + "".join(f"{key} = {json.dumps(value, ensure_ascii=False)}\n"
                                               for key, value in keys.items())
                     for name, keys in tables.items())


def main() -> None:
    """Entry point: runs the app and turns every user mistake into one line on stderr, exit 2 or 1."""
    try:
        code = app(standalone_mode=False, prog_name="huggingtweets")
    except typer.TyperException as e:  # a wrong option, a missing argument, an unknown command
        if type(e).__name__ == "NoArgsIsHelpError":  # no command given: the help says what there is
            print(e.ctx.get_help())
            sys.exit(e.exit_code)
        hint = f" (see '{e.ctx.command_path} --help')" if getattr(e, "ctx", None) else ""
        _fail(e.format_message() + hint, e.exit_code)
    except typer.Abort:
        _fail("aborted", 1)
    except UserError as e:
        _fail(str(e), e.exit_code)
    except OSError as e:  # a full disk, a permission, a missing folder: the user's to fix, not a bug
        if e.errno == errno.EPIPE:  # output piped into `head`: stop quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(1)
        _fail(str(e), 1)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    if code == 130:  # typer's answer to Ctrl-C: nothing was finished, and that deserves a line
        _fail("interrupted; nothing was finished", 130)
    sys.exit(code if isinstance(code, int) else 0)  # an int here comes from --help or typer.Exit


def _fail(message: str, exit_code: int) -> NoReturn:
    line = " ".join(scrub(message).split())  # one line, whatever the message holds
    err.print(f"huggingtweets: error: {line}")
    sys.exit(exit_code)


__all__ = ["app", "main", "settings", "UsageError"]
