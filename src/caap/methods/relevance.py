"""A forward of a ViT through its named linear layers (``adapter.linear_block`` / ``linear_head``), with
hooks for relevance-propagation rules and a record of every intermediate.

Transformer attribution (Chefer et al. 2021) propagates relevance explicitly through the recorded
activations; AttnLRP (Achtibat et al. 2024) changes how gradients pass some operations (:class:`Rules`) and
reads gradient × input. Both start from the same forward, which reproduces ``model(x)`` (tested on every
adapter that has the capability).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from caap.adapters import Adapter
from caap.adapters.capabilities import LinearRules, require
from caap.adapters.views import LinearBlock, LinearHead, split_heads


class Rules:
    """How the forward passes norms, activations and the attention's inputs: the plain model by default.
    A subclass changes only the backward pass (the forward values stay the model's)."""

    def norm(self, module, x: torch.Tensor) -> torch.Tensor:
        return module(x)

    def act(self, fn, x: torch.Tensor) -> torch.Tensor:
        return fn(x)

    def attention_inputs(self, q, k, v):
        return q, k, v


def qkv_heads(block: LinearBlock, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``y`` ``[B, N, D]`` -> ``q, k, v`` ``[B, H, N, hd]`` each (fused or separate projections)."""
    heads = block.view.heads
    if len(block.qkv) == 1:
        q, k, v = block.qkv[0](y).unflatten(-1, (3, heads, -1)).unbind(-3)  # [B, N, H, hd] each
    else:
        q, k, v = (split_heads(layer(y), heads) for layer in block.qkv)
    return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)


def block_forward(block: LinearBlock, x: torch.Tensor, rules: Rules, record: dict[str, Any] | None = None):
    """One block on ``x`` ``[B, N, D]``; ``record`` receives every intermediate (names as in the code)."""
    view = block.view
    y1 = rules.norm(view.norm1, x)
    q, k, v = rules.attention_inputs(*qkv_heads(block, y1))  # [B, H, N, hd]
    attn = ((q @ k.transpose(-2, -1)) * view.scale).softmax(-1)  # [B, H, N, N]
    o = attn @ v  # [B, H, N, hd]
    o_flat = o.transpose(1, 2).flatten(2)  # [B, N, H*hd]
    p = block.proj(o_flat)
    s1 = p if block.ls1 is None else p * block.ls1
    h = x + s1
    y2 = rules.norm(view.norm2, h)
    u = block.fc1(y2)
    g = rules.act(block.act, u)
    m = block.fc2(g)
    s2 = m if block.ls2 is None else m * block.ls2
    out = h + s2
    if record is not None:
        record.update(x=x, y1=y1, q=q, k=k, v=v, attn=attn, o=o, o_flat=o_flat, p=p, s1=s1, h=h, y2=y2, g=g, m=m,
                      s2=s2)
    return out


def pool(head: LinearHead, seq: torch.Tensor, num_prefix: int) -> torch.Tensor:
    """The head's pooling of ``seq`` ``[B, N, D]`` -> ``[B, D]`` (``[B, 2D]`` for ``token+mean``, ``[B, 2, D]``
    for ``distilled``)."""
    if head.pool == "token":
        return seq[:, 0]
    if head.pool == "distilled":
        return seq[:, :2]  # [B, 2, D]
    mean = seq[:, num_prefix:].mean(1)
    return mean if head.pool == "mean" else torch.cat([seq[:, 0], mean], -1)


def head_forward(head: LinearHead, z: torch.Tensor, num_prefix: int, rules: Rules,
                 record: dict[str, Any] | None = None) -> torch.Tensor:
    """Logits ``[B, C]`` from the last block's output ``z`` ``[B, N, D]``."""
    seq = rules.norm(head.norm, z)
    pooled = pool(head, seq, num_prefix)
    feat = pooled if isinstance(head.fc_norm, nn.Identity) else rules.norm(head.fc_norm, pooled)
    if record is not None:
        record.update(seq=seq, pooled=pooled, feat=feat)
    if head.pool == "distilled":
        return (head.classifier(feat[:, 0]) + head.classifier_dist(feat[:, 1])) / 2
    return head.classifier(feat)


def linear_forward(adapter: Adapter, z0: torch.Tensor, rules: Rules | None = None,
                   records: list[dict[str, Any]] | None = None) -> torch.Tensor:
    """Logits ``[B, C]`` from the token embeddings ``z0`` ``[B, N, D]`` through every block and the head.
    ``records`` (a list) receives one dict per block and, last, the head's."""
    rules = rules or Rules()
    named = require(adapter, LinearRules)
    blocks = [named.linear_block(i) for i in range(adapter.num_blocks)]
    head = named.linear_head()
    z = z0
    for block in blocks:
        record = None if records is None else {}
        z = block_forward(block, z, rules, record)
        if records is not None:
            records.append(record)
    record = None if records is None else {}
    logits = head_forward(head, z, adapter.num_prefix, rules, record)
    if records is not None:
        records.append(record)
    return logits


def embedded_forward(adapter: Adapter, images: torch.Tensor, rules: Rules) -> tuple[torch.Tensor, torch.Tensor]:
    """``(z0, logits)``: the token embeddings ``z0`` ``[B, N, D]`` as a leaf that requires grad, and the logits
    ``[B, C]`` of the forward through ``rules`` from them (with a graph back to ``z0``)."""
    with torch.enable_grad():
        z0 = adapter.embed(images).detach().requires_grad_(True)
        return z0, linear_forward(adapter, z0, rules)


def check_linear(adapter: Adapter) -> None:
    """Raise the adapter's one-line error when it cannot give every block's and the head's linear layers."""
    for index in range(adapter.num_blocks):
        require(adapter, LinearRules).linear_block(index)
    require(adapter, LinearRules).linear_head()
