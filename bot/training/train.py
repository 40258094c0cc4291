"""Fine-tuning: from a dataset to a Hub-ready model folder.

    >>> from pathlib import Path
    >>> from bot.common.config import load_settings
    >>> from bot.data.dataset import Dataset
    >>> from bot.training.train import train_model
    >>> result = train_model(Dataset.load("out/dreamy_kettle/data"), load_settings(),
    ...                      Path("models/dreamy_kettle"), base_model="tiny")
    >>> result.perplexity, result.best_sample
    (412.7, 'My dream is a quiet garden ...')

The folder holds exactly what goes to `huggingtweets/<name>` on the Hub (see `FOLDER_FILES`):
the weights, config and generation config, the tokenizer, the card (`README.md`), the predictions
image, the loss curve and `run.json`, the run's facts (read by the scheduler and the card).

The loop (`fit`) is a plain PyTorch loop in the spirit of nanoGPT: posts separated by the end-of-text
token are packed into blocks, AdamW at a steady learning rate, the held-out loss measured a few times
a pass; `bot.training.stopping` says when the person's style is learned, and the best weights measured are
kept. CUDA when present (bf16 autocast, TF32, fused AdamW, PyTorch's SDPA attention, optional
torch.compile), CPU otherwise; seeded and reproducible on CPU. The model's loss is `bot.training.gpt2`, the
card's samples `bot.training.sampling`. Why these defaults: benchmarks/README.md.
"""

from __future__ import annotations

import math
import platform
import resource
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch

from bot.common.config import Settings
from bot.common.errors import UsageError, UserError
from bot.publishing.facts import RunFacts
from bot.common.files import partial_folder, replace_folder
from bot.training.gpt2 import IGNORE_INDEX, autocast_for, causal_lm_loss, count_targets, pack
from bot.common.progress import progress as progress_display
from bot.training.sampling import pick_samples
from bot.training.stopping import StoppingRule

# Everything the folder holds, and nothing else (tests check the exact list).
MODEL_FILES = ("config.json", "generation_config.json", "model.safetensors")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
FOLDER_FILES = (*MODEL_FILES, *TOKENIZER_FILES, "README.md", "predictions.png", "loss_curve.png", "run.json")

# Licenses of well-known base models; others are read from the base model's own card.
KNOWN_LICENSES = {"openai-community/gpt2": "mit", "gpt2": "mit", "openai-community/gpt2-medium": "mit",
                  "openai-community/gpt2-large": "mit", "openai-community/gpt2-xl": "mit",
                  "distilbert/distilgpt2": "apache-2.0", "distilgpt2": "apache-2.0"}


@dataclass
class TrainResult:
    """What `train_model` made. `facts` is the content of the folder's `run.json`."""

    folder: Path
    validation_loss: float | None
    perplexity: float | None
    samples: list[str]
    best_sample: str | None
    epochs_run: float  # passes over the training posts
    best_step: int
    stop_reason: str  # one of bot.training.stopping.REASONS
    tokens_seen: int
    timings: dict[str, float]
    peak_memory_bytes: int
    facts: dict = field(repr=False)


# --- base model -------------------------------------------------------------------------------


@dataclass
class BaseModel:
    path: str  # what from_pretrained reads: a local folder or a Hub id
    name: str  # what the card and run.json show: a Hub id, "tiny", or a local folder's name
    hub_id: str | None  # set only when the base model is on the Hub (the card's `base_model`)

    def license(self) -> str:
        """The base model's license, for the card: known, or read from its own card ("other" if unknown)."""
        if self.name == "tiny":
            from bot.training import tiny

            return tiny.LICENSE
        if self.hub_id is None:
            return _card_license(Path(self.path) / "README.md") or "other"
        if self.hub_id in KNOWN_LICENSES:
            return KNOWN_LICENSES[self.hub_id]
        from huggingface_hub import hf_hub_download

        try:  # the weights came from the Hub a moment ago, so its card is reachable too
            return _card_license(Path(hf_hub_download(self.hub_id, "README.md"))) or "other"
        except Exception:
            return "other"


def resolve_base_model(name: str) -> BaseModel:
    """"tiny", a local folder, or a Hub id."""
    if name == "tiny":
        from bot.training import tiny

        return BaseModel(str(tiny.tiny_model_dir()), "tiny", None)
    local = Path(name).expanduser()
    if local.is_dir():
        if not (local / "config.json").exists():
            raise UsageError(f"{name}: not a model folder (no config.json)")
        # No machine path leaves the box: the card shows the folder's name only.
        return BaseModel(str(local), local.name, None)
    if local.exists() or name.startswith((".", "/", "~")):
        raise UsageError(f"{name}: no such model folder")
    return BaseModel(name, name, name)


