"""Model quality and speed over a matrix of bases and people: the original recipe against our `train`.

    python benchmarks/train_quality.py                       # CPU: random and pretrained tiny x five corpora
    python benchmarks/train_quality.py --json > benchmarks/results/cpu-quality.json
    python benchmarks/train_quality.py --device cuda --bases gpt2-random   # GPT-2 124M's shape, on a GPU
    python benchmarks/train_quality.py --corpora large,small --bases tiny  # a part of the matrix
    python benchmarks/train_quality.py --set min_improvement=0.05 --recipe-from benchmarks/results/cpu-quality.json
                                  # ours with other [train] settings, against the recipe's saved figures

Each cell runs both sides in this one process, one after the other, on the same cleaned and split
posts (`bot.data.dataset`, as the bot does), with `benchmarks/train_speed.py`'s two runners: (a) the
original huggingtweets recipe (transformers' Trainer, four passes of 1,024-token blocks, AdamW at
1.372e-4 with a cosine schedule), and (b) `bot.training.train.train_model` with the project's settings, to a
finished folder with samples, card and images.

Bases: `tiny-random` (the tiny architecture and tokenizer with random weights), `tiny` (the
pretrained tiny base: the stand-in for pretrained GPT-2) and `gpt2-random` (GPT-2 124M's shape).

Corpora (none of them is the text the tiny base was pretrained on):
  large      one account, 3,200 posts (`bot.data.synthetic`)
  small      one account, about 300 kept posts
  japanese   one account writing in Japanese, 3,200 posts
  three      a three-account model, 1,200 posts each
  prose      3,200 "posts" cut from the docstrings of Python's standard library on this machine:
             real English written by many people, with none of the generator's phrase lists

For each cell: wall time to a finished folder, the held-out loss of both (the validation posts in
256-token blocks, the same scoring for both), the seconds ours needed to first reach the recipe's
final held-out loss (from its own measures, with the recipe's folder scored the same way), and why
ours stopped. Summary: the worst loss ratio (ours / recipe: below 1.01 everywhere is the target) and
the geometric mean of the speed ratios (recipe / ours).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pydoc
import random
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_speed as speed  # noqa: E402  (the two runners and the scoring)

CORPORA = ("large", "small", "japanese", "three", "prose")
BASES = ("tiny-random", "tiny")
PROSE_MODULES = ("os", "pathlib", "json", "re", "collections", "itertools", "functools", "typing", "asyncio",
                 "subprocess", "logging", "argparse", "datetime", "decimal", "email", "http.client", "socket",
                 "sqlite3", "threading", "unittest", "urllib.request", "xml.etree.ElementTree", "zipfile", "tarfile",
                 "shutil", "string", "textwrap", "random", "statistics", "inspect", "dataclasses", "enum", "csv")


def prose_posts(n: int) -> list[str]:
    """Up to `n` post-sized pieces (40 to 280 characters) of the standard library's docstrings."""
    import importlib

    pieces: list[str] = []
    for name in PROSE_MODULES:
        module = importlib.import_module(name)
        text = pydoc.render_doc(module, renderer=pydoc.plaintext)
        for paragraph in re.split(r"\n\s*\n", text):
            words = " ".join(paragraph.split())
            if len(words) < 40 or sum(c.isalpha() or c.isspace() for c in words) < 0.85 * len(words):
                continue  # signatures, tables and the like
            for sentence in re.split(r"(?<=[.!?])\s+", words):
                if 40 <= len(sentence) <= 280:
                    pieces.append(sentence)
    unique = list(dict.fromkeys(pieces))
    random.Random(0).shuffle(unique)
    return unique[:n]


