"""Fine-tuning: from a dataset to a Hub-ready model folder.

    >>> from pathlib import Path
    >>> from bot.config import load_settings
    >>> from bot.dataset import Dataset
    >>> from bot.train import train_model
    >>> result = train_model(Dataset.load("out/dreamy_kettle/data"), load_settings(),
    ...                      Path("models/dreamy_kettle"), base_model="tiny")
    >>> result.perplexity, result.best_sample
    (412.7, 'My dream is a quiet garden ...')

The folder holds exactly what goes to `huggingtweets/<name>` on the Hub (see `FOLDER_FILES`):
the weights, config and generation config, the tokenizer, the card (`README.md`), the predictions
image, the loss curve and `run.json`, the run's facts (read by the scheduler and the card).

The loop is a plain PyTorch loop in the spirit of nanoGPT: posts separated by the end-of-text token
are packed into blocks, AdamW with a cosine schedule, a validation pass after each epoch, the best
epoch kept, early stop when the validation loss gets worse. CUDA when present (bf16 autocast, TF32,
fused AdamW, PyTorch's SDPA attention, optional torch.compile), CPU otherwise; seeded and
reproducible on CPU. Why the defaults are one pass of small updates: benchmarks/README.md.
"""

from __future__ import annotations

import json
import math
import os
import platform
import resource
import shutil
import tempfile
import time
import unicodedata
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import regex

from bot.config import Settings
from bot.errors import UsageError, UserError
from bot.facts import RunFacts

# Everything the folder holds, and nothing else (tests check the exact list).
MODEL_FILES = ("config.json", "generation_config.json", "model.safetensors")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
FOLDER_FILES = (*MODEL_FILES, *TOKENIZER_FILES, "README.md", "predictions.png", "loss_curve.png", "run.json")

# Licenses of well-known base models; others are read from the base model's own card.
KNOWN_LICENSES = {"openai-community/gpt2": "mit", "gpt2": "mit", "openai-community/gpt2-medium": "mit",
                  "openai-community/gpt2-large": "mit", "openai-community/gpt2-xl": "mit",
                  "distilbert/distilgpt2": "apache-2.0", "distilgpt2": "apache-2.0"}
IGNORE_INDEX = -100  # label of padding: no loss there


@dataclass
class TrainResult:
    """What `train_model` made. `facts` is the content of the folder's `run.json`."""

    folder: Path
    validation_loss: float | None
    perplexity: float | None
    samples: list[str]
    best_sample: str | None
    epochs_run: int
    best_epoch: int
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
            from bot import tiny

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
        from bot import tiny

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


def load_base_model(base: BaseModel, device):
    """The model (SDPA attention, fp32 weights) and tokenizer, or a one-line error."""
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    transformers.utils.logging.disable_progress_bar()  # ours is the one progress display
    try:
        tokenizer = AutoTokenizer.from_pretrained(base.path)
        model = AutoModelForCausalLM.from_pretrained(base.path, attn_implementation="sdpa", dtype="float32")
    except OSError as e:  # no network, unknown repo, missing files: transformers says which
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot load base model {base.name!r}: {first_line}") from None
    model.loss_type = "ForCausalLM"  # GPT-2's class name does not say so; transformers would warn
    if tokenizer.eos_token_id is None:
        raise UserError(f"base model {base.name!r}: its tokenizer has no end-of-text token")
    return model.to(device), tokenizer


# --- data --------------------------------------------------------------------------------------


def pack(texts: list[str], tokenizer, block_size: int):
    """Tokenize posts, join them with the end-of-text token and cut the stream into blocks.

    Returns (input_ids, labels), both [blocks, block_size]; the last block is padded, and its
    padding carries the label IGNORE_INDEX so it adds no loss.
    """
    import torch

    eos = tokenizer.eos_token_id
    stream: list[int] = []
    for ids in tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []:
        stream.extend(ids)
        stream.append(eos)
    n_blocks = math.ceil(len(stream) / block_size)
    pad = n_blocks * block_size - len(stream)
    ids = torch.tensor(stream + [eos] * pad, dtype=torch.long).view(n_blocks, block_size)
    labels = ids.clone()
    if pad:
        labels[-1, block_size - pad:] = IGNORE_INDEX
    return ids, labels


