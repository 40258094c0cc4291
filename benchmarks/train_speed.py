"""Training speed: the original recipe (transformers' Trainer) against our `train`, same data, same machine.

    python benchmarks/train_speed.py                                 # CPU, the tiny base model
    python benchmarks/train_speed.py --json > benchmarks/results/cpu-tiny.json
    python benchmarks/train_speed.py --device cuda --base-model gpt2-random
    python benchmarks/train_speed.py --repeat 3 --json > benchmarks/results/cpu-tiny.json  # medians of 3
    python benchmarks/train_speed.py --ablation       # ours from the recipe's shape, one change at a time
    python benchmarks/train_speed.py --micro          # one training step: optimiser, attention, precision, dropout
    python benchmarks/train_speed.py --only ours --set batch_size=8 --set block_size=512   # other settings

Both runs happen in this one process, one after the other, on one corpus: a synthetic user of 3,200
posts shaped like real ones (`bot.data.synthetic`: lengths, emoji, links, replies, retweets), cleaned and
split by `bot.data.dataset` exactly as the bot does.

(a) The recipe, as the original huggingtweets ran it: the training posts joined by the end-of-text
    token, four shuffled passes concatenated into one epoch, cut into blocks of the tokenizer's
    `model_max_length` (1,024 for GPT-2 and for the tiny model), the Trainer at batch size 1, fp32,
    AdamW at 1.372e-4 with a cosine schedule and no warm-up, then `save_model`. To be generous to it,
    no checkpoints are written during training (the original saved one every 500 steps).
(b) Ours: `bot.training.train.train_model`, the code path of `huggingtweets train`, with the project's
    settings (config.toml; `--set KEY=VALUE` changes one [train] key), to a finished model folder:
    validation every epoch, samples, card and images included.

Reported for each: wall time to a finished folder (model loading included, Python imports not),
training tokens per second, peak memory (resident memory on CPU, reset between the runs; allocated
GPU memory on CUDA) and the held-out loss, measured the same way for both folders afterwards (the
validation posts packed in 256-token blocks). On CUDA also the model FLOPs utilisation of ours.

`--base-model gpt2-random` is the GPT-2 124M architecture (12 layers, 768 wide, 50,257-entry
vocabulary) with random weights and the tiny model's tokenizer: the real weights cannot be
downloaded here, and the speed is the same.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here needs the network
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

RECIPE_LR = 1.372e-4
RECIPE_PASSES = 4
HELDOUT_BLOCK = 256
# Dense bf16 peak FLOP/s, for the model FLOPs utilisation (MFU).
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12}


# --- measuring ----------------------------------------------------------------------------------


def reset_peak_memory(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        return
    try:  # Linux: "5" resets the peak resident set size (VmHWM) of this process
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_memory_mb(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def heldout_loss(folder: Path, texts: list[str], device) -> float:
    """Loss per token on the validation posts, packed in HELDOUT_BLOCK-token blocks: one measure for both."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bot.training.train import evaluate, pack

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype="float32").to(device)
    ids, labels = pack(texts, tokenizer, HELDOUT_BLOCK)
    return evaluate(model, ids, labels, 16, device)


def model_flops_per_token(config, block_size: int) -> float:
    """Training FLOPs per token: 6 per parameter (forward and backward) plus attention over the
    block (PaLM, appendix B; as nanoGPT's MFU estimate)."""
    n = config.n_layer * 12 * config.n_embd**2 + config.vocab_size * config.n_embd  # blocks + the tied LM head
    return 6 * n + 12 * config.n_layer * config.n_embd * block_size


# --- the corpus and the base models ---------------------------------------------------------------


def build_corpus(posts: int, workdir: Path):
    from bot.data.archive import open_archive
    from bot.data.dataset import build_dataset
    from bot.data.synthetic import synthetic_tweets, write_export

    path = write_export(workdir / "bench_user.zip", synthetic_tweets(posts, seed=3200), username="bench_user",
                        display_name="Bench User")
    return build_dataset({"bench_user": open_archive(str(path))})


