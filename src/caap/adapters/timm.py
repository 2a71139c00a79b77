"""Adapter for timm ``VisionTransformer`` and its subclasses (DeiT distilled, DeiT-3, registers, CLIP…).

The adapter calls timm's own modules in the order of ``VisionTransformer.forward_features`` /
``forward_head``; it never copies their code, so pooling variants (token, avg, attention pool, distilled
heads) are exactly the model's.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from caap.adapters.base import Adapter
from caap.core.contexts import Normalization
from caap.core.workspace import Workspace
from caap.errors import UnsupportedModelError


def is_timm_vit(model: nn.Module) -> bool:
    try:
        from timm.models.vision_transformer import VisionTransformer
    except ImportError:  # pragma: no cover - timm is a runtime dependency
        return False
    return isinstance(model, VisionTransformer)


class TimmViTAdapter(Adapter):
    """A timm ``VisionTransformer`` (any subclass that keeps its ``forward_features`` structure)."""

    def __init__(self, model: nn.Module, normalization: Normalization | None = None) -> None:
        if not is_timm_vit(model):
            raise UnsupportedModelError(f"TimmViTAdapter needs a timm VisionTransformer, got {type(model).__name__}")
        self.model = model
        self.num_prefix = int(model.num_prefix_tokens)
        self.normalization = normalization or _timm_normalization(model)
        self.head_rows = self._head_rows(model)

    @staticmethod
    def _head_rows(model: nn.Module) -> tuple[int, ...] | None:
        if getattr(model, "attn_pool", None) is not None:
            return None
        if type(model).__name__ == "VisionTransformerDistilled":
            return (0, 1)
        if model.global_pool == "token":
            return (0,)
        return None

    @property
    def blocks(self) -> Sequence[nn.Module]:
        return self.model.blocks

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        m = self.model
        x = m.patch_embed(images)  # [B, gh, gw, D] or [B, gh*gw, D]
        x = m._pos_embed(x)  # [B, N, D] with prefix tokens
        x = m.patch_drop(x)
        return m.norm_pre(x)

    def run_block(self, index: int, z: torch.Tensor) -> torch.Tensor:
        return self.model.blocks[index](z)

    def run_block_rows(self, index: int, z: torch.Tensor, rows: int) -> torch.Tensor | None:
        block = self.model.blocks[index]
        if not _plain_block(block) or block.training:
            return None
        return _block_rows(block, z, rows)

    def run_block_inplace(self, index: int, z: torch.Tensor, workspace: Workspace) -> torch.Tensor | None:
        block = self.model.blocks[index]
        approximate = _inplace_gelu(block, z)
        if approximate is None:
            return None
        low = _autocast_dtype(z)
        with torch.autocast(z.device.type, enabled=False):  # the path applies autocast's dtypes itself
            return _block_inplace(block, z, workspace, approximate, low)

    def head(self, z: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.norm(z))

    def grid(self, input_size: tuple[int, int]) -> tuple[int, int]:
        pe = self.model.patch_embed
        if getattr(self.model, "dynamic_img_size", False) and hasattr(pe, "dynamic_feat_size"):
            return tuple(pe.dynamic_feat_size(tuple(input_size)))
        expected = tuple(pe.img_size)
        if tuple(input_size) != expected:
            raise UnsupportedModelError(
                f"input size {tuple(input_size)} does not match the model's img_size {expected} "
                "(create the timm model with dynamic_img_size=True for other sizes)"
            )
        return tuple(pe.grid_size)

    @property
    def patch_size(self) -> tuple[int, int]:
        return tuple(self.model.patch_embed.patch_size)


def _plain_block(block: nn.Module) -> bool:
    """A timm ``Block`` with the standard ``Attention`` (the structure ``_block_rows`` reproduces)."""
    from timm.layers import Attention
    from timm.models.vision_transformer import Block

    return type(block) is Block and type(block.attn) is Attention


def _block_rows(block: nn.Module, x: torch.Tensor, rows: int) -> torch.Tensor:
    """Rows ``0 .. rows-1`` of a timm ``Block`` in eval mode; keys and values still come from every token."""
    attn = block.attn
    b, n, _ = x.shape
    heads, head_dim, width = attn.num_heads, attn.head_dim, attn.attn_dim
    y = block.norm1(x)  # [B, N, D]
    weight, bias = attn.qkv.weight, attn.qkv.bias
    q = F.linear(y[:, :rows], weight[:width], None if bias is None else bias[:width])  # [B, R, A]
    kv = F.linear(y, weight[width:], None if bias is None else bias[width:])  # [B, N, 2A]
    q = q.reshape(b, rows, heads, head_dim).transpose(1, 2)  # [B, H, R, hd]
    k, v = kv.reshape(b, n, 2, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)  # [B, H, N, hd] each
    q, k = attn.q_norm(q), attn.k_norm(k)
    out = F.scaled_dot_product_attention(q, k, v, scale=attn.scale)  # [B, H, R, hd]
    out = attn.norm(out.transpose(1, 2).reshape(b, rows, width))  # [B, R, A]
    if attn.gate is not None:
        out = out * attn.gate(y[:, :rows]).sigmoid()
    h = x[:, :rows] + block.ls1(attn.proj(out))  # [B, R, D]
    return h + block.ls2(block.mlp(block.norm2(h)))


def _inplace_gelu(block: nn.Module, z: torch.Tensor) -> str | None:
    """The GELU variant (``"none"``/``"tanh"``) when :func:`_block_inplace` reproduces ``block(z)``, else ``None``.

    That is a plain timm ``Block`` with every module in eval mode, whose optional parts are all off (layer
    scale, drop path, q/k norms, attention norm and gate, MLP norm), a ``Mlp`` with GELU, no hooks on any
    of its modules, and a float32/float64 contiguous input outside autograd (autocast to bf16/fp16
    allowed); timm's own ``forward`` methods, not replaced ones, on the block, its attention and its MLP."""
    from timm.layers import Mlp
    from timm.layers.activations import GELU, GELUTanh

    if not _plain_block(block) or type(block.mlp) is not Mlp:
        return None
    if torch.is_grad_enabled() or not z.is_contiguous():
        return None
    attn, mlp = block.attn, block.mlp
    if z.dtype not in (torch.float32, torch.float64) or attn.qkv.weight.dtype != z.dtype:
        return None
    if _autocast_dtype(z) not in (None, torch.bfloat16, torch.float16):
        return None
    off = (block.ls1, block.ls2, block.drop_path1, block.drop_path2, attn.q_norm, attn.k_norm, attn.norm, mlp.norm)
    if not all(type(m) is nn.Identity for m in off) or getattr(attn, "gate", None) is not None:
        return None
    if not all(type(m) is nn.Linear for m in (attn.qkv, attn.proj, mlp.fc1, mlp.fc2)):
        return None
    if not all(isinstance(m, nn.LayerNorm) for m in (block.norm1, block.norm2)):
        return None
    if any(m.training or m._forward_hooks or m._forward_pre_hooks or "forward" in vars(m) for m in block.modules()):
        return None  # training mode; hooks or a replaced forward (instrumentation) must still run
    if not all(_timm_forward(m) for m in (block, attn, mlp)):
        return None
    act = mlp.act
    if type(act) is nn.GELU:
        return act.approximate
    return {GELU: "none", GELUTanh: "tanh"}.get(type(act))