def count_targets(labels) -> int:
    """Tokens that are predicted in a block (the first of each block has nothing before it)."""
    return int((labels[:, 1:] != IGNORE_INDEX).sum())


# --- the loop ----------------------------------------------------------------------------------


def pick_device(setting: str):
    import torch

    if setting == "cuda" and not torch.cuda.is_available():
        raise UsageError("train.device is 'cuda' but no CUDA device is available")
    return torch.device("cuda" if setting != "cpu" and torch.cuda.is_available() else "cpu")


def causal_lm_loss(model, ids, labels):
    """Mean next-token loss of `model` on blocks `ids` (targets `labels`, IGNORE_INDEX not counted).

    GPT-2 runs through `_gpt2_loss` below, the same computation written out in a dozen lines as in
    nanoGPT: it skips the bookkeeping of the library's forward (cache objects, masks, output classes),
    about a sixth of a small step on CPU (benchmarks/README.md). Other models use their own forward.
    """
    if _plain_gpt2(model):
        return _gpt2_loss(model, ids, labels)
    return model(input_ids=ids, labels=labels, use_cache=False).loss


def _plain_gpt2(model) -> bool:
    """A GPT-2 with the original's attention and activation, which `_gpt2_loss` reproduces exactly."""
    c = model.config
    return (c.model_type == "gpt2" and hasattr(model, "transformer") and c.scale_attn_weights
            and not c.scale_attn_by_inverse_layer_idx and not c.reorder_and_upcast_attn
            and not c.add_cross_attention and c.activation_function in ("gelu_new", "gelu_pytorch_tanh"))


def _gpt2_loss(model, ids, labels):
    import torch.nn.functional as F

    t, heads = model.transformer, model.config.n_head
    batch, length = ids.shape

    def drop(x, module):  # the model's own dropout rates (see set_dropout), only while training
        return F.dropout(x, module.p, model.training)

    def linear(x, conv):  # GPT-2's Conv1D: x @ W + b, W stored (in, out)
        return x @ conv.weight + conv.bias

    x = drop(t.wte(ids) + t.wpe.weight[:length], t.drop)
    for block in t.h:
        q, k, v = linear(block.ln_1(x), block.attn.c_attn).split(x.shape[-1], dim=2)
        q, k, v = (z.view(batch, length, heads, -1).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                           dropout_p=block.attn.attn_dropout.p if model.training else 0.0)
        x = x + drop(linear(y.transpose(1, 2).reshape(batch, length, -1), block.attn.c_proj), block.attn.resid_dropout)
        h = F.gelu(linear(block.ln_2(x), block.mlp.c_fc), approximate="tanh")
        x = x + drop(linear(h, block.mlp.c_proj), block.mlp.dropout)
    logits = model.lm_head(t.ln_f(x))
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=IGNORE_INDEX)


def autocast_for(device):
    """bf16 autocast on CUDA (GPT-2 trains stably in bf16; no loss scaling needed); fp32 on CPU."""
    import torch

    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def cosine_lr(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1.0 + math.cos(math.pi * progress))


def evaluate(model, ids, labels, batch_size: int, device) -> float:
    """Mean loss per predicted token over all blocks."""
    import torch

    model.eval()
    total, count = torch.zeros((), device=device), 0
    with torch.no_grad(), autocast_for(device):
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
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = p


@dataclass
class FitResult:
    best_epoch: int = 0
    best_loss: float | None = None
    epochs_run: int = 0
    tokens_seen: int = 0
    step_losses: list[float] = field(default_factory=list)
    epoch_losses: list[dict] = field(default_factory=list)