def build_corpus(kind: str, work: Path):
    from bot.data.archive import open_archive
    from bot.data.dataset import build_dataset
    from bot.data.synthetic import synthetic_tweets, write_export

    def export(handle: str, tweets: list[dict]):
        return open_archive(str(write_export(work / f"{handle}.zip", tweets, username=handle, display_name=handle)))

    if kind == "large":
        return build_dataset({"large_user": export("large_user", synthetic_tweets(3200, seed=11))})
    if kind == "small":
        return build_dataset({"small_user": export("small_user", synthetic_tweets(400, seed=12))})
    if kind == "japanese":
        return build_dataset({"nihongo": export("nihongo", synthetic_tweets(3200, seed=13, japanese_share=1.0))})
    if kind == "three":
        return build_dataset({f"friend_{i}": export(f"friend_{i}", synthetic_tweets(1200, seed=20 + i)) for i in range(3)})
    if kind == "prose":
        texts = prose_posts(3200)
        tweets = synthetic_tweets(len(texts), seed=14)
        for tweet, text in zip(tweets, texts):
            tweet.update(text=text, lang="en")
            tweet.pop("referenced_tweets", None)
        return build_dataset({"stdlib_docs": export("stdlib_docs", tweets)})
    raise SystemExit(f"unknown corpus {kind!r} (known: {', '.join(CORPORA)})")


def base_path(name: str, work: Path) -> str:
    """A folder for each base; `tiny-random` is the tiny model with its weights drawn afresh."""
    if name != "tiny-random":
        return speed.base_model_path(name, work)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bot.training.tiny import SEED, tiny_model_dir

    folder = work / "tiny-random"
    if not folder.exists():
        pretrained = AutoModelForCausalLM.from_pretrained(tiny_model_dir())
        torch.manual_seed(SEED)
        model = type(pretrained)(pretrained.config)
        model.save_pretrained(folder)
        AutoTokenizer.from_pretrained(tiny_model_dir()).save_pretrained(folder)
    return str(folder)


