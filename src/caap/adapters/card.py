"""What a model says about itself: its classes, input size and per-method defaults (the model card)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ModelCard:
    """A model's own description, read once by its adapter (:attr:`caap.adapters.Adapter.card`).

    Attributes:
        class_names: one name per class (index order), when the model carries them.
        num_classes: the head's number of classes, when the model says.
        input_size: the input ``(H, W)`` in pixels the model was built for, when fixed.
        defaults: per-method defaults the model's card sets (``{"layers": [0, 1, 2, 3]}``: CAAP's band for the
            demo models).
    """

    class_names: tuple[str, ...] | None = None
    num_classes: int | None = None
    input_size: tuple[int, int] | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)
