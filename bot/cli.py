"""The `huggingtweets` command. Every step of the bot also runs by hand from here.

Run `huggingtweets --help` for the list of commands and `huggingtweets COMMAND --help` for each.
A user mistake prints one line on stderr and exits 2 (bad usage) or 1 (failed).
"""

from __future__ import annotations

import errno
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, NoReturn, Optional

import typer
from rich.console import Console
from rich.table import Table

from bot.config import Settings, load_settings
from bot.errors import UsageError, UserError, scrub
from bot.progress import progress

app = typer.Typer(
    name="huggingtweets",
    help="Fine-tune GPT-2 on people's posts and publish the models to the Hugging Face Hub.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

class Invocation:
    """What one run of the command knows: the settings file it was given, read when first needed."""

    def __init__(self, config_path: Path | None):
        self.config_path = config_path
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config_path)
        return self._settings


@app.callback()
def _root(
    ctx: typer.Context,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="Settings file (default: ./config.toml of the project).")] = None,
) -> None:
    ctx.obj = Invocation(config)


def settings(ctx: typer.Context) -> Settings:
    """The settings for this invocation (`--config` or the default file), loaded once."""
    return ctx.obj.settings  # subcommands share the root's object (click hands it down)


Handles = Annotated[list[str], typer.Argument(help="1 to 3 X handles, with or without '@'.", show_default=False)]
Archives = Annotated[Optional[list[Path]], typer.Option("--archive", "-a", help="An X data export (.zip, folder or tweets.js) or a .jsonl of API v2 posts; one per handle.")]


def load_dataset(config: Settings, handles: list[str], archives: list[Path] | None):
    """Read the archives (or download, when none are given) and build the dataset."""
    from bot.archive import open_archive
    from bot.dataset import build_dataset, pair_archives
    from bot.mentions import normalize_handles

    handles = normalize_handles(handles, config.data.max_handles)
    if not archives:
        from bot.x import download_archives  # reads from X; see bot/x.py

        opened = download_archives(handles, config, console=err)
    else:
        opened = pair_archives(handles, [open_archive(p) for p in archives])
    return build_dataset(opened, config.data)


def counts_table(dataset) -> Table:
    from bot.dataset import COUNT_ROWS

    table = Table(title=f"Training data for {dataset.name}", title_justify="left")
    table.add_column("")
    for user in dataset.users:
        table.add_column(f"@{user.username}", justify="right")
    for row in COUNT_ROWS:
        table.add_row(row.capitalize(), *(f"{getattr(u.counts, row):,}" for u in dataset.users))
    table.add_row("Language", *(u.counts.language or "?" for u in dataset.users))
    return table


@app.command()
def dataset(
    ctx: typer.Context,
    handles: Handles,
    archive: Archives = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write train.jsonl, validation.jsonl and stats.json here.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the per-user counts as JSON.")] = False,
) -> None:
    """Clean posts into a training set and show the counts per user.

    Example: huggingtweets dataset dreamy_kettle --archive bot/samples/sample_archive.zip
    """
    with err.status("Reading and cleaning posts…"):  # shown only when stderr is a terminal
        ds = load_dataset(settings(ctx), handles, archive)
    if out_dir:
        ds.save(out_dir)
    if as_json:
        print(json.dumps(ds.counts_json(), ensure_ascii=False))
    else:
        out.print(counts_table(ds))
        out.print(f"{len(ds.train):,} training and {len(ds.validation):,} validation posts"
                  + (f", written to {out_dir}" if out_dir else ""))


