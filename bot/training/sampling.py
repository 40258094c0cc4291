"""Samples for the card: generated, filtered for copies of training posts, the most typical picked.

    >>> from bot.training.sampling import pick_samples
    >>> samples, best, dropped = pick_samples(model, tokenizer, settings.train, dataset.train, device)
"""

from __future__ import annotations

import unicodedata

import regex
import torch

from bot.data.text import neutralise_mentions


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