def base_model_path(name: str, workdir: Path) -> str:
    """A folder or Hub id from_pretrained can read. "gpt2-random" is built here (see the module doc)."""
    from bot.training.tiny import tiny_model_dir

    if name == "tiny":
        return str(tiny_model_dir())
    if name != "gpt2-random":
        return name
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    folder = workdir / "gpt2-random"
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir())
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def warm_up(path: str, device) -> None:
    """One forward and backward pass before anything is timed, so neither run pays for first-use costs
    (CUDA context, kernel selection, thread pools)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path).to(device)
    x = torch.zeros((1, 64), dtype=torch.long, device=device)
    model(input_ids=x, labels=x).loss.backward()
    sync(device)
    del model


# --- (a) the original recipe --------------------------------------------------------------------


def run_recipe(dataset, base: str, device, out: Path) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments, default_data_collator

    torch.set_float32_matmul_precision("highest")  # plain fp32, as the original (ours turns TF32 on)
    reset_peak_memory(device)
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype="float32")
    block = tokenizer.model_max_length  # the original: blocks of the model's maximum length

    # Four shuffled passes over the posts, joined by the end-of-text token, as one epoch.
    rng = random.Random(42)
    passes = []
    for _ in range(RECIPE_PASSES):
        posts = list(dataset.train)
        rng.shuffle(posts)
        passes += posts
    text = tokenizer.eos_token.join(passes) + tokenizer.eos_token
    ids = tokenizer(text, add_special_tokens=False).input_ids
    blocks = [ids[i:i + block] for i in range(0, len(ids) - block + 1, block)]  # the remainder is dropped

    class Blocks(torch.utils.data.Dataset):
        def __len__(self):
            return len(blocks)

        def __getitem__(self, i):
            t = torch.tensor(blocks[i])
            return {"input_ids": t, "labels": t.clone()}

    args = TrainingArguments(
        output_dir=str(out / "trainer"), num_train_epochs=1, per_device_train_batch_size=1,
        learning_rate=RECIPE_LR, lr_scheduler_type="cosine", warmup_steps=0, weight_decay=0.0,
        optim="adamw_torch", save_strategy="no", eval_strategy="no", report_to="none", logging_steps=50,
        disable_tqdm=True, seed=42, use_cpu=device.type == "cpu", bf16=False, fp16=False)
    # Blocks all have one length, so stacking them is what the original's language-modelling collator did.
    trainer = Trainer(model=model, args=args, train_dataset=Blocks(), data_collator=default_data_collator)
    train_started = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # the Trainer prints its logs; keep stdout for the report
        trainer.train()
    sync(device)
    train_seconds = time.perf_counter() - train_started
    folder = out / "recipe"
    trainer.save_model(str(folder))
    tokenizer.save_pretrained(folder)
    seconds = time.perf_counter() - started
    tokens = len(blocks) * (block - 1)  # predicted tokens, as ours counts them
    shutil.rmtree(out / "trainer", ignore_errors=True)
    return {"seconds": seconds, "train_seconds": train_seconds, "tokens": tokens, "tokens_per_s": tokens / train_seconds,
            "steps": len(blocks), "block_size": block, "batch_size": 1, "peak_memory_mb": peak_memory_mb(device),
            "folder": folder}


# --- (b) ours -----------------------------------------------------------------------------------


def run_ours(dataset, base: str, device, out: Path, overrides: dict) -> dict:
    from bot.common.config import load_settings
    from bot.training.train import train_model

    settings = load_settings()
    train = settings.train.model_copy(update={"device": device.type, **overrides})
    settings = settings.model_copy(update={"train": train})
    reset_peak_memory(device)
    started = time.perf_counter()
    result = train_model(dataset, settings, out / "ours", base_model=base)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "train_seconds": result.timings["train"], "tokens": result.tokens_seen,
            "tokens_per_s": result.tokens_seen / result.timings["train"], "epochs_run": result.epochs_run,
            "best_step": result.best_step, "stop_reason": result.stop_reason, "block_size": result.facts["hyperparameters"]["block_size"],
            "batch_size": train.batch_size, "learning_rate": train.learning_rate, "compile": train.compile,
            "validation_loss": result.validation_loss, "timings": result.timings,
            "peak_memory_mb": peak_memory_mb(device), "folder": result.folder}


# --- what each change contributes ---------------------------------------------------------------

# Ours, starting from the recipe's shape (1 block of 1,024 tokens per step, four passes, GPT-2's
# dropout), then one change at a time until the project's settings.
ABLATION = [
    ("recipe's shape in our loop", {"batch_size": 1, "block_size": 1024, "max_epochs": 4, "patience": 1000, "dropout": 0.1}),
    ("+ no dropout", {"batch_size": 1, "block_size": 1024, "max_epochs": 4, "patience": 1000, "dropout": 0.0}),
    ("+ 128-token blocks", {"batch_size": 1, "block_size": 128, "max_epochs": 4, "patience": 1000, "dropout": 0.0}),
    ("+ stop when the held-out loss stops improving (the defaults)", {}),
]


def run_ablation(dataset, base: str, device, work: Path, overrides: dict) -> list[dict]:
    rows = []
    for i, (label, changes) in enumerate(ABLATION):
        run = run_ours(dataset, base, device, work / f"ablation{i}", {**changes, **overrides})
        run["heldout_loss"] = heldout_loss(run.pop("folder"), dataset.validation, device)
        rows.append({"change": label, "settings": changes, **run})
    return rows


def micro_steps(base: str, device, batch: int, block: int, rounds: int = 15, steps: int = 8) -> list[dict]:
    """Milliseconds per training step (forward, backward, clipping, optimiser) for single changes.

    The variants take turns, a few steps each, for `rounds` rounds, and each reports its median step:
    on a shared machine the load drifts, and taking turns spreads the drift over all of them.
    """
    import torch
    from transformers import AutoModelForCausalLM

    from bot.training.train import autocast_for, causal_lm_loss, set_dropout

    variants = [
        ("ours: written-out GPT-2 loss, SDPA, fused AdamW", {}),
        ("library forward (SDPA attention)", {"library": True}),
        ("library forward, eager attention", {"library": True, "attn": "eager"}),
        ("for-loop AdamW", {"fused": False}),
        ("dropout 0.1", {"dropout": 0.1}),
        ("bf16 autocast" if device.type == "cpu" else "fp32 (no autocast)", {"flip_precision": True}),
    ]

    def make_step(v: dict):
        model = AutoModelForCausalLM.from_pretrained(base, attn_implementation=v.get("attn", "sdpa")).to(device)
        model.loss_type = "ForCausalLM"
        model.train()
        set_dropout(model, v.get("dropout", 0.0))
        fused = v.get("fused", True)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused, foreach=None if fused else False)
        x = torch.randint(0, model.config.vocab_size, (batch, block), device=device)

        def precision():
            if not v.get("flip_precision"):
                return autocast_for(device)
            return torch.autocast("cpu", dtype=torch.bfloat16) if device.type == "cpu" else contextlib.nullcontext()

        def step():
            with precision():
                if v.get("library"):
                    loss = model(input_ids=x, labels=x, use_cache=False).loss
                else:
                    loss = causal_lm_loss(model, x, x)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)

        for _ in range(3):
            step()
        return step

    runners = [(label, make_step(v)) for label, v in variants]
    times: dict[str, list[float]] = {label: [] for label, _ in runners}
    for _ in range(rounds):
        for label, step in runners:
            for _ in range(steps):
                sync(device)
                started = time.perf_counter()
                step()
                sync(device)
                times[label].append(time.perf_counter() - started)
    rows = []
    for label, _ in runners:
        ms = statistics.median(times[label]) * 1000
        rows.append({"variant": label, "ms_per_step": ms, "tokens_per_s": batch * block / ms * 1000})
    return rows


# --- main ---------------------------------------------------------------------------------------


def parse_overrides(pairs: list[str]) -> dict:
    from bot.common.config import TrainSettings

    overrides = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        if key not in TrainSettings.model_fields or not value:
            raise SystemExit(f"--set {pair}: expected KEY=VALUE with a [train] key ({', '.join(TrainSettings.model_fields)})")
        overrides[key] = json.loads(value) if value[0] in "0123456789-.tf[{" else value
    TrainSettings(**overrides)  # validate
    return overrides


def load_average() -> list[float] | None:
    """The machine's 1, 5 and 15-minute load averages at the end: other work on a shared machine slows
    small steps most, so the figures are only comparable at a similar load."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def hardware(device) -> dict:
    import torch

    if device.type == "cuda":
        return {"device": "cuda", "gpu": torch.cuda.get_device_name(), "torch": torch.__version__}
    from bot.training.train import hardware as cpu_hardware

    return {"device": "cpu", "cpu": cpu_hardware(device)["name"], "threads": torch.get_num_threads(),
            "cores": os.cpu_count(), "torch": torch.__version__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--base-model", default=None, help="tiny (default on CPU), gpt2-random (default on CUDA), a folder or a Hub id")
    parser.add_argument("--posts", type=int, default=3200, help="posts of the synthetic user (default 3200)")
    parser.add_argument("--only", choices=("recipe", "ours"), help="run one side only")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="change a [train] setting for ours")
    parser.add_argument("--repeat", type=int, default=1, help="run each side N times, alternating; report medians")
    parser.add_argument("--ablation", action="store_true", help="ours from the recipe's shape, one change at a time")
    parser.add_argument("--micro", action="store_true", help="time one training step for single changes")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    import torch
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here")
    device = torch.device(args.device)
    base_name = args.base_model or ("tiny" if args.device == "cpu" else "gpt2-random")
    overrides = parse_overrides(args.set)

    with tempfile.TemporaryDirectory(prefix="train-speed-") as tmp:
        work = Path(tmp)
        dataset = build_corpus(args.posts, work)
        base = base_model_path(base_name, work)
        warm_up(base, device)
        if args.micro or args.ablation:
            from bot.common.config import load_settings

            train = load_settings().train.model_copy(update=overrides)
            report = {"device": hardware(device), "base_model": base_name, "posts": args.posts}
            if args.micro:
                report["micro"] = {"batch_size": train.batch_size, "block_size": train.block_size,
                                   "steps": micro_steps(base, device, train.batch_size, train.block_size)}
            if args.ablation:
                report["ablation"] = run_ablation(dataset, base, device, work, overrides)
            report["load_average"] = load_average()
            print(json.dumps(report, indent=2) if args.json else format_extras(report))
            return
        samples: dict[str, list[dict]] = {"recipe": [], "ours": []}
        for i in range(args.repeat):
            if args.only != "ours":
                samples["recipe"].append(run_recipe(dataset, base, device, work / f"recipe{i}"))
            if args.only != "recipe":
                samples["ours"].append(run_ours(dataset, base, device, work / f"ours{i}", overrides))
        runs = {name: median_run(found) for name, found in samples.items() if found}
        for name, run in runs.items():
            run["heldout_loss"] = heldout_loss(samples[name][0]["folder"], dataset.validation, device)
            run["all_seconds"] = [round(r["seconds"], 3) for r in samples[name]]

    report = {"device": hardware(device), "base_model": base_name, "posts": args.posts, "load_average": load_average(),
              "train_posts": len(dataset.train), "validation_posts": len(dataset.validation),
              "settings_changed": overrides, "runs": runs, "python": platform.python_version(),
              "transformers": transformers.__version__}
    if "ours" in runs and device.type == "cuda":
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(base)
        name = torch.cuda.get_device_name()
        peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
        achieved = model_flops_per_token(config, runs["ours"]["block_size"]) * runs["ours"]["tokens_per_s"]
        runs["ours"]["model_tflops"] = achieved / 1e12
        runs["ours"]["mfu"] = achieved / peak if peak else None
    if len(runs) == 2:
        a, b = runs["recipe"], runs["ours"]
        report["ratios"] = {"speedup_to_folder": a["seconds"] / b["seconds"],
                            "tokens_per_s": b["tokens_per_s"] / a["tokens_per_s"],
                            "heldout_loss": b["heldout_loss"] / a["heldout_loss"]}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)


