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
from collections.abc import Sequence

import torch
from torch import nn

from caap.adapters.attention import AttentionMaps, attn_drop_capture
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


class TimmFamilyAdapter(Adapter, AttentionCapture):
    """What timm's BEiT, relative-position ViT, CaiT, XCiT and NaFlexViT adapters share (see the module docstring);
    :func:`timm_family_adapter` picks the family's own subclass, which owns its embedding and its blocks' call."""

    class_attention = False  # CaiT, XCiT: the class token enters after the patch blocks, in the head

    def __init__(self, model: nn.Module, normalization: Normalization | None = None) -> None:
        if not is_timm_family(model):
            raise UnsupportedModelError(f"TimmFamilyAdapter supports timm {FAMILIES}, got {type(model).__name__}")
        self.model = model
        self.normalization = normalization or timm_normalization(model)
        self.num_prefix = 0 if self.class_attention else int(getattr(model, "num_prefix_tokens", 1))
        token = getattr(model, "global_pool", "token") == "token"
        self.head_rows = (0,) if token and not self.class_attention and self.num_prefix else None

    @property
    def blocks(self) -> Sequence[nn.Module]:
        return self.model.blocks

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        m = self.model
        x = m.patch_embed(images)
        if getattr(m, "cls_token", None) is not None:
            x = torch.cat((m.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        if getattr(m, "pos_embed", None) is not None:
            x = x + m.pos_embed
        return m.pos_drop(x) if hasattr(m, "pos_drop") else x

    def run_block(self, index: int, z: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:
        return self.model.blocks[index](z)

    def head(self, z: torch.Tensor) -> torch.Tensor:
        m = self.model
        if self.class_attention:
            z = m.forward_cls(z)
        return m.forward_head(m.norm(z))

    def grid(self, input_size: tuple[int, int]) -> tuple[int, int]:
        size = self.model.patch_embed.img_size
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
        return attn_drop_capture(self.blocks, AttentionMaps(self.num_blocks))


class BeitAdapter(TimmFamilyAdapter):
    """BEiT: the shared relative position bias, when the model has one, computed once per block call as
    ``forward_features`` does."""

    def run_block(self, index: int, z: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:
        m = self.model
        return m.blocks[index](z, shared_rel_pos_bias=m.rel_pos_bias() if m.rel_pos_bias is not None else None)


class RelPosAdapter(TimmFamilyAdapter):
    """``vit_relpos_*``: the shared relative position bias, when the model has one."""

    def run_block(self, index: int, z: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:
        m = self.model
        return m.blocks[index](z, shared_rel_pos=m.shared_rel_pos.get_bias() if m.shared_rel_pos is not None else None)


class CaitAdapter(TimmFamilyAdapter):
    """CaiT: patch tokens with positions, no class token until the class-attention blocks (the head)."""

    class_attention = True

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        m = self.model
        return m.pos_drop(m.patch_embed(images) + m.pos_embed)


class XcitAdapter(TimmFamilyAdapter):
    """XCiT: the patch blocks take the token grid (for their local patch interaction), which is the grid of the
    model's input size (:meth:`grid` refuses any other); no token-to-token attention to capture."""

    class_attention = True

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        m = self.model
        x, (hp, wp) = m.patch_embed(images)
        if m.pos_embed is not None:
            x = x + m.pos_embed(x.shape[0], hp, wp).reshape(x.shape[0], -1, x.shape[1]).permute(0, 2, 1)
        return m.pos_drop(x)

    def run_block(self, index: int, z: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:
        return self.model.blocks[index](z, *self.stream_grid(z, grid))

    def capture_attention(self) -> contextlib.AbstractContextManager[AttentionMaps]:
        raise self.unsupported("capture_attention (XCiT's cross-covariance attention mixes channels, not tokens: "
                               "there is no token-to-token attention)")


class NaFlexAdapter(TimmFamilyAdapter):
    """NaFlexViT in its standard image mode: any input size (the position embedding follows the grid). With rotary
    embeddings, a block needs the rotation of the grid it runs on: ``run_block`` computes it from the ``grid`` its
    caller passes (``model.rope.get_embed``, as ``_forward_embeds`` does), so nothing is carried from ``embed``
    to ``run_block``; token subsets are refused."""

    def __init__(self, model: nn.Module, normalization: Normalization | None = None) -> None:
        super().__init__(model, normalization)
        self.token_subsets = getattr(model, "rope", None) is None

    def _read_card(self) -> ModelCard:
        card = super()._read_card()
        size = (getattr(self.model, "pretrained_cfg", None) or {}).get("input_size")
        return card if card.input_size or not size else ModelCard(card.class_names, card.num_classes,
                                                                  tuple(size[1:]), card.defaults)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.model._forward_embeds(images, None, None, None)["patches"]

    def run_block(self, index: int, z: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:
        block, rope = self.model.blocks[index], getattr(self.model, "rope", None)
        if rope is None:
            return block(z, attn_mask=None)
        embed = rope.get_embed(shape=list(self.stream_grid(z, grid)))
        return block(z, rope=embed[index] if getattr(self.model, "rope_is_mixed", False) else embed, attn_mask=None)

    def grid(self, input_size: tuple[int, int]) -> tuple[int, int]:
        ph, pw = self.patch_size
        if input_size[0] % ph or input_size[1] % pw:
            raise UnsupportedModelError(f"input size {tuple(input_size)} is not a multiple of the patch size "
                                        f"{(ph, pw)}")
        return (input_size[0] // ph, input_size[1] // pw)


ADAPTERS: dict[str, type[TimmFamilyAdapter]] = {"Beit": BeitAdapter, "VisionTransformerRelPos": RelPosAdapter,
                                                "Cait": CaitAdapter, "Xcit": XcitAdapter, "NaFlexVit": NaFlexAdapter}


def timm_family_adapter(model: nn.Module, normalization: Normalization | None = None) -> TimmFamilyAdapter:
    """The adapter of a timm BEiT, relative-position ViT, CaiT, XCiT or NaFlexViT model (its family's class)."""
    if not is_timm_family(model):
        raise UnsupportedModelError(f"timm_family_adapter supports timm {FAMILIES}, got {type(model).__name__}")
    return ADAPTERS[type(model).__name__](model, normalization)
