"""Adapters for timm's other vision transformers with persistent patch tokens, and the one-line refusal for those
without (patch merging).

- ``Beit`` (BEiT, BEiT-v2): class token, optional absolute positions, a relative position bias shared by the
  blocks or held per block, layer scale. The shared bias is computed once per forward, as ``forward_features``.
- ``VisionTransformerRelPos`` (``vit_relpos_*``, ``vit_srelpos_*``): no absolute positions, a relative position
  bias per block or shared.
- ``Cait``: patch blocks on the patch tokens alone (talking-heads attention), then class-attention blocks in which
  a class token reads the patches. CAAP's band lies in the patch blocks; the class-attention blocks are the head.
- ``NaFlexVit``: in its standard image mode (a batch of one size, any size and aspect ratio: the position
  embedding is resampled to the grid, rotary embeddings follow it); its patch-dictionary mode is the model's own
  business.
- ``Xcit``: cross-covariance attention (over channels) and local patch interaction (convolutions on the token
  grid) in the patch blocks, then class-attention blocks. Its attention mixes channels, not tokens: attention
  methods are refused, CAAP and the gradient methods run.

Every adapter calls the model's own modules in the order of its ``forward_features`` / ``forward_head``.
Architectures that merge patches between stages (Swin, PiT, MViTv2, LeViT, Hiera) have no token that persists
through the blocks: :func:`patch_merging` names them, and the ViT methods refuse them in one line.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from caap.adapters.attention import AttentionMaps
from caap.adapters.base import Adapter
from caap.adapters.capabilities import AttentionCapture
from caap.adapters.card import ModelCard
from caap.adapters.normalization import timm_normalization
from caap.core.contexts import Normalization
from caap.errors import UnsupportedModelError

FAMILIES = ("Beit", "VisionTransformerRelPos", "Cait", "Xcit", "NaFlexVit")
MERGING = {"SwinTransformer": "Swin", "SwinTransformerV2": "Swin V2", "SwinTransformerV2Cr": "Swin V2",
           "PoolingVisionTransformer": "PiT", "MultiScaleVit": "MViTv2", "Levit": "LeViT",
           "LevitDistilled": "LeViT", "Hiera": "Hiera"}


def is_timm_family(model: nn.Module) -> bool:
    return type(model).__name__ in FAMILIES and type(model).__module__.startswith("timm.")


HF_MERGING = ("Swin", "Swinv2", "DonutSwin", "Levit", "Hiera", "Pvt", "PvtV2", "Cvt", "Dinat", "Nat", "MobileViT",
              "MobileViTV2", "EfficientFormer", "FocalNet", "MaskFormerSwin")


def patch_merging(model: nn.Module) -> str | None:
    """Why a timm or Hugging Face model has no persistent patch tokens (it merges or re-embeds them between
    stages), or None."""
    name, module = type(model).__name__, type(model).__module__
    if module.startswith("timm."):
        family = MERGING.get(name)
    elif module.startswith("transformers."):
        family = next((f for f in sorted(HF_MERGING, key=len, reverse=True)
                       if name.startswith(f) and name[len(f):].startswith(("For", "Model", "Backbone"))), None)
    else:
        family = None
    if family is None:
        return None
    return f"{family} merges patches between its stages: no patch token persists through the blocks"


@contextlib.contextmanager
def attn_drop_capture(blocks: Sequence[nn.Module], maps: AttentionMaps) -> Iterator[AttentionMaps]:
    """The attention probabilities at each block's ``attn.attn_drop`` (timm's attention modules), with the fused
    path switched off per module for the capture; restored on exit."""
    with contextlib.ExitStack() as stack:
        for index, block in enumerate(blocks):
            attn = getattr(block, "attn", None)
            if attn is None or not hasattr(attn, "attn_drop"):
                raise UnsupportedModelError(f"block {index} ({type(block).__name__}) has no attention dropout to read")
            if hasattr(attn, "fused_attn"):
                stack.callback(setattr, attn, "fused_attn", attn.fused_attn)
                attn.fused_attn = False
            stack.callback(attn.attn_drop.register_forward_hook(
                lambda m, i, out, index=index: maps.record(index, out)).remove)
        yield maps


class TimmFamilyAdapter(Adapter, AttentionCapture):
    """A timm BEiT, relative-position ViT, CaiT, XCiT or NaFlexViT model (see the module docstring)."""

    def __init__(self, model: nn.Module, normalization: Normalization | None = None) -> None:
        if not is_timm_family(model):
            raise UnsupportedModelError(f"TimmFamilyAdapter supports timm {FAMILIES}, got {type(model).__name__}")
        self.model, self.family = model, type(model).__name__
        self.normalization = normalization or timm_normalization(model)
        self.class_attention = self.family in ("Cait", "Xcit")  # the class token enters after the patch blocks
        self.num_prefix = 0 if self.class_attention else int(getattr(model, "num_prefix_tokens", 1))
        token = getattr(model, "global_pool", "token") == "token"
        self.head_rows = (0,) if token and not self.class_attention and self.num_prefix else None
        self._grids: dict[int, tuple[int, int]] = {}
        self._rope: dict[int, object] = {}  # NaFlexViT: the rotary embedding of each token count embedded
        self.token_subsets = not (self.family == "NaFlexVit" and getattr(model, "rope", None) is not None)

    @property
    def blocks(self) -> Sequence[nn.Module]:
        return self.model.blocks

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        m = self.model
        if self.family == "NaFlexVit":
            out = m._forward_embeds(images, None, None, None)
            self._rope[out["patches"].shape[1]] = out.get("rope_embeds")
            return out["patches"]
        if self.family == "Xcit":
            x, (hp, wp) = m.patch_embed(images)
            self._grids[x.shape[1]] = (hp, wp)
            if m.pos_embed is not None:
                x = x + m.pos_embed(x.shape[0], hp, wp).reshape(x.shape[0], -1, x.shape[1]).permute(0, 2, 1)
            return m.pos_drop(x)
        x = m.patch_embed(images)
        if self.family == "Cait":
            return m.pos_drop(x + m.pos_embed)
        if getattr(m, "cls_token", None) is not None:
            x = torch.cat((m.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        if getattr(m, "pos_embed", None) is not None:
            x = x + m.pos_embed
        return m.pos_drop(x) if hasattr(m, "pos_drop") else x

    def run_block(self, index: int, z: torch.Tensor) -> torch.Tensor:
        block, m = self.model.blocks[index], self.model
        if self.family == "Beit":
            return block(z, shared_rel_pos_bias=m.rel_pos_bias() if m.rel_pos_bias is not None else None)
        if self.family == "VisionTransformerRelPos":
            return block(z, shared_rel_pos=m.shared_rel_pos.get_bias() if m.shared_rel_pos is not None else None)
        if self.family == "Xcit":
            hp, wp = self._grids.get(z.shape[1]) or self.grid(tuple(m.patch_embed.img_size))
            return block(z, hp, wp)
        if self.family == "NaFlexVit":
            rope = self._rope.get(z.shape[1])
            if rope is not None and getattr(m, "rope_is_mixed", False):
                rope = rope[index]
            return block(z, rope=rope, attn_mask=None) if rope is not None else block(z, attn_mask=None)
        return block(z)

    def head(self, z: torch.Tensor) -> torch.Tensor:
        m = self.model
        if self.class_attention:
            z = m.forward_cls(z)
        return m.forward_head(m.norm(z))

    def grid(self, input_size: tuple[int, int]) -> tuple[int, int]:
        if self.family == "NaFlexVit":  # any size: the embedding follows the grid
            ph, pw = self.patch_size
            if input_size[0] % ph or input_size[1] % pw:
                raise UnsupportedModelError(f"input size {tuple(input_size)} is not a multiple of the patch size "
                                            f"{(ph, pw)}")
            return (input_size[0] // ph, input_size[1] // pw)
        pe = self.model.patch_embed
        size = getattr(pe, "img_size", None)
        size = (size, size) if isinstance(size, int) else tuple(size)
        if tuple(input_size) != size:
            raise UnsupportedModelError(f"input size {tuple(input_size)} does not match the model's img_size {size}")
        ph, pw = self.patch_size
        return (size[0] // ph, size[1] // pw)

    @property
    def patch_size(self) -> tuple[int, int]:
        embeds = getattr(self.model, "embeds", None)
        p = embeds.patch_size if embeds is not None else self.model.patch_embed.patch_size
        return (p, p) if isinstance(p, int) else tuple(p)

    def _read_card(self) -> ModelCard:
        from timm.data import ImageNetInfo

        classes = int(self.model.num_classes)
        names = None
        if classes == 1000:
            info = ImageNetInfo()
            names = tuple(info.index_to_description(i).split(",")[0] for i in range(1000))
        pe = getattr(self.model, "patch_embed", None)
        size = getattr(pe, "img_size", None)
        size = None if size is None else (size, size) if isinstance(size, int) else tuple(size)
        return ModelCard(names, classes, size)

    def head_modules(self) -> list[nn.Module]:
        return self._modules_named(("head", "fc_norm", "norm"))

    def capture_attention(self) -> contextlib.AbstractContextManager[AttentionMaps]:
        if self.family == "Xcit":
            raise self.unsupported("capture_attention (XCiT's cross-covariance attention mixes channels, not tokens: "
                                   "there is no token-to-token attention)")
        return attn_drop_capture(self.blocks, AttentionMaps(self.num_blocks))