def recipe_measure(folder: Path, dataset, block_size: int, device) -> float:
    """The recipe's final loss, scored as ours scores itself while training (its validation blocks)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bot.training.train import evaluate, pack

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype="float32").to(device)
    return evaluate(model, *pack(dataset.validation, tokenizer, block_size), 32, device)


def run_cell(base_name: str, corpus: str, device, work: Path, overrides: dict, saved_recipe: dict | None) -> dict:
    """One cell; with `saved_recipe` (a cell of an earlier report) the recipe is not run again."""
    dataset = build_corpus(corpus, work / corpus)
    base = base_path(base_name, work)
    speed.warm_up(base, device)
    cell_dir = work / f"{base_name}-{corpus}"
    recipe = None
    if saved_recipe is None:  # the recipe first, as in every report so far
        recipe = speed.run_recipe(dataset, base, device, cell_dir)
    ours = speed.run_ours(dataset, base, device, cell_dir, overrides)
    ours_folder = ours.pop("folder")
    ours["heldout_loss"] = speed.heldout_loss(ours_folder, dataset.validation, device)
    facts = json.loads((ours_folder / "run.json").read_text(encoding="utf-8"))
    if recipe is not None:
        recipe_folder = recipe.pop("folder")
        recipe = {"seconds": recipe["seconds"], "train_seconds": recipe["train_seconds"],
                  "heldout_loss": speed.heldout_loss(recipe_folder, dataset.validation, device),
                  "target": recipe_measure(recipe_folder, dataset, facts["hyperparameters"]["block_size"], device)}
    else:  # reports before the target was saved: the held-out loss, scored the same way but for the batching
        recipe = {"seconds": saved_recipe["recipe_seconds"], "train_seconds": saved_recipe["recipe_train_seconds"],
                  "heldout_loss": saved_recipe["recipe_heldout_loss"],
                  "target": saved_recipe.get("recipe_target_loss", saved_recipe["recipe_heldout_loss"])}
    reached = next((m["seconds"] for m in facts["history"]
                    if m["validation_loss"] is not None and m["validation_loss"] <= recipe["target"]), None)
    return {
        "base": base_name, "corpus": corpus, "train_posts": len(dataset.train), "validation_posts": len(dataset.validation),
        "recipe_seconds": round(recipe["seconds"], 2), "ours_seconds": round(ours["seconds"], 2),
        "speed_ratio": round(recipe["seconds"] / ours["seconds"], 2),
        "recipe_heldout_loss": round(recipe["heldout_loss"], 4), "ours_heldout_loss": round(ours["heldout_loss"], 4),
        "loss_ratio": round(ours["heldout_loss"] / recipe["heldout_loss"], 4),
        "ours_seconds_to_recipe_loss": reached, "ours_passes": facts["epochs_run"], "stop_reason": facts["stop_reason"],
        "recipe_train_seconds": round(recipe["train_seconds"], 2), "ours_train_seconds": round(ours["train_seconds"], 2),
        "recipe_target_loss": round(recipe["target"], 4), "recipe_saved": saved_recipe is not None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--bases", default=None, help=f"comma-separated (default on CPU: {','.join(BASES)})")
    parser.add_argument("--corpora", default=",".join(CORPORA), help=f"comma-separated (default: {','.join(CORPORA)})")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="change a [train] setting for ours")
    parser.add_argument("--recipe-from", type=Path, metavar="REPORT",
                        help="take the recipe's times and losses from an earlier --json report instead of running it")
    args = parser.parse_args()
    overrides = speed.parse_overrides(args.set)
    saved = {}
    if args.recipe_from:
        saved = {(c["base"], c["corpus"]): c for c in json.loads(args.recipe_from.read_text(encoding="utf-8"))["cells"]}

    import torch
    import transformers

    transformers.utils.logging.set_verbosity_error()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here")
    device = torch.device(args.device)
    bases = (args.bases or (",".join(BASES) if args.device == "cpu" else "gpt2-random")).split(",")
    missing = [f"{b} x {c}" for b in bases for c in args.corpora.split(",") if args.recipe_from and (b, c) not in saved]
    if missing:  # said before any cell runs, not after the first few
        raise SystemExit(f"{args.recipe_from}: no cell {', '.join(missing)}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="train-quality-") as tmp:
        for base in bases:
            for corpus in args.corpora.split(","):
                rows.append(run_cell(base, corpus, device, Path(tmp), overrides, saved.get((base, corpus))))
                if not args.json:
                    r = rows[-1]
                    print(f"{base:12} {corpus:9} recipe {r['recipe_seconds']:6.1f} s loss {r['recipe_heldout_loss']:.3f} | "
                          f"ours {r['ours_seconds']:5.1f} s loss {r['ours_heldout_loss']:.3f} "
                          f"({r['ours_passes']:g} passes, {r['stop_reason']}; recipe's loss after "
                          f"{r['ours_seconds_to_recipe_loss']} s) | x{r['speed_ratio']:.1f} faster, loss x{r['loss_ratio']:.3f}",
                          flush=True)
    summary = {"worst_loss_ratio": max(r["loss_ratio"] for r in rows),
               "mean_loss_ratio": round(sum(r["loss_ratio"] for r in rows) / len(rows), 4),
               "geomean_speed_ratio": round(math.exp(sum(math.log(r["speed_ratio"]) for r in rows) / len(rows)), 2),
               "slowest_speed_ratio": min(r["speed_ratio"] for r in rows)}
    report = {"device": speed.hardware(device), "load_average": speed.load_average(), "settings": overrides,
              "recipe_from": str(args.recipe_from) if args.recipe_from else None, "cells": rows, "summary": summary,
              "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"worst loss ratio {summary['worst_loss_ratio']:.3f} (mean {summary['mean_loss_ratio']:.3f}); speed: "
              f"geometric mean x{summary['geomean_speed_ratio']:.1f}, slowest x{summary['slowest_speed_ratio']:.1f}; "
              f"load {report['load_average']}")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
