"""The playground's time from a click to samples, and its memory with the model cache full.

    python benchmarks/space_latency.py             # tiny and GPT-2 124M; target: GPT-2 under 3 s on 2 CPU cores
    python benchmarks/space_latency.py --repeat 10 --json

The app of `bot/publishing/playground/app.py` is served in this process on 127.0.0.1 and asked through `gradio_client`, as
the page's Generate button asks it (HTTP, Gradio's queue, generation, the answer): 3 samples of 40 new
tokens each. Every sample is made to run its full 40 tokens (`min_new_tokens`), so the figures are the
longest a click takes; a real model often stops sooner, at the end of a post.

Models, in a local Hub folder: "tiny", the tiny base (2 layers, 64 wide), and "gpt2-random", the GPT-2
124M architecture (12 layers, 768 wide, 50,257-entry vocabulary) with random weights and the tiny model's
tokenizer, built as `train_speed.py --base-model gpt2-random` builds it: the real weights cannot be
downloaded here, and generation costs the same. The first click on a model also loads it ("cold").

Memory: resident memory of this process (it holds the app and every loaded model) before any model is
loaded, with the cache full of GPT-2 124M copies (`cache_size` of them), and after as many more were
used: the cache forgets the least recently used, so memory stays where it was.
The machine may be shared: the load average is printed with the figures.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TARGET_SECONDS = 3.0
NEW_TOKENS = 40
SAMPLES = 3


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def write_model(folder: Path, architecture: str) -> None:
    """A model folder the playground reads: weights, tokenizer and a generation config that always runs
    NEW_TOKENS tokens."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, GPT2Config, GPT2LMHeadModel

    from bot.training.tiny import tiny_model_dir

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir())
    torch.manual_seed(0)
    if architecture == "tiny":
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir())
    else:
        model = GPT2LMHeadModel(GPT2Config(bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id))
    model.generation_config = GenerationConfig(
        do_sample=True, top_p=0.95, top_k=0, max_new_tokens=60, min_new_tokens=NEW_TOKENS,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)  # no run.json: the playground's prompt is then "My dream is"


def publish(folder: Path, settings) -> None:
    from bot.publishing.hub import publish_folder

    publish_folder(folder, settings, repo_id=f"{settings.hub.organization}/{folder.name}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="warm clicks per model (the median is reported)")
    parser.add_argument("--cache-size", type=int, default=3, help="models the playground keeps in memory")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    import torch
    from gradio_client import Client

    from bot.common.config import parse_settings
    from bot.publishing.space import load_app

    work = Path(tempfile.mkdtemp(prefix="space-latency-"))
    try:
        settings = parse_settings({"hub": {"backend": "local", "local_dir": str(work / "hub")},
                                   "space": {"cache_size": args.cache_size, "max_new_tokens": NEW_TOKENS,
                                             "num_samples": SAMPLES, "list_refresh_seconds": 0}})
        names = ["tiny", "gpt2-random"] + [f"gpt2-random-{i}" for i in range(2, 2 * args.cache_size + 1)]
        first_gpt2 = work / "models" / "gpt2-random"
        for name in names:
            folder = work / "models" / name
            if name.startswith("gpt2-random-"):  # the same weights under other names: more models to hold
                shutil.copytree(first_gpt2, folder)
            else:
                folder.mkdir(parents=True)
                write_model(folder, "tiny" if name == "tiny" else "gpt2")
            publish(folder, settings)

        app = load_app()
        playground = app.Playground(app.LocalModels(settings.hub), cache_size=args.cache_size,
                                    num_samples=SAMPLES, max_new_tokens=NEW_TOKENS, refresh_seconds=0)
        port = free_port()
        app.build_app(playground).launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True,
                                         quiet=True)
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        gc.collect()
        rss_empty = rss_mb()

        def click(name: str) -> tuple[float, list[str]]:
            started = time.perf_counter()
            answer = client.predict(name, "My dream is", api_name="/generate")
            return time.perf_counter() - started, list(answer[1:])

        figures: dict = {"load_average_before": [round(x, 2) for x in os.getloadavg()], "models": {}}
        for name in ("tiny", "gpt2-random"):
            cold, samples = click(name)
            assert len(samples) == SAMPLES
            warm = [click(name)[0] for _ in range(args.repeat)]
            figures["models"][name] = {"cold_s": round(cold, 3), "warm_median_s": round(statistics.median(warm), 3),
                                       "warm_min_s": round(min(warm), 3), "warm_max_s": round(max(warm), 3)}
        for name in names[2: args.cache_size + 1]:  # fill the cache with GPT-2s (gpt2-random is in it already)
            click(name)
        gc.collect()
        rss_full = rss_mb()
        for name in names[args.cache_size + 1:]:  # as many more: each pushes the oldest out
            click(name)
        gc.collect()
        rss_after = rss_mb()
        client.close()
        figures.update({
            "samples": SAMPLES, "new_tokens": NEW_TOKENS, "cache_size": args.cache_size,
            "models_in_cache": len(playground.cache),
            "rss_mb": {"before_any_model": round(rss_empty), "cache_full": round(rss_full),
                       f"after_{len(names) - args.cache_size - 1}_more_models": round(rss_after)},
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "cpu": platform.processor() or platform.machine(),
            "target_gpt2_s": TARGET_SECONDS,
        })
    finally:
        shutil.rmtree(work, ignore_errors=True)

    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"{SAMPLES} samples of {NEW_TOKENS} tokens, {figures['torch_threads']} torch threads, "
          f"load average {figures['load_average_before']} before, {figures['load_average_after']} after")
    for name, f in figures["models"].items():
        print(f"  {name:12s} first click (loads the model) {f['cold_s']:.2f} s; then median {f['warm_median_s']:.2f} s "
              f"(min {f['warm_min_s']:.2f}, max {f['warm_max_s']:.2f}, {args.repeat} clicks)")
    gpt2 = figures["models"]["gpt2-random"]["warm_median_s"]
    print(f"  GPT-2 124M: {gpt2:.2f} s, target {TARGET_SECONDS:.0f} s: {'met' if gpt2 < TARGET_SECONDS else 'NOT met'}")
    print(f"  memory (resident): {figures['rss_mb']} with cache_size {args.cache_size}")


if __name__ == "__main__":
    main()