def fit(model, train, validation, settings, device, progress=None) -> FitResult:
    """Train `model` in place and leave it at the weights of the best epoch.

    `train` and `validation` are (input_ids, labels) pairs from `pack`. `progress`, when given, is a
    callable `progress(steps_done, description)`.
    """
    import torch

    cfg = settings
    ids, labels = train[0].to(device), train[1].to(device)  # a few MB: the whole set lives on the device
    targets_per_block = (train[1][:, 1:] != IGNORE_INDEX).sum(1)  # counted on the CPU: no GPU sync
    steps_per_epoch = math.ceil(len(ids) / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    warmup = round(cfg.warmup_fraction * total_steps)
    # The fused AdamW updates every tensor in one kernel (CUDA and CPU alike) instead of a loop of small ops.
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay, fused=True)
    set_dropout(model, cfg.dropout)
    loss_fn = torch.compile(causal_lm_loss) if cfg.compile and device.type == "cuda" else causal_lm_loss
    eval_batch = max(1, 4096 // ids.shape[1])  # no gradients: larger batches, fewer passes
    shuffle = torch.Generator().manual_seed(cfg.seed)
    result, best_state, step = FitResult(), None, 0
    model.train()
    for epoch in range(1, cfg.epochs + 1):
        losses = []
        for batch in torch.randperm(len(ids), generator=shuffle).split(cfg.batch_size):
            for group in optimizer.param_groups:
                group["lr"] = cosine_lr(step, total_steps, cfg.learning_rate, warmup)
            on_device = batch.to(device, non_blocking=True)
            with autocast_for(device):
                loss = loss_fn(model, ids[on_device], labels[on_device])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.detach())  # no .item() here: it would wait for the GPU every step
            result.tokens_seen += int(targets_per_block[batch].sum())
            step += 1
            if progress:
                progress(step, f"epoch {epoch}/{cfg.epochs}")
        epoch_train = torch.stack(losses).float().cpu().tolist()
        result.step_losses += [round(v, 4) for v in epoch_train]
        result.epochs_run = epoch
        val = evaluate(model, *validation, eval_batch, device) if len(validation[0]) else None
        result.epoch_losses.append({"epoch": epoch, "train_loss": round(sum(epoch_train) / len(epoch_train), 4),
                                    "validation_loss": None if val is None else round(val, 4)})
        if val is None:  # nothing held out: the last epoch is the one kept
            result.best_epoch = epoch
        elif result.best_loss is None or val < result.best_loss:
            result.best_epoch, result.best_loss = epoch, val
            # Keep a copy unless this is the last epoch (then the model already holds these weights).
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()} if epoch < cfg.epochs else None
        elif cfg.early_stopping:
            break
    if best_state is not None and result.best_epoch != result.epochs_run:
        model.load_state_dict(best_state)
    if progress:
        progress(total_steps, "done")
    return result


# --- samples ------------------------------------------------------------------------------------

MENTION_RE = regex.compile(r"([@＠])(?=[A-Za-z0-9_])")
WORD_JOINER = "\u2060"


def neutralise_mentions(text: str) -> str:
    """Put an invisible word joiner after every '@' that starts a handle: "@alice" reads the same,
    but X, the Hub and GitHub no longer see a mention, so a model page never pings anyone."""
    return MENTION_RE.sub(lambda m: m.group(1) + WORD_JOINER, text)


# CJK characters count one each (no spaces between words); other words are runs of letters/digits.
TOKEN_RE = regex.compile(r"[\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}]|[\p{L}\p{N}]+")
NGRAM = 8


def _words(text: str) -> list[str]:
    return TOKEN_RE.findall(unicodedata.normalize("NFKC", text).casefold())


class MemorisationFilter:
    """Tells whether a sample repeats a training post.

    Measure: texts are compared as sequences of words (NFKC, case-folded, punctuation, emoji and
    spacing ignored; each CJK character is a word). A sample is memorised when it shares any run of
    8 consecutive words with a training post, or, when shorter than that, when all its words appear
    in a row inside one training post. So verbatim copies, copies with changed punctuation or case,
    and long copied stretches are all caught.
    """

    def __init__(self, posts: list[str]):
        self.ngrams: set[tuple[str, ...]] = set()
        self.joined: list[str] = []
        for post in posts:
            words = _words(post)
            self.ngrams.update(tuple(words[i:i + NGRAM]) for i in range(len(words) - NGRAM + 1))
            self.joined.append(" " + " ".join(words) + " ")

    def is_memorised(self, sample: str) -> bool:
        words = _words(sample)
        if len(words) >= NGRAM:
            return any(tuple(words[i:i + NGRAM]) in self.ngrams for i in range(len(words) - NGRAM + 1))
        needle = " " + " ".join(words) + " "
        return any(needle in post for post in self.joined)


