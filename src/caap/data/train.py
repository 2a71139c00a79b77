"""Train the embedded demo model on the controlled-evidence benchmark (CPU, seeded).

    python -m caap.data.train --variant simple [--minutes 17] [--out src/caap/assets]
    python -m caap.data.train --arch deit3 --variant simple --out zoo/     # a member of the backbone zoo

Training images are samples ``0, 1, 2, …`` of ``SyntheticConfig(variant, seed=SEED)`` (a fresh image for
every step, so nothing is seen twice); the test set is ``TEST_SIZE`` samples of a different seed. At the
end the script measures test accuracy, the occlusion check (class object or distractors replaced by the
image's own background) and writes ``demo_<variant>.safetensors`` (``<arch>_<variant>.safetensors`` for the
other backbones of :mod:`caap.adapters.backbones`) with its model card (the ``.json`` beside it).
"""

from __future__ import annotations

import argparse
import hashlib
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, IterableDataset

from caap.adapters.backbones import BACKBONES, build_backbone
from caap.adapters.demo import ARCH, STEM, normalize_uint8
from caap.data.synthetic import SyntheticConfig, generate, generate_batch, remove_objects
from caap.io import atomic_write_bytes, save_json

TEST_SEED_OFFSET = 1_000_003
TEST_SIZE = 2000


class Stream(IterableDataset):
    """Batches ``step * batch_size …`` of the generator, produced in a worker process."""

    def __init__(self, config: SyntheticConfig, batch_size: int, steps: int) -> None:
        self.config, self.batch_size, self.steps = config, batch_size, steps

    def __iter__(self):
        for step in range(self.steps):
            b = generate_batch(self.config, step * self.batch_size, self.batch_size)
            yield b["images"], b["labels"]


@torch.inference_mode()
def accuracy(model, images_u8: torch.Tensor, labels: torch.Tensor, batch: int = 250) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(labels), batch):
        logits = model(normalize_uint8(images_u8[i : i + batch]))
        correct += int((logits.argmax(-1) == labels[i : i + batch]).sum())
    return correct / len(labels)


def test_set(variant: str, seed: int, size: int) -> dict:
    return generate_batch(SyntheticConfig(variant=variant, seed=seed + TEST_SEED_OFFSET), 0, size)


def occlusion_check(model, variant: str, seed: int, size: int) -> dict:
    """Accuracy on clean images, with the class object(s) removed, and with the distractors removed."""
    config = SyntheticConfig(variant=variant, seed=seed + TEST_SEED_OFFSET)
    samples = [generate(config, i) for i in range(size)]
    labels = torch.tensor([s.label for s in samples])

    def acc(images: list[np.ndarray]) -> float:
        return accuracy(model, torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2), labels)

    return {
        "images": size,
        "clean": acc([s.image for s in samples]),
        "class_object_removed": acc([remove_objects(s, "class") for s in samples]),
        "distractors_removed": acc([remove_objects(s, "distractors") for s in samples]),
        "chance": 1 / config.num_classes,
    }


def train(variant: str, minutes: float, batch_size: int = 128, lr: float = 1e-3, seed: int = 0,
          max_steps: int = 100_000, log_every: int = 50, arch: str = "vit") -> tuple[torch.nn.Module, dict]:
    """Train for ``minutes`` of wall time (or ``max_steps``), cosine schedule over the predicted step count."""
    torch.manual_seed(seed)
    config = SyntheticConfig(variant=variant, seed=seed)
    model = build_backbone(arch, config.num_classes)
    decay = [p for n, p in model.named_parameters() if p.dim() > 1 and "pos_embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() > 1 and "pos_embed" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.98))
    loader = DataLoader(Stream(config, batch_size, max_steps), batch_size=None, num_workers=1, prefetch_factor=4)
    budget = minutes * 60
    start = time.perf_counter()
    total = max_steps  # re-estimated from the measured step time after warm-up
    warmup = 100
    step, seen, running = 0, 0, []
    model.train()
    for images, labels in loader:
        elapsed = time.perf_counter() - start
        if step == 30:
            total = min(max_steps, int(budget / (elapsed / 30)))
        if step >= total or elapsed > budget:
            break
        scale = min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, step / max(total, 1))))
        for group in opt.param_groups:
            group["lr"] = lr * scale
        logits = model(normalize_uint8(images))
        loss = F.cross_entropy(logits, labels, label_smoothing=0.05)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        running.append((loss.item(), (logits.argmax(-1) == labels).float().mean().item()))
        step += 1
        seen += len(labels)
        if step % log_every == 0:
            loss_m, acc_m = np.mean(running, axis=0)
            running.clear()
            print(f"step {step:5d}/{total}  loss {loss_m:.3f}  train acc {acc_m:.3f}  lr {lr * scale:.2e}  "
                  f"{time.perf_counter() - start:6.0f} s", flush=True)
    record = {"steps": step, "images_seen": seen, "train_seconds": time.perf_counter() - start,
              "batch_size": batch_size, "lr": lr, "seed": seed, "optimizer": "AdamW(0.9, 0.98), wd 0.05, "
              "cosine with 100 warm-up steps, label smoothing 0.05, grad clip 1.0"}
    return model.eval(), record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="train the embedded caap demo model")
    parser.add_argument("--variant", choices=["simple", "conjunction"], default="simple")
    parser.add_argument("--arch", choices=list(BACKBONES), default="vit",
                        help="the backbone (vit: the demo model; the others: caap.adapters.backbones)")
    parser.add_argument("--minutes", type=float, default=17.0, help="wall-time budget for the training loop")
    parser.add_argument("--max-steps", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "assets")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model, record = train(args.variant, args.minutes, args.batch_size, args.lr, args.seed, args.max_steps,
                          arch=args.arch)
    test = test_set(args.variant, args.seed, TEST_SIZE)
    test_acc = accuracy(model, test["images"], test["labels"])
    occlusion = occlusion_check(model, args.variant, args.seed, 1000)
    total = time.perf_counter() - t0
    print(f"test accuracy {test_acc:.4f}; occlusion {occlusion}; total {total:.0f} s", flush=True)
    from safetensors.torch import save

    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    stem = f"demo_{args.variant}" if args.arch == "vit" else f"{args.arch}_{args.variant}"
    blob = save(state)
    atomic_write_bytes(args.out / f"{stem}.safetensors", blob)
    config = SyntheticConfig(variant=args.variant, seed=args.seed)
    card = {
        "model": type(model).__name__, "backbone": args.arch, "architecture": {**ARCH, "patch_embed": STEM},
        "num_classes": config.num_classes,
        "classes": list(config.classes), "parameters": sum(p.numel() for p in model.parameters()),
        "normalization": {"mean": [0.5] * 3, "std": [0.5] * 3},
        "data": config.to_dict(), "test_set": {"seed": args.seed + TEST_SEED_OFFSET, "size": TEST_SIZE},
        "test_accuracy": test_acc, "occlusion_check": occlusion, "training": record,
        "total_seconds": total, "command": "python -m caap.data.train " + " ".join(argv or sys.argv[1:]),
        "machine": f"{platform.machine()}, {args.threads} threads, torch {torch.__version__}",
        "weights_sha256": hashlib.sha256(blob).hexdigest(),  # how a run's config.json names these weights
    }
    save_json(args.out / f"{stem}.json", card)
    return 0


if __name__ == "__main__":
    sys.exit(main())