def _card_license(readme: Path) -> str | None:
    from huggingface_hub import ModelCard

    try:
        return ModelCard.load(readme).data.license if readme.exists() else None
    except Exception:  # a card we cannot parse just means "license unknown"
        return None


TINY_HINT = "--base-model tiny trains a tiny model built on this machine, with no download"


def _check_downloadable(base: BaseModel) -> None:
    """A Hub model that is not in the local cache needs the Hub: find out in seconds, not after the
    library's half minute of retries, and say what works offline."""
    import socket
    from urllib.parse import urlsplit

    from huggingface_hub import constants, try_to_load_from_cache

    if base.hub_id is None or isinstance(try_to_load_from_cache(base.hub_id, "config.json"), str):
        return
    if constants.HF_HUB_OFFLINE:
        raise UserError(f"cannot load base model {base.name!r}: it is not in the local cache and HF_HUB_OFFLINE is "
                        f"set; {TINY_HINT}")
    endpoint = urlsplit(constants.ENDPOINT)
    try:
        socket.create_connection((endpoint.hostname, endpoint.port or (443 if endpoint.scheme == "https" else 80)),
                                 timeout=5).close()
    except OSError as e:
        raise UserError(f"cannot load base model {base.name!r}: it is not in the local cache and "
                        f"{endpoint.hostname} cannot be reached ({e.strerror or type(e).__name__}); {TINY_HINT}") from None


def load_base_model(base: BaseModel, device):
    """The model (SDPA attention, fp32 weights) and tokenizer, or a one-line error."""
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    transformers.utils.logging.disable_progress_bar()  # ours is the one progress display
    _check_downloadable(base)
    try:
        tokenizer = AutoTokenizer.from_pretrained(base.path)
        model = AutoModelForCausalLM.from_pretrained(base.path, attn_implementation="sdpa", dtype="float32")
    except OSError as e:  # no network, unknown repo, missing files: transformers says which
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot load base model {base.name!r}: {first_line} ({TINY_HINT})") from None
    model.loss_type = "ForCausalLM"  # GPT-2's class name does not say so; transformers would warn
    if tokenizer.eos_token_id is None:
        raise UserError(f"base model {base.name!r}: its tokenizer has no end-of-text token")
    return model.to(device), tokenizer


# --- data --------------------------------------------------------------------------------------


# --- the loop ----------------------------------------------------------------------------------


def pick_device(setting: str):
    if setting == "cuda" and not torch.cuda.is_available():
        raise UsageError("train.device is 'cuda' but no CUDA device is available")
    return torch.device("cuda" if setting != "cpu" and torch.cuda.is_available() else "cpu")