# Control characters, and the replacement character a cut-off multi-byte token decodes to.
UNPRINTABLE_RE = regex.compile(r"[\p{Cc}\p{Cs}\p{Co}\uFFFD]")


def generate_samples(model, tokenizer, prompt: str, n: int, max_new_tokens: int, seed: int, device) -> list[str]:
    """`n` samples from `prompt` (top-p 0.95), each cut at end-of-text or the first line break."""
    import torch

    model.eval()
    prompt_ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids.to(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad():
        torch.manual_seed(seed)
        prompt_ids = prompt_ids.expand(n, -1)
        out = model.generate(prompt_ids, attention_mask=torch.ones_like(prompt_ids), do_sample=True, top_p=0.95, top_k=0,
                             max_new_tokens=max_new_tokens, pad_token_id=tokenizer.eos_token_id,
                             eos_token_id=tokenizer.eos_token_id)
    samples = []
    for row in out[:, prompt_ids.shape[1]:].tolist():
        if tokenizer.eos_token_id in row:
            row = row[:row.index(tokenizer.eos_token_id)]
        text = (prompt + tokenizer.decode(row, skip_special_tokens=True)).split("\n")[0]
        samples.append(" ".join(UNPRINTABLE_RE.sub("", text).split()))
    return samples


def sample_scores(model, tokenizer, prompt: str, samples: list[str], device) -> list[float]:
    """Mean log-probability of each sample's continuation under the model (higher: more typical)."""
    import torch

    scores = []
    n_prompt = len(tokenizer(prompt, add_special_tokens=False).input_ids)
    with torch.no_grad():
        for s in samples:
            ids = tokenizer(s, return_tensors="pt", add_special_tokens=False).input_ids.to(device)
            if ids.shape[1] <= n_prompt:
                scores.append(float("-inf"))
                continue
            logp = model(input_ids=ids).logits[0, :-1].float().log_softmax(-1)
            token_logp = logp.gather(1, ids[0, 1:, None])[n_prompt - 1:]
            scores.append(float(token_logp.mean()))
    return scores


def pick_samples(model, tokenizer, settings, train_posts: list[str], device) -> tuple[list[str], str | None, int]:
    """Samples to publish, the best one, and how many were dropped as memorised.

    Up to three rounds of generation, until `num_samples` samples pass the memorisation filter. The
    best sample is the one the model finds most likely among those that add at least three words to
    the prompt (the widget's example output on the model page).
    """
    memo = MemorisationFilter(train_posts)
    kept: list[str] = []
    dropped = 0
    for attempt in range(3):
        for s in generate_samples(model, tokenizer, settings.prompt, settings.num_samples,
                                  settings.sample_max_new_tokens, settings.seed + attempt, device):
            if s in kept or len(kept) >= settings.num_samples:
                continue
            if memo.is_memorised(s):
                dropped += 1
                continue
            kept.append(s)
        if len(kept) >= settings.num_samples:
            break
    prompt_words = len(_words(settings.prompt))
    scores = sample_scores(model, tokenizer, settings.prompt, kept, device)
    candidates = [(sc, s) for sc, s in zip(scores, kept) if len(_words(s)) >= prompt_words + 3]
    best = max(candidates, key=lambda c: c[0])[1] if candidates else (kept[0] if kept else None)
    published = [neutralise_mentions(s) for s in kept]
    return published, (neutralise_mentions(best) if best else None), dropped


# --- the folder ---------------------------------------------------------------------------------


def check_out_dir(out_dir: Path) -> None:
    """Refuse to write over a folder that is not a model folder from an earlier run."""
    if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir()) and not (out_dir / "run.json").exists())):
        raise UsageError(f"{out_dir}: exists and is not an empty folder or an earlier model folder")


