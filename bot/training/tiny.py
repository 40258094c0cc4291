"""A tiny GPT-2 that knows some English, built locally: the base model for the demo, the tests and
machines with no network.

    >>> from bot.training.tiny import tiny_model_dir
    >>> folder = tiny_model_dir()          # built once (about half a minute), then read from the cache
    >>> from transformers import AutoModelForCausalLM, AutoTokenizer
    >>> AutoTokenizer.from_pretrained(folder).vocab_size
    1024
    >>> model = AutoModelForCausalLM.from_pretrained(folder)   # 2 layers, 64 wide, pretrained

`huggingtweets train --base-model tiny` uses it. Like GPT-2, it is pretrained before anyone fine-tunes
it, so a fine-tune adapts a model that already writes words to one person instead of learning
language from a few thousand posts: its samples read as words, and it stands in for GPT-2 in the
benchmarks. The byte-level BPE tokenizer is learned with the `tokenizers` library and the weights
are pretrained for PRETRAIN_STEPS steps, both on the Jargon File 4.4.7 (`bot/training/assets/jargon.txt.gz`,
public domain; made by `tools/make_pretraining_corpus.py`) and `bot/training/assets/tiny_corpus.txt` (this
project's own short text of everyday posts, Apache-2.0). A fixed seed, fixed steps and a fixed
thread count: the same code builds the same bytes. It lives in the user's cache directory:
`$HUGGINGTWEETS_CACHE`, else `$XDG_CACHE_HOME/huggingtweets`, else `~/.cache/huggingtweets`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

EOS = "<|endoftext|>"
VOCAB_SIZE = 1024
# Small enough to train in seconds on two CPU cores; the context matches GPT-2's so that the
# original recipe (blocks of the model's maximum length) can be run against it unchanged.
ARCHITECTURE = {"n_layer": 2, "n_head": 2, "n_embd": 64, "n_positions": 1024}
SEED = 1234
ASSETS = Path(__file__).parent / "assets"
CORPUS = ASSETS / "tiny_corpus.txt"  # everyday posts, written for this project
PRETRAINING_CORPUS = ASSETS / "jargon.txt.gz"  # the Jargon File 4.4.7, public domain
# Pretraining: about 1.2 million tokens (the corpus twice over), at a learning rate a model this small
# takes. Twice the steps gain half a nat more on everyday posts than once; the build stays near 30 s.
PRETRAIN_STEPS = 600
PRETRAIN_BATCH = 16
PRETRAIN_BLOCK = 128
PRETRAIN_LR = 3e-3
# One thread: float sums in another order would give other weights on a machine with more cores.
PRETRAIN_THREADS = 1
# The license the card states for models fine-tuned from the tiny base (it is this project's own).
LICENSE = "apache-2.0"


def cache_root() -> Path:
    """The huggingtweets cache directory (not created)."""
    if os.environ.get("HUGGINGTWEETS_CACHE"):
        return Path(os.environ["HUGGINGTWEETS_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "huggingtweets"


def _fingerprint(steps: int = PRETRAIN_STEPS) -> str:
    """Changes whenever the recipe or the corpus changes, so a stale cached model is never used."""
    recipe = json.dumps({"arch": ARCHITECTURE, "vocab": VOCAB_SIZE, "seed": SEED, "eos": EOS,
                         "pretrain": [steps, PRETRAIN_BATCH, PRETRAIN_BLOCK, PRETRAIN_LR, PRETRAIN_THREADS]},
                        sort_keys=True)
    digest = hashlib.sha256(recipe.encode() + CORPUS.read_bytes() + PRETRAINING_CORPUS.read_bytes())
    digest.update(Path(__file__).read_bytes())  # any change to how it is built makes a new one
    return digest.hexdigest()[:12]


def corpus_lines() -> list[str]:
    """The pretraining text, one paragraph or post per line."""
    import gzip

    with gzip.open(PRETRAINING_CORPUS, "rt", encoding="utf-8") as f:
        jargon = f.read().splitlines()
    return jargon + CORPUS.read_text(encoding="utf-8").splitlines()


def tiny_model_dir(steps: int = PRETRAIN_STEPS) -> Path:
    """The folder of the tiny model, building it first if the cache does not have it yet.

    Safe when several processes ask at once: one builds while the others wait on a lock file (released
    by the system if the builder dies), into a temporary folder renamed into place, so a folder under
    that name is always whole. `steps`: pretraining steps (fewer make a model that writes worse, in less
    time: the tests of how it is built and cached use them).
    """
    import fcntl

    folder = cache_root() / f"tiny-gpt2-{_fingerprint(steps)}"
    if (folder / "config.json").exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".{folder.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the others wait here rather than build the same model again
        if (folder / "config.json").exists():
            return folder
        tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=folder.parent))
        try:
            build_tiny_model(tmp, steps)
            try:
                os.rename(tmp, folder)
            except OSError:
                if not (folder / "config.json").exists():  # not a lost race: a real failure
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def build_tokenizer():
    """A byte-level BPE tokenizer (GPT-2's scheme) with exactly VOCAB_SIZE entries, EOS included."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2TokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=[EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus_lines(), trainer)
    # Built from the `tokenizers` object: GPT2TokenizerFast(vocab_file=, merges_file=) would
    # silently give an empty tokenizer, which is why the size is checked here.
    tokenizer = GPT2TokenizerFast(tokenizer_object=tok, bos_token=EOS, eos_token=EOS, unk_token=EOS,
                                  model_max_length=ARCHITECTURE["n_positions"])
    if len(tokenizer) != VOCAB_SIZE:
        raise RuntimeError(f"the tiny tokenizer has {len(tokenizer)} entries, expected {VOCAB_SIZE}")
    return tokenizer


def build_tiny_model(folder: str | Path, steps: int = PRETRAIN_STEPS) -> Path:
    """Write the tiny model (config, pretrained weights, tokenizer) into `folder`, pretrained `steps` steps."""
    import torch
    import transformers
    from transformers import GPT2Config, GPT2LMHeadModel

    transformers.utils.logging.disable_progress_bar()
    tokenizer = build_tokenizer()
    config = GPT2Config(vocab_size=VOCAB_SIZE, bos_token_id=tokenizer.eos_token_id,
                        eos_token_id=tokenizer.eos_token_id, **ARCHITECTURE)
    threads = torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):  # a fixed seed without touching the caller's RNG
        torch.manual_seed(SEED)
        model = GPT2LMHeadModel(config)
        torch.set_num_threads(PRETRAIN_THREADS)
        try:
            pretrain(model, tokenizer, steps)
        finally:
            torch.set_num_threads(threads)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return Path(folder)


def pretrain(model, tokenizer, steps: int = PRETRAIN_STEPS) -> float:
    """Teach `model` the corpus: AdamW, a short warm-up, then cosine decay to a tenth. Returns the last loss."""
    import torch

    from bot.training.gpt2 import causal_lm_loss, pack

    ids, labels = pack(corpus_lines(), tokenizer, PRETRAIN_BLOCK)
    model.train()
    for module in model.modules():  # no dropout: a few hundred steps do not overfit a megabyte
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    optimizer = torch.optim.AdamW(model.parameters(), lr=PRETRAIN_LR, betas=(0.9, 0.95), weight_decay=0.1)
    order = torch.Generator().manual_seed(SEED)
    warmup = max(1, steps // 10)
    for step in range(steps):
        decay = 0.5 * (1 + math.cos(math.pi * step / steps))
        for group in optimizer.param_groups:
            group["lr"] = PRETRAIN_LR * min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * decay)
        batch = torch.randint(len(ids), (PRETRAIN_BATCH,), generator=order)
        loss = causal_lm_loss(model, ids[batch], labels[batch])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    model.eval()
    return float(loss.detach())