def _autocast_dtype(z: torch.Tensor) -> torch.dtype | None:
    """The dtype autocast gives float32 ``z`` now, ``None`` when autocast is off (or leaves ``z`` as it is)."""
    kind = z.device.type
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) and z.dtype == torch.float32 else None


def _timm_forward(module: nn.Module) -> bool:
    """``module``'s class still has timm's own ``forward`` (not one patched in by a user or a library)."""
    forward = type(module).forward
    return forward.__module__.startswith("timm.") and forward.__qualname__ == f"{type(module).__name__}.forward"


def _block_inplace(block: nn.Module, x: torch.Tensor, ws: Workspace, approximate: str,
                   low: torch.dtype | None = None) -> torch.Tensor:
    """A plain timm ``Block`` (see :func:`_inplace_gelu`) on ``x`` ``[B, N, D]``, written into ``x``.

    Same operations as ``block(x)``; the residual stream takes each branch's product in place
    (``x += y W^T``, then ``x += b``), the GELU runs in place, and ``qkv`` and the MLP hidden layer live in
    the workspace, so that a chunk allocates only the two norms' and attention's outputs.

    ``low``: autocast's dtype, if any. Then, as under autocast, the products, attention and GELU run in
    ``low`` (weights converted once per workspace) while the norms and the residual stream stay in ``x``'s
    dtype; each branch's product is rounded to ``low`` before it is added to the stream."""
    attn, mlp = block.attn, block.mlp
    b, n, d = x.shape
    rows, heads, head_dim = b * n, attn.num_heads, attn.head_dim
    width, compute = heads * head_dim, low or x.dtype
    x2 = x.view(rows, d)  # [M, D] residual stream
    y = _norm(x2, block.norm1, ws, compute)  # [M, D]
    qkv = _linear_into(y, attn.qkv, ws.get("qkv", (rows, 3 * width), x, compute), ws)  # [M, 3A]
    q, k, v = qkv.view(b, n, 3, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)  # [B, H, N, hd] each
    out = F.scaled_dot_product_attention(q, k, v, scale=attn.scale)  # [B, H, N, hd]
    _add_linear_(x2, out.transpose(1, 2).reshape(rows, width), attn.proj, ws)
    y = _norm(x2, block.norm2, ws, compute)
    hidden = _linear_into(y, mlp.fc1, ws.get("hidden", (rows, mlp.fc1.out_features), x, compute), ws)  # [M, 4D]
    torch.ops.aten.gelu_(hidden, approximate=approximate)
    _add_linear_(x2, hidden, mlp.fc2, ws)
    return x


