"""GPT-2's training data and loss: posts into blocks, and the loss written out in a dozen lines as in nanoGPT.

    >>> from bot.training.gpt2 import causal_lm_loss, pack
    >>> ids, labels = pack(posts, tokenizer, 256)     # posts joined by <|endoftext|>, cut into blocks
    >>> loss = causal_lm_loss(model, ids, labels)   # mean next-token loss; IGNORE_INDEX labels not counted

The library's forward does the same computation with bookkeeping a training step does not need
(cache objects, masks, output classes): about a sixth of a small step on CPU (benchmarks/README.md).
Models that are not a plain GPT-2 use their own forward.
"""

from __future__ import annotations

import math
from contextlib import nullcontext

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100  # label of padding: no loss there


def pack(texts: list[str], tokenizer, block_size: int):
    """Tokenize posts, join them with the end-of-text token and cut the stream into blocks.

    Returns (input_ids, labels), both [blocks, block_size]; the last block is padded, and its
    padding carries the label IGNORE_INDEX so it adds no loss.
    """
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


def causal_lm_loss(model, ids, labels):
    """Mean next-token loss of `model` on blocks `ids` (targets `labels`, IGNORE_INDEX not counted)."""
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
    logits = model.lm_head(t.ln_f(x[:, :-1]))  # the last position predicts nothing in the block
    return F.cross_entropy(logits.flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=IGNORE_INDEX)


def autocast_for(device):
    """bf16 autocast on CUDA (GPT-2 trains stably in bf16; no loss scaling needed); fp32 on CPU."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