def setup_logging() -> None:
    """Log lines on stderr, with every secret from the environment masked."""
    import logging

    class ScrubbingFormatter(logging.Formatter):
        # The whole line, tracebacks included, so no secret gets through in an exception's text.
        def format(self, record: logging.LogRecord) -> str:
            return scrub(super().format(record))

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(ScrubbingFormatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    for noisy in ("httpx", "httpcore", "urllib3", "tweepy", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # The work job is skipped every few seconds while a model trains; that is by design, not news.
    logging.getLogger("apscheduler").setLevel(logging.ERROR)


@app.command()
def run(
    ctx: typer.Context,
    once: Annotated[bool, typer.Option("--once", help="Poll once, take every request as far as it goes, then exit.")] = False,
) -> None:
    """Run the bot: poll mentions, train, publish and reply, until SIGTERM or Ctrl-C.

    Mentions come from X (or, with `[bot] source = "local"`, from the inbox file). State lives in
    `[bot] state_db`; a restart resumes every request where it stood.
    """
    from bot.scheduler import Bot

    setup_logging()
    Bot(settings(ctx)).run(once=once)


@app.command()
def status(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option("--limit", "-n", help="Most recent requests to show.")] = 20,
) -> None:
    """Show the request queue: state, requester, handles, age, attempts and last error."""
    import time

    from bot.store import Store

    path = settings(ctx).bot.state_db
    if not Path(path).exists():
        raise UserError(f"{path}: no bot state yet (run `huggingtweets run` or `huggingtweets demo` first)")
    store = Store(path)
    table = Table(title=f"Requests in {path}", title_justify="left")
    for column in ("id", "state", "requester", "handles", "age", "attempts", "last error"):
        table.add_column(column, overflow="fold")
    for r in store.requests(limit=limit):
        table.add_row(str(r.id), r.state, f"@{r.requester}", " ".join(f"@{h}" for h in r.handles),
                      _age(time.time() - r.created_at), str(r.attempts),
                      r.reason if r.state in ("failed", "rejected") or r.attempts else "")
    out.print(table)
    out.print(f"{store.queue_length()} waiting or in progress")


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


DEMO_MARKER = ".huggingtweets-demo"


@app.command()
def demo(
    ctx: typer.Context,
    folder: Annotated[Path, typer.Option("--dir", help="Where the demo keeps its inbox, outbox, state, models and local Hub (made afresh).")] = Path("demo"),
    mention: Annotated[str, typer.Option(help="The mention to answer.")] = "@huggingtweets train @dreamy_kettle",
) -> None:
    """Answer one sample mention end to end, offline: bundled archive, tiny model, local Hub and outbox.

    Shows the request's path through the states, the model folder and the reply.
    """
    import shutil
    import time

    from bot.config import PROJECT_ROOT
    from bot.local import LocalX
    from bot.scheduler import Bot

    if folder.exists():
        if not (folder / DEMO_MARKER).exists() and any(folder.iterdir()):
            raise UsageError(f"{folder} exists and is not a demo folder; choose another --dir")
        shutil.rmtree(folder)
    root = folder.resolve()
    (root / "archives").mkdir(parents=True)
    (root / DEMO_MARKER).touch()
    shutil.copy(PROJECT_ROOT / "bot" / "samples" / "sample_archive.zip", root / "archives" / "dreamy_kettle.zip")
    config = root / "config.toml"
    demo_config = {
        "train": {"base_model": "tiny"},
        "hub": {"backend": "local", "local_dir": str(root / "hub")},
        "bot": {"source": "local", "state_db": str(root / "bot.sqlite3"), "inbox": str(root / "inbox.jsonl"),
                "outbox": str(root / "outbox.jsonl"), "archives_dir": str(root / "archives"),
                "work_dir": str(root / "work")},
    }
    config.write_text("# The demo's settings: everything local, the tiny base model.\n" + to_toml(demo_config),
                      encoding="utf-8")
    demo_settings = load_settings(config)
    x = LocalX.from_settings(demo_settings)
    x.add_mention(author_username="sleepy_reader", text=mention)
    out.print(f"Mention from @sleepy_reader: {mention}")

    started = time.monotonic()
    setup_logging()
    bot = Bot(demo_settings, source=x)
    bot.run(once=True)
    elapsed = time.monotonic() - started

    request = bot.store.requests(limit=1)[0]
    states = [h[2] for h in bot.store.history(request.id)]
    path = " -> ".join(s for i, s in enumerate(states) if i == 0 or s != states[i - 1])  # retries stay in place
    out.print(f"\nRequest {request.id}: {path}" + (f" ({request.reason})" if request.state in ("failed", "rejected") else ""))
    model_dir = bot.request_dir(request) / "model"
    if model_dir.exists():
        out.print(f"Model folder: {model_dir}")
        out.print("  " + "  ".join(sorted(p.name for p in model_dir.iterdir())))
    if request.model_url:
        out.print(f"Published: {request.model_url}")
    replies = [r for r in LocalX._read(x.outbox)]
    for reply in replies:
        out.print(f"Reply to mention {reply['in_reply_to_tweet_id']} (in {x.outbox}):\n{reply['text']}")
    out.print(f"\nDone in {elapsed:.0f} s. Look around in {folder}/, or run: "
              f"huggingtweets --config {folder}/config.toml status")
    if request.state not in ("done",):
        raise typer.Exit(1)


@contextmanager
def _steps(title: str) -> Iterator[Callable[[str], None]]:
    """A spinner on stderr with the current step; yields the function that announces the next one."""
    with progress(console=err) as display:
        task = display.add(title)
        yield lambda step: display.update(task, description=step)


@app.command()
def publish(
    ctx: typer.Context,
    folder: Annotated[Path, typer.Argument(help="The model folder (from `huggingtweets train`).", show_default=False)],
    repo_id: Annotated[Optional[str], typer.Option("--repo-id", help="ORG/NAME to publish to (default: the configured organization / the run's name).")] = None,
    message: Annotated[Optional[str], typer.Option("--message", "-m", help="Commit message (default: 'Train on N posts from @handle').")] = None,
) -> None:
    """Publish a model folder as one commit, then print the model and commit URLs.

    Files the repo had that the folder lacks are deleted in the same commit.

    The token comes from HF_TOKEN (or `hf auth login`). With backend = "local" in config.toml, the repo is a folder.

    Example: huggingtweets publish models/dreamy_kettle
    """
    from huggingface_hub.utils import disable_progress_bars

    from bot.hub import publish_folder

    disable_progress_bars()  # one progress display on stderr: ours
    with _steps(f"Publishing {folder}") as step:
        result = publish_folder(folder, settings(ctx), repo_id=repo_id, message=message, progress=step)
    out.print(f"Model: {result.model_url}", markup=False, highlight=False)
    out.print(f"Commit: {result.commit_url}", markup=False, highlight=False)


@app.command()
def delete(
    ctx: typer.Context,
    handle: Annotated[str, typer.Argument(help="An X handle, with or without '@'.", show_default=False)],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Delete without asking.")] = False,
) -> None:
    """Delete every model made from HANDLE's posts, after listing them and asking.

    These are the organisation's repos whose name has HANDLE as one of its '-'-separated parts.

    Example: huggingtweets delete alice (deletes alice and alice-bob, never malice)
    """
    from bot.hub import delete_repos, find_repos_for
    from bot.mentions import normalize_handle

    handle = normalize_handle(handle)
    org = settings(ctx).hub.organization
    with _steps(f"Looking for models of @{handle} in {org}"):
        repos = find_repos_for(handle, settings(ctx))
    if not repos:
        out.print(f"No model of {org} is made from @{handle}'s posts.", markup=False, highlight=False)
        return
    out.print(f"Models of {org} made from @{handle}'s posts:", markup=False, highlight=False)
    for repo in repos:
        out.print(f"  {repo}", markup=False, highlight=False)
    what = "it" if len(repos) == 1 else f"these {len(repos)}"
    if not yes and not typer.confirm(f"Delete {what}? This cannot be undone", default=False):
        raise UserError("nothing deleted")
    with _steps("Deleting") as step:
        delete_repos(repos, settings(ctx), progress=step)
    out.print(f"Deleted {len(repos)} repo{'s' if len(repos) > 1 else ''}.", markup=False, highlight=False)


@app.command()
def train(
    ctx: typer.Context,
    handles: Handles,
    archive: Archives = None,
    base_model: Annotated[Optional[str], typer.Option("--base-model", help="A Hub id, a local model folder, or 'tiny' (built locally; no download). Default: train.base_model in the config.")] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", "-o", help="The model folder to write (default: train.output_dir in the config, then the model's name).")] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", min=1, max=100, help="Passes over the training set (default: train.epochs in the config).")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Seed for initialisation, shuffling and samples (default: train.seed in the config).")] = None,
    push: Annotated[bool, typer.Option("--push", help="Publish the folder when it is written (as `huggingtweets publish`).")] = False,
) -> None:
    """Fine-tune a model on the posts and write a Hub-ready model folder.

    Example: huggingtweets train dreamy_kettle --archive bot/samples/sample_archive.zip --base-model tiny
    """
    from bot.job import TrainJob, train_job
    from bot.train import check_out_dir

    if out_dir:
        check_out_dir(out_dir)  # before a download, not after
    config = settings(ctx)
    ds = load_dataset(config, handles, archive)
    overrides = {k: v for k, v in (("epochs", epochs), ("seed", seed)) if v is not None}
    if overrides:
        config = config.model_copy(update={"train": config.train.model_copy(update=overrides)})
    folder = out_dir or config.train.output_dir / ds.name
    result = train_job(ds, TrainJob.from_settings(config, ds.name, base_model), folder, progress=True)
    perplexity = f"{result.perplexity:,.2f}" if result.perplexity is not None else "n/a (nothing held out)"
    out.print(f"Model folder: {result.folder}", markup=False, highlight=False)
    out.print(f"Validation perplexity: {perplexity} (loss {result.validation_loss}), epoch {result.best_epoch} "
              f"of {result.epochs_run} kept", markup=False, highlight=False)
    out.print(f"Took {result.timings['total']:.1f} s ({result.timings['train']:.1f} s training, "
              f"{result.tokens_seen:,} tokens)", markup=False, highlight=False)
    if push:
        from huggingface_hub.utils import disable_progress_bars

        from bot.hub import publish_folder

        disable_progress_bars()
        with _steps(f"Publishing {result.folder}") as step:
            published = publish_folder(result.folder, config, progress=step)
        out.print(f"Model: {published.model_url}", markup=False, highlight=False)
        out.print(f"Commit: {published.commit_url}", markup=False, highlight=False)


@app.command()
def download(
    ctx: typer.Context,
    handle: Annotated[str, typer.Argument(help="An X handle, with or without '@'.", show_default=False)],
    out_file: Annotated[Optional[Path], typer.Option("--out", "-o", help="Where to write the posts (.jsonl); the account goes beside it in NAME.user.json. Default: HANDLE.jsonl here.")] = None,
) -> None:
    """Download a user's posts from X as JSONL of API v2 posts, ready for --archive.

    Reads through the cache (cache_dir in the x section of config.toml): a user read less than
    cache_ttl_hours ago is not read again, and after that only newer posts are fetched.
    Needs X_BEARER_TOKEN.

    Example: huggingtweets download dreamy_kettle --out dreamy_kettle.jsonl
    """
    from bot.mentions import normalize_handle
    from bot.x import download_archives, export_archive

    name = normalize_handle(handle)
    target = out_file or Path(f"{name}.jsonl")
    if target.suffix.lower() not in (".jsonl", ".ndjson"):
        raise UsageError(f"--out {target}: the file must end in .jsonl (it is read back as JSONL of X API v2 posts)")
    archive = download_archives([name], settings(ctx), console=err)[name]
    count = export_archive(archive, target)
    out.print(f"Wrote {count:,} posts of @{archive.account.username or name} to {target}", markup=False, highlight=False)


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
        if type(e).__name__ == "NoArgsIsHelpError":  # the help is already on the screen
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
        err.print("huggingtweets: interrupted", markup=False)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)  # an int here comes from --help or typer.Exit


def _fail(message: str, exit_code: int) -> NoReturn:
    line = " ".join(scrub(message).split())  # one line, whatever the message holds
    err.print(f"huggingtweets: error: {line}", markup=False, highlight=False)
    sys.exit(exit_code)



__all__ = ["app", "main", "settings", "UsageError"]