def _norm(x: torch.Tensor, norm: nn.LayerNorm, ws: Workspace, dtype: torch.dtype) -> torch.Tensor:
    """``norm(x)`` in ``x``'s dtype, then in ``dtype`` (a workspace buffer) when that differs."""
    y = F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)
    return y if y.dtype == dtype else ws.get("normed", y.shape, y, dtype).copy_(y)


def _linear_into(x: torch.Tensor, linear: nn.Linear, out: torch.Tensor, ws: Workspace) -> torch.Tensor:
    """``linear(x)`` for ``x`` ``[M, K]``, written into ``out`` ``[M, N]`` (``x``'s and ``out``'s dtype)."""
    weight = ws.cast(linear.weight, out.dtype).t()
    if linear.bias is None:
        return torch.mm(x, weight, out=out)
    return torch.addmm(ws.cast(linear.bias, out.dtype), x, weight, out=out)


def _add_linear_(residual: torch.Tensor, x: torch.Tensor, linear: nn.Linear, ws: Workspace) -> None:
    """``residual += linear(x)`` in place, ``residual`` ``[M, N]``, ``x`` ``[M, K]`` (the product in ``x``'s
    dtype, as autocast rounds it, when that is lower than ``residual``'s)."""
    if x.dtype != residual.dtype:
        residual.add_(_linear_into(x, linear, ws.get("branch", residual.shape, x), ws))
        return
    torch.addmm(residual, x, linear.weight.t(), out=residual)  # beta = 1 accumulates, no copy
    if linear.bias is not None:
        residual.add_(linear.bias)


def _timm_normalization(model: nn.Module) -> Normalization:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    mean, std = cfg.get("mean"), cfg.get("std")
    if mean and std:
        return Normalization(tuple(float(v) for v in mean), tuple(float(v) for v in std))
    return Normalization()