def median_run(runs: list[dict]) -> dict:
    """The run whose time to a folder is the median (so its figures belong together)."""
    ordered = sorted(runs, key=lambda r: r["seconds"])
    run = dict(ordered[(len(ordered) - 1) // 2])
    run.pop("folder")
    return run


def format_extras(report: dict) -> str:
    dev = report["device"]
    lines = [f"{report['base_model']} on {dev['device']} ({dev.get('gpu') or dev.get('cpu')})"]
    if "micro" in report:
        m = report["micro"]
        lines.append(f"one training step, {m['batch_size']} x {m['block_size']} tokens:")
        lines += [f"  {r['variant']:<52} {r['ms_per_step']:>8.2f} ms {r['tokens_per_s']:>10,.0f} tokens/s" for r in m["steps"]]
    if "ablation" in report:
        lines.append(f"{'ours, one change at a time':<30} {'to folder':>10} {'training':>9} {'tokens':>9} {'tokens/s':>9} {'held-out':>9}")
        lines += [f"{r['change']:<30} {r['seconds']:>9.2f}s {r['train_seconds']:>8.2f}s {r['tokens']:>9,} "
                  f"{r['tokens_per_s']:>9,.0f} {r['heldout_loss']:>9.4f}" for r in report["ablation"]]
    return "\n".join(lines)


def print_report(report: dict) -> None:
    dev = report["device"]
    where = dev.get("gpu") or f"{dev.get('cpu')}, {dev.get('threads')} threads"
    print(f"{report['base_model']} on {dev['device']} ({where}); {report['posts']:,} posts "
          f"({report['train_posts']:,} train, {report['validation_posts']:,} validation); load average "
          f"{report['load_average']}")
    if report["settings_changed"]:
        print(f"ours with {report['settings_changed']}")
    print(f"{'':8} {'to folder':>10} {'training':>10} {'tokens/s':>10} {'peak MB':>9} {'held-out loss':>14}")
    for name, run in report["runs"].items():
        print(f"{name:8} {run['seconds']:>9.2f}s {run['train_seconds']:>9.2f}s {run['tokens_per_s']:>10,.0f} "
              f"{run['peak_memory_mb']:>9,.0f} {run['heldout_loss']:>14.4f}")
    ours = report["runs"].get("ours", {})
    if ours.get("mfu") is not None:
        print(f"ours: {ours['model_tflops']:.1f} TFLOP/s of model FLOPs, MFU {ours['mfu']:.1%}")
    if "ratios" in report:
        r = report["ratios"]
        print(f"ours vs recipe: {r['speedup_to_folder']:.1f}x faster to a folder, {r['tokens_per_s']:.2f}x the "
              f"tokens/s, held-out loss {r['heldout_loss'] - 1:+.2%}")


if __name__ == "__main__":
    main()