def eval_blocks_per_forward(block_size: int, device) -> int:
    """Blocks per forward pass when measuring: 4,096 tokens on a GPU, which is idle on fewer; on a CPU
    the tokens of a training step, MIN_TOKENS_PER_STEP (for the tiny base a quarter faster than one
    block a forward; for GPT-2's shape even, with 200 MB of logits; benchmarks/README.md)."""
    return max(1, (4096 if device.type == "cuda" else MIN_TOKENS_PER_STEP) // block_size)


def evaluate(model, ids, labels, batch_size: int, device) -> float:
    """Mean loss per predicted token over all blocks, `batch_size` blocks per forward pass."""
    model.eval()
    total, count = torch.zeros((), device=device), 0
    with torch.inference_mode(), autocast_for(device):
        for i in range(0, len(ids), batch_size):
            n = count_targets(labels[i:i + batch_size])
            x, y = ids[i:i + batch_size].to(device), labels[i:i + batch_size].to(device)
            total += causal_lm_loss(model, x, y).float() * n
            count += n
    model.train()
    return float(total) / max(1, count)


def set_dropout(model, p: float) -> None:
    """Use dropout `p` everywhere in the model while training (the saved config keeps the base's).

    Without dropout, PyTorch's fused attention kernels run in training too, and no random masks are
    drawn: a small step takes about a quarter less time on CPU.
    """
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = p


@dataclass
class FitResult:
    steps: int = 0
    steps_per_epoch: int = 0
    batch_size: int = 1  # blocks per step
    learning_rate: float = 0.0  # the peak used
    best_step: int = 0
    best_loss: float | None = None
    stop_reason: str = ""
    tokens_seen: int = 0
    step_losses: list[float] = field(default_factory=list)
    measures: list[dict] = field(default_factory=list)  # {"step", "epoch", "validation_loss"}

    @property
    def epochs_run(self) -> float:
        return round(self.steps / max(1, self.steps_per_epoch), 2)


# The learning rate in the settings is for GPT-2's width. A narrower model takes a proportionally
# larger one: Adam's updates to a layer's weights add up over its width (the muP rule), so one setting
# suits GPT-2 and the tiny base alike.
REFERENCE_WIDTH = 768
MAX_WIDTH_SCALE = 16  # a toy model a few units wide would otherwise get a rate that diverges


# Blocks per optimiser step when batch_size is 0 ("auto"). At least MIN_TOKENS_PER_STEP tokens, the
# original recipe's update (one block of 1,024): a step also pays for a pass of the optimiser over every
# weight and for each operation's overhead, which on a CPU make one 256-token block of the tiny base cost
# half as much again per token as four (benchmarks/README.md). A GPU is idle even on that: there, as many
# blocks as still leave MIN_STEPS_PER_EPOCH steps a pass (the stopping rule measures a few times a
# pass), a power of two, at most MAX_AUTO_BATCH.
MIN_TOKENS_PER_STEP = 1024
MIN_STEPS_PER_EPOCH = 64
MAX_AUTO_BATCH = 32


def blocks_per_step(setting: int, n_blocks: int, device, block_size: int) -> int:
    """The batch: `setting` when it is not 0, else the rule above."""
    if setting:
        return setting
    least = max(1, MIN_TOKENS_PER_STEP // block_size)
    if device.type != "cuda":
        return least
    fill = 2 ** int(math.log2(max(1, n_blocks // MIN_STEPS_PER_EPOCH)))
    return max(least, min(MAX_AUTO_BATCH, fill))


def peak_learning_rate(model, learning_rate: float, batch: int = 1) -> float:
    """`learning_rate`, set for GPT-2's width and one block a step, scaled to this model and batch.

    Narrower models take it times 768 / their width; a batch of b blocks takes it times sqrt(b), the
    square-root rule for Adam (the noise of a step's gradient falls as the square root of its size).
    """
    width = getattr(model.config, "n_embd", None) or getattr(model.config, "hidden_size", None) or REFERENCE_WIDTH
    return learning_rate * min(MAX_WIDTH_SCALE, max(1.0, REFERENCE_WIDTH / width)) * math.sqrt(batch)


def fit(model, train, validation, settings, device, progress=None) -> FitResult:
    """Train `model` in place until `bot.training.stopping` says stop, and leave it at the best weights.

    `train` and `validation` are (input_ids, labels) pairs from `pack`. `progress`, when given, is a
    callable `progress(steps_done, total_steps_at_most, description)`.
    """
    cfg = settings
    ids, labels = train[0].to(device), train[1].to(device)  # a few MB: the whole set lives on the device
    targets_per_block = (train[1][:, 1:] != IGNORE_INDEX).sum(1)  # counted on the CPU: no GPU sync
    batch_size = blocks_per_step(cfg.batch_size, len(ids), device, ids.shape[1])
    steps_per_epoch = math.ceil(len(ids) / batch_size)
    rule = StoppingRule(steps_per_epoch, cfg.max_epochs, cfg.evals_per_epoch, cfg.min_improvement, cfg.patience,
                        cfg.cooldown_fraction, cfg.max_minutes * 60 or None, has_heldout=len(validation[0]) > 0)
    # The fused AdamW updates every tensor in one kernel (CUDA and CPU alike) instead of a loop of small ops.
    peak = peak_learning_rate(model, cfg.learning_rate, batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=peak, weight_decay=cfg.weight_decay, fused=True)
    set_dropout(model, cfg.dropout)
    loss_fn = torch.compile(causal_lm_loss) if cfg.compile and device.type == "cuda" else causal_lm_loss
    eval_batch = eval_blocks_per_forward(ids.shape[1], device)
    shuffle = torch.Generator().manual_seed(cfg.seed)
    result = FitResult(steps_per_epoch=steps_per_epoch, batch_size=batch_size, learning_rate=peak)
    best_state, step, started = None, 0, time.perf_counter()
    # Each step's loss is written into one tensor. A list holding a new small tensor each step scattered
    # long-lived bits of memory among the step's large buffers: on a CPU, steps then became a third
    # slower, at once, part way through long runs (benchmarks/README.md).
    losses = torch.zeros(rule.max_steps, device=device)
    model.train()
    while True:
        for batch in torch.randperm(len(ids), generator=shuffle).split(batch_size):
            for group in optimizer.param_groups:
                group["lr"] = peak * min(1.0, (step + 1) / max(1, cfg.warmup_steps)) * rule.lr_factor(step)
            on_device = batch.to(device, non_blocking=True)
            with autocast_for(device):
                loss = loss_fn(model, ids[on_device], labels[on_device])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses[step] = loss.detach()  # no .item() here: it would wait for the GPU every step
            result.tokens_seen += int(targets_per_block[batch].sum())
            step += 1
            if progress:
                progress(step, rule.last_step, "cooling down" if rule.cooling else f"pass {step // steps_per_epoch + 1}")
            if not rule.should_measure(step):
                continue
            val = evaluate(model, *validation, eval_batch, device) if rule.has_heldout else None
            seconds = time.perf_counter() - started
            result.measures.append({"step": step, "epoch": round(step / steps_per_epoch, 3), "seconds": round(seconds, 3),
                                    "validation_loss": None if val is None else round(val, 4)})
            verdict = rule.observe(step, val, seconds)
            if verdict.is_best and not verdict.stop:
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            elif verdict.is_best:
                best_state = None  # the model holds these weights already
            if verdict.restore_best and best_state is not None:
                model.load_state_dict(best_state)
            if verdict.stop:
                break
        else:
            continue
        break
    result.step_losses = [round(v, 4) for v in losses[:step].float().cpu().tolist()]
    if best_state is not None and rule.best_step != step:
        model.load_state_dict(best_state)
    result.steps, result.best_step, result.best_loss, result.stop_reason = step, rule.best_step, rule.best_loss, rule.reason
    if progress:
        progress(step, step, "done")
    return result


# --- the folder ---------------------------------------------------------------------------------


def check_out_dir(out_dir: Path) -> None:
    """Refuse to write over a folder that is not a model folder from an earlier run."""
    if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir()) and not (out_dir / "run.json").exists())):
        raise UsageError(f"{out_dir}: exists and is not an empty folder or an earlier model folder")


def versions() -> dict[str, str]:
    import huggingface_hub
    import tokenizers
    import transformers

    import bot

    return {"huggingtweets": bot.__version__, "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
            "huggingface_hub": huggingface_hub.__version__}


def hardware(device) -> dict:
    if device.type == "cuda":
        return {"device": "cuda", "name": torch.cuda.get_device_name(device), "count": 1}
    name = platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), name)
    except OSError:
        pass
    return {"device": "cpu", "name": name, "threads": torch.get_num_threads()}


