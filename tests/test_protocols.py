"""Published protocols as metrics (issue 34): TIS's insertion / deletion and Chefer et al.'s ± perturbation,
against naive loops written here from the authors' evaluation code (their steps, sorting, baselines and readouts).
benchmarks' check against TIS's own metric classes on the real DeiT-Tiny: docs/EVALUATION.md."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from caap import metrics
from caap.adapters import adapt
from caap.adapters.tiny import timm_vit


def tis_naive(model, image, saliency, target, insert):
    """TIS's ``RelevanceMetric`` for one image: pixels sorted descending (``flip(argsort)``), ``ceil(HW / 224)`` per
    step over 224 steps, the 11 x 11 sigma-5 blur as the baseline, softmax of the target, the mean of the steps."""
    from torchvision.transforms.functional import gaussian_blur

    h, w = image.shape[-2:]
    baseline = gaussian_blur(image, kernel_size=[11, 11], sigma=[5, 5])
    order = torch.flip(saliency.view(-1).argsort(), dims=[-1])
    per_step = math.ceil(h * w / 224)
    scores = []
    for step in range(224):
        sample = (baseline if insert else image).clone().view(3, -1)
        source = (image if insert else baseline).view(3, -1)
        chosen = order[: per_step * (step + 1)]
        sample[:, chosen] = source[:, chosen]
        scores.append(model(sample.view(1, 3, h, w)).softmax(1)[0, target])
    return torch.stack(scores).mean()


def chefer_naive(model, image, saliency, target, negative, normalization):
    """Chefer et al.'s loop for one image: ``topk`` of the (negated) map, those pixels of the unnormalised image set
    to 0 for 10 %..90 %, top-1 correctness against the target, 0 % the clean image, area over 0..0.9 / 0.9."""
    mean = torch.tensor(normalization.mean).view(3, 1, 1)
    std = torch.tensor(normalization.std).view(3, 1, 1)
    raw = image[0] * std + mean
    vis = (-saliency if negative else saliency).reshape(-1)
    hits = [float(model(image).argmax(1)[0] == target)]
    for f in [k / 10 for k in range(1, 10)]:
        _, idx = torch.topk(vis, int(vis.numel() * f))
        data = raw.reshape(3, -1).clone()
        data[:, idx] = 0
        hits.append(float(model(((data.reshape(raw.shape) - mean) / std)[None]).argmax(1)[0] == target))
    y = torch.tensor(hits)
    return ((y[1:] + y[:-1]) / 2 * 0.1).sum() / 0.9


@pytest.fixture(scope="module")
def setting():
    torch.manual_seed(0)
    model = timm_vit().eval()
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    pixel_maps = torch.rand(2, 32, 32, generator=torch.Generator().manual_seed(2))  # no ties
    with torch.no_grad():
        targets = model(images).argmax(1)  # correct at 0 %: the accuracy curves move
    return model, images, targets, pixel_maps


@pytest.mark.parametrize("name,insert", [("deletion_tis", False), ("insertion_tis", True)])
def test_tis_protocol_equals_the_naive_loop(setting, name, insert):
    model, images, targets, maps = setting
    ours = metrics.get(name)()(model, images, targets, maps)
    with torch.no_grad():
        expected = torch.stack([tis_naive(model, images[b], maps[b], int(targets[b]), insert) for b in range(2)])
    # softmax probabilities in float32, batched here, one at a time there: a few ulps of values in [0, 1]
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name,negative", [("positive_perturbation_chefer", False),
                                           ("negative_perturbation_chefer", True)])
def test_chefer_protocol_equals_the_naive_loop(setting, name, negative):
    model, images, targets, maps = setting
    normalization = adapt(model).normalization
    ours = metrics.get(name)()(model, images, targets, maps)
    with torch.no_grad():
        expected = torch.stack([chefer_naive(model, images[b : b + 1], maps[b], int(targets[b]), negative,
                                             normalization) for b in range(2)])
    torch.testing.assert_close(ours, expected.float())


def test_patch_maps_are_upsampled_bilinearly_first(setting):
    """A patch map scores as its bilinear upsampling does (Chefer: ``interpolate``; TIS: torchvision's
    antialiased ``Resize``)."""
    model, images, targets, _ = setting
    patch = torch.rand(2, 4, 4, generator=torch.Generator().manual_seed(3))
    for name, antialias in (("positive_perturbation_chefer", False), ("deletion_tis", True)):
        up = F.interpolate(patch[:, None], size=(32, 32), mode="bilinear", align_corners=False,
                           antialias=antialias)[:, 0]
        metric = metrics.get(name)()
        torch.testing.assert_close(metric(model, images, targets, patch), metric(model, images, targets, up))
