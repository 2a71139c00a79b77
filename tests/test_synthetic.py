"""The controlled-evidence generator: determinism, exact masks, no class information in distractors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from caap.data.synthetic import (
    DISTRACTORS,
    PAIRS,
    SyntheticConfig,
    generate,
    generate_batch,
    remove_objects,
)
from caap.errors import CaapError


@pytest.mark.parametrize("variant", ["simple", "conjunction"])
def test_deterministic_and_independent_of_batching(variant):
    config = SyntheticConfig(variant=variant, seed=4)
    a = generate_batch(config, 0, 12)
    b = generate_batch(config, 0, 12)
    for key in a:
        assert torch.equal(a[key], b[key])
    tail = generate_batch(config, 5, 7)  # sample i depends on (seed, i) only
    for key in a:
        assert torch.equal(a[key][5:], tail[key])
    other = generate_batch(SyntheticConfig(variant=variant, seed=5), 0, 12)
    assert not torch.equal(a["images"], other["images"])


@pytest.mark.parametrize("variant", ["simple", "conjunction"])
def test_masks_are_exactly_the_drawn_pixels(variant):
    config = SyntheticConfig(variant=variant, seed=1)
    for i in range(40):
        s = generate(config, i)
        painted = s.mask | s.distractor_mask
        assert not np.any(s.mask & s.distractor_mask)  # objects never overlap
        # every painted pixel carries the object's colour, every other pixel is background
        assert np.array_equal(s.image[~painted], s.background[~painted])
        n_colours = len(np.unique(s.image[s.mask].reshape(-1, 3), axis=0))  # two tones per object
        assert n_colours <= (2 if variant == "simple" else 4)
        assert s.mask.sum() > 30


def test_conjunction_parts_are_apart_and_each_part_is_ambiguous():
    config = SyntheticConfig(variant="conjunction", seed=2)
    parts_per_class = {}
    for i in range(60):
        s = generate(config, i)
        (n1, b1), (n2, b2) = s.objects[:2]
        assert {n1, n2} == set(PAIRS[s.label])
        c1 = ((b1[0] + b1[2]) / 2, (b1[1] + b1[3]) / 2)
        c2 = ((b2[0] + b2[2]) / 2, (b2[1] + b2[3]) / 2)
        assert np.hypot(c1[0] - c2[0], c1[1] - c2[1]) >= config.min_part_distance
        parts_per_class.setdefault(n1, set()).add(s.label)
    assert all(len({c for c, pair in enumerate(PAIRS) if p in pair}) == 4 for p in parts_per_class)


def test_distractors_are_independent_of_the_class():
    config = SyntheticConfig(seed=3)
    counts = np.zeros((config.num_classes, len(DISTRACTORS)))
    for i in range(2000):
        s = generate(config, i)
        for name, _ in s.objects[1:]:
            counts[s.label, DISTRACTORS.index(name)] += 1
    freq = counts / counts.sum(1, keepdims=True)
    assert np.abs(freq - 1 / len(DISTRACTORS)).max() < 0.08


def test_balanced_labels_and_removal():
    config = SyntheticConfig(seed=0)
    batch = generate_batch(config, 0, 20, balanced=True)
    assert batch["labels"].tolist() == [i % 10 for i in range(20)]
    s = generate(config, 3)
    clean = remove_objects(s, "class")
    assert np.array_equal(clean[s.mask], s.background[s.mask])
    assert np.array_equal(clean[~s.mask], s.image[~s.mask])
    with pytest.raises(CaapError, match="which must be"):
        remove_objects(s, "sky")


def test_bad_config():
    with pytest.raises(CaapError, match="unknown synthetic variant 'hard'"):
        SyntheticConfig(variant="hard")