def peak_memory(device) -> int:
    """Peak GPU memory allocated on CUDA; the process's peak resident memory on CPU (bytes)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:  # VmHWM: ru_maxrss would also count a parent's peak carried across fork and exec
        with open("/proc/self/status", encoding="ascii") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


def train_model(dataset, settings: Settings, out_dir: Path, base_model: str | None = None,
                progress: bool = False, made_by_bot: bool = False) -> TrainResult:
    """Fine-tune a base model on `dataset` and write the model folder to `out_dir`.

    `base_model` is a Hub id, a local folder or "tiny" (default: `settings.train.base_model`).
    `made_by_bot`: the bot trains it for a mention, so the card tells people to opt out by mention.
    With `progress`, a progress bar is shown on stderr. Raises UserError for a base model that cannot
    be loaded and UsageError for an `out_dir` that holds something else.
    """
    from transformers import GenerationConfig

    from bot.publishing import card

    cfg = settings.train
    out_dir = Path(out_dir)
    check_out_dir(out_dir)
    timings: dict[str, float] = {}
    started = clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = round(now - clock, 3)
        clock = now

    torch.manual_seed(cfg.seed)
    device = pick_device(cfg.device)
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")  # TF32 for any fp32 matmul left outside autocast
        torch.cuda.reset_peak_memory_stats(device)
    base = resolve_base_model(base_model or cfg.base_model)
    model, tokenizer = load_base_model(base, device)
    lap("load")

    block_size = min(cfg.block_size, model.config.max_position_embeddings)
    train = pack(dataset.train, tokenizer, block_size)
    validation = pack(dataset.validation, tokenizer, block_size)
    if not len(train[0]):
        raise UserError("no training posts")
    lap("tokenize")

    with progress_display(show=progress) as display:
        task = display.add("Training", total=None)

        def update(done: int, most: int, description: str) -> None:
            display.update(task, completed=done, total=most, description=f"Training: {description}")

        fitted = fit(model, train, validation, cfg, device, update)
    lap("train")

    samples, best_sample, dropped = pick_samples(model, tokenizer, cfg, dataset.train, device)
    lap("sample")

    val_loss = fitted.best_loss
    perplexity = round(math.exp(val_loss), 3) if val_loss is not None else None
    tmp = partial_folder(out_dir)
    try:
        model.generation_config = GenerationConfig(
            do_sample=True, top_p=0.95, top_k=0, max_new_tokens=cfg.sample_max_new_tokens,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id,
            bos_token_id=tokenizer.bos_token_id)
        model.config.pad_token_id = tokenizer.eos_token_id
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        facts = {
            "name": dataset.name,
            "handles": [u.handle for u in dataset.users],
            "users": dataset.counts_json()["users"],
            "accounts": {u.handle: {"username": u.username, "display_name": u.display_name,
                                    "avatar_url": u.avatar_url, "account_id": u.account_id} for u in dataset.users},
            "language": dataset.languages,
            "base_model": base.name,
            "base_model_hub_id": base.hub_id,
            "license": base.license(),
            "validation_loss": None if val_loss is None else round(val_loss, 4),
            "validation_perplexity": perplexity,
            "prompt": cfg.prompt,
            "samples": samples,
            "best_sample": best_sample,
            "samples_dropped_as_memorised": dropped,
            "hyperparameters": {"learning_rate": fitted.learning_rate,
                                "learning_rate_setting": cfg.learning_rate, "schedule": "warmup-stable-decay",
                                "warmup_steps": cfg.warmup_steps, "max_epochs": cfg.max_epochs,
                                "evals_per_epoch": cfg.evals_per_epoch, "min_improvement": cfg.min_improvement,
                                "patience": cfg.patience, "cooldown_fraction": cfg.cooldown_fraction,
                                "max_minutes": cfg.max_minutes,
                                "batch_size": fitted.batch_size, "block_size": block_size,
                                "weight_decay": cfg.weight_decay, "max_grad_norm": cfg.max_grad_norm,
                                "dropout": cfg.dropout, "optimizer": "AdamW",
                                "precision": "bf16 autocast" if device.type == "cuda" else "fp32",
                                "compiled": bool(cfg.compile and device.type == "cuda")},
            "seed": cfg.seed,
            "epochs_run": fitted.epochs_run,
            "steps": fitted.steps,
            "steps_per_epoch": fitted.steps_per_epoch,
            "best_step": fitted.best_step,
            "stop_reason": fitted.stop_reason,
            "history": fitted.measures,
            "step_losses": fitted.step_losses,
            "train_posts": len(dataset.train),
            "validation_posts": len(dataset.validation),
            "distinct_train_posts": dataset.distinct_train_posts,
            "base_model_type": getattr(model.config, "model_type", None) or None,
            "made_by_bot": made_by_bot,
            "train_tokens": count_targets(train[1]),
            "validation_tokens": count_targets(validation[1]) if len(validation[0]) else 0,
            "tokens_seen": fitted.tokens_seen,
            "versions": versions(),
            "hardware": hardware(device),
            "peak_memory_bytes": peak_memory(device),
            "finished_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        facts["model_id"] = f"{settings.hub.organization}/{dataset.name}"
        facts["bot_handle"] = settings.bot.handle
        facts["min_words"] = settings.data.min_words
        card.write_images(tmp, facts)
        lap("write")
        facts["durations_s"] = dict(timings, total=round(time.perf_counter() - started, 3))
        card.write_card(tmp, facts, settings)
        RunFacts.parse(facts).save(tmp)
        _check_folder(tmp)
        replace_folder(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    timings["total"] = round(time.perf_counter() - started, 3)
    return TrainResult(folder=out_dir, validation_loss=facts["validation_loss"], perplexity=perplexity,
                       samples=samples, best_sample=best_sample, epochs_run=fitted.epochs_run,
                       best_step=fitted.best_step, stop_reason=fitted.stop_reason, tokens_seen=fitted.tokens_seen, timings=timings,
                       peak_memory_bytes=facts["peak_memory_bytes"], facts=facts)


def _check_folder(folder: Path) -> None:
    """Leave exactly FOLDER_FILES: drop what a library may add that the Hub does not need, and fail
    loudly when something is missing."""
    extra = sorted(p.name for p in folder.iterdir() if p.name not in FOLDER_FILES)
    for name in extra:
        path = folder / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    missing = [n for n in FOLDER_FILES if not (folder / n).exists()]
    if missing:
        raise RuntimeError(f"model folder is missing {', '.join(missing)}")


__all__ = ["train_model", "TrainResult", "FOLDER_FILES", "pack", "fit", "evaluate", "resolve_base_model"]
