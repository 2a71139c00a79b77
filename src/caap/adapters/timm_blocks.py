"""The in-place and rows-only block paths of plain timm ``Block`` modules (used by the CAAP engine's chunks).

Both compute the same operations as ``block(x)``; :func:`inplace_gelu` says when the in-place path
reproduces the module (and declines otherwise, so the module's own forward runs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import Attention, Mlp
from timm.layers.activations import GELU, GELUTanh
from timm.models.vision_transformer import Block
from torch import nn

from caap.core.workspace import Workspace


def plain_block(block: nn.Module) -> bool:
    """A timm ``Block`` with the standard ``Attention`` (the structure ``block_rows`` reproduces)."""
    return type(block) is Block and type(block.attn) is Attention


def block_rows(block: nn.Module, x: torch.Tensor, rows: int) -> torch.Tensor:
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


def inplace_gelu(block: nn.Module, z: torch.Tensor) -> str | None:
    """The GELU variant (``"none"``/``"tanh"``) when :func:`block_inplace` reproduces ``block(z)``, else ``None``.

    That is a plain timm ``Block`` with every module in eval mode, whose optional parts are all off (layer
    scale, drop path, q/k norms, attention norm and gate, MLP norm), a ``Mlp`` with GELU, no hooks on any
    of its modules, and a float32/float64 contiguous input outside autograd (autocast to bf16/fp16
    allowed); timm's own ``forward`` methods, not replaced ones, on the block, its attention and its MLP."""
    if not plain_block(block) or type(block.mlp) is not Mlp:
        return None
    if torch.is_grad_enabled() or not z.is_contiguous():
        return None
    attn, mlp = block.attn, block.mlp
    if z.dtype not in (torch.float32, torch.float64) or attn.qkv.weight.dtype != z.dtype:
        return None
    if autocast_dtype(z) not in (None, torch.bfloat16, torch.float16):
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


def autocast_dtype(z: torch.Tensor) -> torch.dtype | None:
    """The dtype autocast gives float32 ``z`` now, ``None`` when autocast is off (or leaves ``z`` as it is)."""
    kind = z.device.type
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) and z.dtype == torch.float32 else None


def _timm_forward(module: nn.Module) -> bool:
    """``module``'s class still has timm's own ``forward`` (not one patched in by a user or a library)."""
    forward = type(module).forward
    return forward.__module__.startswith("timm.") and forward.__qualname__ == f"{type(module).__name__}.forward"


def block_inplace(block: nn.Module, x: torch.Tensor, ws: Workspace, approximate: str,
                   low: torch.dtype | None = None) -> torch.Tensor:
    """A plain timm ``Block`` (see :func:`inplace_gelu`) on ``x`` ``[B, N, D]``, written into ``x``.

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