def _replace_folder(tmp: Path, out_dir: Path) -> None:
    """Move the finished folder into place, so readers never see half a folder."""
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.rename(out_dir, old)
        os.rename(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, out_dir)


def versions() -> dict[str, str]:
    import huggingface_hub
    import tokenizers
    import torch
    import transformers

    import bot

    return {"huggingtweets": bot.__version__, "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
            "huggingface_hub": huggingface_hub.__version__}


def hardware(device) -> dict:
    import torch

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
    import torch

    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:  # VmHWM: ru_maxrss would also count a parent's peak carried across fork and exec
        with open("/proc/self/status", encoding="ascii") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


def train_model(dataset, settings: Settings, out_dir: Path, base_model: str | None = None,
                progress: bool = False) -> TrainResult:
    """Fine-tune a base model on `dataset` and write the model folder to `out_dir`.

    `base_model` is a Hub id, a local folder or "tiny" (default: `settings.train.base_model`).
    With `progress`, a progress bar is shown on stderr. Raises UserError for a base model that cannot
    be loaded and UsageError for an `out_dir` that holds something else.
    """
    import torch
    from transformers import GenerationConfig

    from bot import card

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

    with _progress_bar(progress, math.ceil(len(train[0]) / cfg.batch_size) * cfg.epochs) as update:
        fitted = fit(model, train, validation, cfg, device, update)
    lap("train")

    samples, best_sample, dropped = pick_samples(model, tokenizer, cfg, dataset.train, device)
    lap("sample")

    val_loss = fitted.best_loss
    perplexity = round(math.exp(val_loss), 3) if val_loss is not None else None
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
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
                                    "avatar_url": u.avatar_url} for u in dataset.users},
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
            "hyperparameters": {"learning_rate": cfg.learning_rate, "schedule": "cosine",
                                "warmup_fraction": cfg.warmup_fraction, "epochs": cfg.epochs,
                                "batch_size": cfg.batch_size, "block_size": block_size,
                                "weight_decay": cfg.weight_decay, "max_grad_norm": cfg.max_grad_norm,
                                "early_stopping": cfg.early_stopping, "dropout": cfg.dropout, "optimizer": "AdamW",
                                "precision": "bf16 autocast" if device.type == "cuda" else "fp32",
                                "compiled": bool(cfg.compile and device.type == "cuda")},
            "seed": cfg.seed,
            "epochs_run": fitted.epochs_run,
            "best_epoch": fitted.best_epoch,
            "history": fitted.epoch_losses,
            "step_losses": fitted.step_losses,
            "train_posts": len(dataset.train),
            "validation_posts": len(dataset.validation),
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
        _replace_folder(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    timings["total"] = round(time.perf_counter() - started, 3)
    return TrainResult(folder=out_dir, validation_loss=facts["validation_loss"], perplexity=perplexity,
                       samples=samples, best_sample=best_sample, epochs_run=fitted.epochs_run,
                       best_epoch=fitted.best_epoch, tokens_seen=fitted.tokens_seen, timings=timings,
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


class _progress_bar:
    """A rich progress bar on stderr, or nothing; yields `update(steps_done, description)`."""

    def __init__(self, show: bool, total: int):
        self.show, self.total, self.bar = show, total, None

    def __enter__(self):
        if not self.show:
            return None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(TextColumn("training {task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), console=Console(stderr=True), transient=True)
        self.bar.start()
        task = self.bar.add_task("", total=self.total)
        return lambda done, description: self.bar.update(task, completed=done, description=description)

    def __exit__(self, *exc):
        if self.bar:
            self.bar.stop()
        return False


__all__ = ["train_model", "TrainResult", "FOLDER_FILES", "MemorisationFilter", "neutralise_mentions",
           "pack", "fit", "evaluate", "resolve_base_model"]
