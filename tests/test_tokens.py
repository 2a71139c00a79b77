"""Token-level baselines (issue 14): token occlusion and RISE on tokens against naive loops over the model's own
modules (TIS as its authors compute it: tests/test_tis.py)."""

from __future__ import annotations

import torch
from archs import GRID, IMG, build, run_on

from caap import methods


def images(n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, IMG, IMG, generator=torch.Generator().manual_seed(4))



def test_token_occlusion_equals_a_naive_loop():
    model = build("timm_registers")  # 4 prefix tokens, average-free token pooling
    x = images()
    att = methods.get("token_occlusion")(model, batch_size=5).explain(x, target=[2, 7])
    n = GRID[0] * GRID[1]
    with torch.no_grad():
        for b, c in enumerate([2, 7]):
            full = run_on(model, x[b : b + 1], list(range(n)))[0, c]
            expected = torch.stack([full - run_on(model, x[b : b + 1], [q for q in range(n) if q != p])[0, c]
                                    for p in range(n)])
            torch.testing.assert_close(att.scores[b].flatten(), expected, rtol=1e-4, atol=1e-5)


def test_token_rise_equals_a_naive_loop_on_the_same_subsets():
    model = build("timm_avg_fc_norm")  # average pooling reads the kept tokens only
    x = images()
    explainer = methods.get("token_rise")(model, masks=12, keep=0.25, seed=3, batch_size=5)
    att = explainer.explain(x, target=[1, 4])
    subsets = explainer.subsets(GRID[0] * GRID[1])
    assert subsets.shape == (12, 4)
    with torch.no_grad():
        for b, c in enumerate([1, 4]):
            total, count = torch.zeros(16), torch.zeros(16)
            for kept in subsets.tolist():
                score = run_on(model, x[b : b + 1], kept).softmax(-1)[0, c]
                total[kept] += score
                count[kept] += 1
            torch.testing.assert_close(att.scores[b].flatten(), total / count.clamp(min=1), rtol=1e-4, atol=1e-6)
    again = methods.get("token_rise")(model, masks=12, keep=0.25, seed=3).explain(x[1:], target=[4])
    torch.testing.assert_close(again.scores[0], att.scores[1])  # seeded, independent of the batch
