"""The `huggingtweets` command. Every step of the bot also runs by hand from here.

Run `huggingtweets --help` for the list of commands and `huggingtweets COMMAND --help` for each.
A user mistake prints one line on stderr and exits 2 (bad usage) or 1 (failed).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from bot.config import Settings, load_settings
from bot.errors import UsageError, UserError, scrub

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

_config_path: Path | None = None


@app.callback()
def _root(
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="Settings file (default: ./config.toml of the project).")] = None,
) -> None:
    global _config_path
    _config_path = config


def settings() -> Settings:
    """The settings for this invocation (`--config` or the default file), loaded once."""
    global _settings
    try:
        return _settings
    except NameError:
        _settings = load_settings(_config_path)
        return _settings


Handles = Annotated[list[str], typer.Argument(help="1 to 3 X handles, with or without '@'.", show_default=False)]
Archives = Annotated[Optional[list[Path]], typer.Option("--archive", "-a", help="An X data export (.zip, folder or tweets.js) or a .jsonl of API v2 posts; one per handle.")]


def load_dataset(handles: list[str], archives: list[Path] | None):
    """Read the archives (or download, when none are given) and build the dataset."""
    from bot.archive import open_archive
    from bot.dataset import build_dataset, pair_archives
    from bot.mentions import normalize_handles

    handles = normalize_handles(handles, settings().data.max_handles)
    if not archives:
        from bot.x import download_archives  # reads from X; see bot/x.py

        opened = download_archives(handles, settings())
    else:
        opened = pair_archives(handles, [open_archive(p) for p in archives])
    return build_dataset(opened, settings().data)


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
    handles: Handles,
    archive: Archives = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write train.jsonl, validation.jsonl and stats.json here.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the per-user counts as JSON.")] = False,
) -> None:
    """Clean posts into a training set and show the counts per user.

    Example: huggingtweets dataset dreamy_kettle --archive bot/samples/sample_archive.zip
    """
    ds = load_dataset(handles, archive)
    if out_dir:
        ds.save(out_dir)
    if as_json:
        print(json.dumps(ds.counts_json(), ensure_ascii=False))
    else:
        out.print(counts_table(ds))
        out.print(f"{len(ds.train):,} training and {len(ds.validation):,} validation posts"
                  + (f", written to {out_dir}" if out_dir else ""))


def main() -> None:
    """Entry point: runs the app and turns user errors into one line on stderr."""
    try:
        app(standalone_mode=True)
    except UserError as e:
        err.print(f"huggingtweets: error: {scrub(str(e))}", markup=False, highlight=False)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        err.print("huggingtweets: interrupted", markup=False)
        sys.exit(130)
    except OSError as e:  # a full disk, a permission, a missing folder: the user's to fix, not a bug
        err.print(f"huggingtweets: error: {scrub(str(e))}", markup=False, highlight=False)
        sys.exit(1)


__all__ = ["app", "main", "settings", "UsageError"]
