"""Exact multiply-add (MAC) accounting of a CAAP call.

A CAAP call on ``B`` images runs: the source forward (embed, every block, head) and the context forward on
each image, then ``V`` patched variants (one per patch group per image) through blocks
``min(layers) … L-1`` and the head; when the head reads only prefix rows, the last block computes only those
rows (its keys and values still cover every token). :func:`caap_macs` counts each piece by running it once
on a single zero input under :class:`torch.utils.flop_counter.FlopCounterMode` with the math SDPA backend,
so the count is the matrix products that the adapter's modules really execute (fused ``qkv``, SwiGLU MLPs,
convolutional stems), scaled by the number of runs. Only multiply-adds count: linear layers, convolutions,
attention scores ``QK^T`` and mixing ``AV``; norms, activations, softmax and copies do not (FLOPs = 2 × MACs).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from caap.adapters.capabilities import fast_paths
from caap.core.groups import Variants, check_groups
from caap.core.state import eval_mode, model_device
from caap.errors import CaapError
from caap.methods.caap.exact import head_row_count


@dataclass(frozen=True)
class MacCount:
    """Multiply-adds of one CAAP call (FLOPs = 2 × MACs).

    Attributes:
        images: source images ``B``.
        variants: patched runs ``V`` (patch groups summed over the images).
        forward: one full model forward of one image (embed + every block + head).
        block: per block index, one block on one image with every token.
        last_rows: the last block computing only the head's rows (``None`` when the engine runs it in full).
        patched: per patched block index, MACs over all ``V`` variants.
        patched_head: the head over all ``V`` variants.
    """

    images: int
    variants: int
    forward: int
    block: dict[int, int]
    last_rows: int | None
    patched: dict[int, int]
    patched_head: int

    @property
    def source(self) -> int:
        """The source forward of every image."""
        return self.images * self.forward

    @property
    def context(self) -> int:
        """The context forward of every image (its prefix is shared by the variants)."""
        return self.images * self.forward

    @property
    def per_variant(self) -> float:
        """Patched blocks and head of one variant."""
        return (sum(self.patched.values()) + self.patched_head) / self.variants

    @property
    def total(self) -> int:
        return self.source + self.context + sum(self.patched.values()) + self.patched_head

    def as_dict(self) -> dict:
        return {"images": self.images, "variants": self.variants, "forward": self.forward,
                "block": self.block, "last_rows": self.last_rows, "patched": self.patched,
                "patched_head": self.patched_head, "source": self.source, "context": self.context,
                "total": self.total}


@contextlib.contextmanager
def count_macs() -> Iterator[dict]:
    """Count the multiply-adds of the torch ops run inside (``counter["macs"]`` after the block).

    Attention runs through SDPA's math backend here so that its two matrix products are visible to the
    counter (the fused CPU kernels are opaque to it); the counted numbers are those of any backend.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    result = {"macs": 0}
    mode = FlopCounterMode(display=False)
    with sdpa_kernel(SDPBackend.MATH), mode:
        yield result
    result["macs"] = mode.get_total_flops() // 2


def caap_macs(explainer, input_size: tuple[int, int] | None = None, images: int = 1,
              groups: torch.Tensor | None = None) -> MacCount:
    """The exact multiply-add count of ``explainer.explain`` on ``images`` inputs of ``input_size`` (H, W).

    ``explainer``: a :class:`caap.CAAP`. ``input_size`` defaults to the model's own (``adapter.card.input_size``).
    ``groups``: the call's group map (default: the explainer's, else one group per patch).
    """
    adapter = explainer.adapter
    if input_size is None:
        input_size = adapter.card.input_size
    if input_size is None:
        raise CaapError("input_size is needed for this model (H, W in pixels)")
    grid = adapter.grid(tuple(input_size))
    last = adapter.num_blocks - 1
    device = model_device(adapter.model)
    dtype = next(adapter.model.parameters()).dtype
    with torch.inference_mode(), eval_mode(adapter.model):
        x = torch.zeros(1, 3, *input_size, device=device, dtype=dtype)  # [1, 3, H, W]
        with count_macs() as c:
            z = adapter.embed(x)  # [1, N, D]
        embed = c["macs"]
        block = {}
        for index in range(adapter.num_blocks):
            if index == last:
                z_last = z
            with count_macs() as c:
                z = adapter.run_block(index, z, grid)
            block[index] = c["macs"]
        with count_macs() as c:
            adapter.head(z)
        head = c["macs"]
        rows = head_row_count(adapter, z.shape[1])
        last_rows, head_rows = None, head
        if rows:
            with count_macs() as c:
                out = fast_paths(adapter).run_block_rows(last, z_last, rows)  # [1, R, D] or None
            if out is not None:
                last_rows = c["macs"]
                with count_macs() as c:
                    adapter.head(out)
                head_rows = c["macs"]
    variants = len(Variants.from_groups(
        check_groups(explainer.groups if groups is None else groups, images, grid), adapter.num_prefix))
    patched = {i: variants * block[i] for i in range(explainer.layers[0], adapter.num_blocks)}
    if last_rows is not None:
        patched[last] = variants * last_rows
    return MacCount(images=images, variants=variants, forward=embed + sum(block.values()) + head, block=block,
                    last_rows=last_rows, patched=patched, patched_head=variants * head_rows)
