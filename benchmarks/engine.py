"""CAAP engine throughput against the hardware: GEMM peak, achieved FLOP/s, naive loop, Captum Occlusion.

    python benchmarks/engine.py [--models deit_tiny,vit_small,vit_base] [--images N] [--naive-images M]
                                [--rounds R] [--threads T] [--device cpu|cuda] [--modes fp32,bf16,compile]
                                [--json OUT.json]

In one run, per model (real DeiT-Tiny from ``../shared/data`` or ``$CAAP_DATA_DIR`` on dev images, skipped
when absent; random-init ViT-S/16 and ViT-B/16 on random inputs), layers ``range(4, 8)``:

- the GEMM peak: fp32 and bf16 matrix products of the engine's own shapes (qkv, attention scores and
  mixing, projection, MLP at the engine's chunk size), weighted by their share of the block's multiply-adds;
- CAAP seconds per image, its FLOP/s (``caap.methods.caap.caap_macs``, FLOPs = 2 × MACs) and the ratio to
  the same-run peak of its dtype, for fp32, bf16 autocast (and fp16 on CUDA) and ``compile=True``;
- the naive one-forward-per-patch loop (fp32) and Captum's ``Occlusion`` on the patch grid (a window and
  stride of one patch: the same number of forward passes), and their ratio to CAAP;
- the Spearman rank correlation of every fast mode's maps with the fp32 maps;
- with ``--modes …,fast``: CAAP's fast mode (``FastCAAP``, fp32 and, with bf16, bf16 autocast) and
  GAE, their seconds per image, the ratio of exact fp32 to each mode and of each mode to GAE, and the fast
  mode's multiply-adds counted on a real call (forward and backward passes, ``count_macs``);
- every timing over ``--rounds`` interleaved rounds (the GEMM peak too): each ratio compares the configurations'
  best rounds, measured side by side, and every round is kept (``rounds_s``: the spread, not only the best case);
  each mode is timed with all ``--images`` in one call and with one image per call (``one_per_call``);
- peak memory per ``batch_size`` (CUDA: ``max_memory_allocated``; CPU: the resident-set high-water mark
  above the level before the call, in a fresh process per configuration).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from caap import CAAP, FastCAAP
from caap.bench.provenance import cpu_model
from caap.bench.timing import gemm_peak, interleaved, occlusion_runner, process_memory, spearman, sync
from caap.data.real import data_dir, dev_batch, dev_files, has_real_data, real_deit
from caap.methods import get
from caap.methods.caap import caap_macs, count_macs, naive_caap

ROOT = Path(__file__).resolve().parents[1]
DATA = data_dir(ROOT)
LAYERS = list(range(4, 8))
TIMM = {"deit_tiny": "deit_tiny_patch16_224", "vit_small": "vit_small_patch16_224", "vit_base": "vit_base_patch16_224"}


def load(name: str, n: int, device: torch.device):
    """(label, model, images [n, 3, 224, 224]) or None when the real weights are absent."""
    import timm

    if name == "deit_tiny":
        if not has_real_data(DATA):
            return None
        model = real_deit(DATA)
        images = dev_batch(model, dev_files(DATA)[::50][:n])  # spread over the classes
        label = "deit_tiny_patch16_224 (real)"
    else:
        torch.manual_seed(0)
        model = timm.create_model(TIMM[name], pretrained=False).eval()
        images = torch.randn(n, 3, 224, 224, generator=torch.Generator().manual_seed(0))
        label = f"{TIMM[name]} (random)"
    return label, model.to(device), images.to(device)


def _cpu_peak(name: str, batch_size: int | None, threads: int) -> int:
    """In a fresh process: resident-set high-water mark of one explain call above the level before it."""
    torch.set_num_threads(threads)
    _, model, images = load(name, 1, torch.device("cpu"))
    explainer = CAAP(model, layers=LAYERS, batch_size=batch_size)
    base = process_memory("VmRSS:")
    explainer.explain(images)
    return process_memory("VmHWM:") - base


def peak_memory(name: str, model, images: torch.Tensor, batch_size: int | None, device: torch.device,
                threads: int) -> int | None:
    """Bytes above the starting level at the peak of one explain call on one image (None if unreadable).

    CUDA: ``max_memory_allocated``. CPU: a fresh process per configuration, because the allocator keeps
    freed memory resident and an earlier, larger call would hide a smaller one's peak."""
    if device.type == "cuda":
        explainer = CAAP(model, layers=LAYERS, batch_size=batch_size)
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        explainer.explain(images[:1])
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    if not Path("/proc/self/status").is_file():
        return None
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_cpu_peak, (name, batch_size, threads))


def measure(name: str, args, device: torch.device) -> dict | None:
    loaded = load(name, args.images, device)
    if loaded is None:
        print(f"{TIMM[name]} (real): skipped, no weights under {DATA}")
        return None
    label, model, images = loaded
    n = len(images)
    row: dict = {"model": label, "images": n, "layers": LAYERS, "device": str(device), "rounds": args.rounds,
                 "modes": {}}
    fast = [torch.bfloat16] + ([torch.float16] if device.type == "cuda" else [])
    names = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
    explainers = {"fp32": CAAP(model, layers=LAYERS)}
    for dtype in fast if "bf16" in args.modes else []:
        explainers[names[dtype]] = CAAP(model, layers=LAYERS, dtype=dtype)
    counted = {}  # the fast mode's multiply-adds, counted on a real call
    for dtype in ([torch.float32] + (fast if "bf16" in args.modes else [])) if "fast" in args.modes.split(",") else []:
        key = "fast" if dtype == torch.float32 else f"fast+{names[dtype]}"
        explainers[key] = FastCAAP(model, layers=LAYERS, dtype=None if dtype == torch.float32 else dtype)
        with count_macs() as c:
            explainers[key].explain(images)
        counted[key] = c["macs"]
    first_call = {}
    for dtype in [torch.float32, *fast] if "compile" in args.modes else []:
        explainer = explainers[f"{names[dtype]}+compile"] = CAAP(model, layers=LAYERS, dtype=dtype, compile=True)
        start = time.perf_counter()
        explainer.explain(images)  # compiles for the chunk shapes of this call
        sync(device)
        first_call[f"{names[dtype]}+compile"] = time.perf_counter() - start
    for explainer in explainers.values():
        explainer.explain(images[:1])  # warm-up

    ref = explainers["fp32"].explain(images)
    macs = caap_macs(explainers["fp32"], images=n)
    chunk = ref.meta["batch_size"]
    n_tokens = model.patch_embed.num_patches + model.num_prefix_tokens
    naive_n = min(args.naive_images, n)
    ctx = torch.zeros_like(images[:1])

    def naive():
        for b in range(naive_n):
            out = naive_caap(model, list(model.blocks), images[b : b + 1], ctx, LAYERS, int(ref.target[b]), 1)
        return out

    calls = {key: (lambda e=e: e.explain(images)) for key, e in explainers.items()}
    for key, e in list(explainers.items()):  # the same images, one per call
        calls[f"{key}@1"] = lambda e=e: [e.explain(images[i : i + 1]) for i in range(n)][-1]
    calls["naive"] = naive
    if counted:
        gae = get("gae")(model)
        gae.explain(images[:1])
        calls["gae"] = lambda: gae.explain(images)
    occlusion = occlusion_runner(model, images[:naive_n], ref.target[:naive_n].tolist(), n_tokens, chunk, device)
    if occlusion is not None:
        calls["occlusion"] = occlusion
    peaks: dict[str, float] = {}

    def peak():  # the GEMM peak of every dtype, measured in every round beside the calls
        for dtype in [torch.float32, *fast]:
            key = str(dtype).replace("torch.", "")
            peaks[key] = max(peaks.get(key, 0.0), gemm_peak(model, n_tokens, chunk, dtype, device))

    best, every, results = interleaved(calls, args.rounds, device, before_round=peak)
    row.update(gemm_peak_flops=peaks, macs=macs.as_dict(), batch_size=chunk, flops_per_image=2 * macs.total / n)
    for mode, explainer in explainers.items():
        achieved = 2 * counted.get(mode, macs.total) / best[mode]  # best[mode]: seconds for all n images
        dtype = explainer.dtype or torch.float32
        row["modes"][mode] = {"s_per_image": best[mode] / n, "rounds_s_per_image": [t / n for t in every[mode]],
                              "one_per_call": {"s_per_image": best[f"{mode}@1"] / n,
                                               "rounds_s_per_image": [t / n for t in every[f"{mode}@1"]]},
                              "flops": achieved,
                              "of_peak": achieved / peaks[str(dtype).replace("torch.", "")],
                              "spearman_vs_fp32": spearman(results[mode].scores, ref.scores),
                              **({"first_call_s": first_call[mode]} if mode in first_call else {}),
                              "exact_fp32_over_this": best["fp32"] / best[mode],
                              **({"over_gae": best[mode] / best["gae"], "gflop_per_image": 2 * counted[mode] / n / 1e9}
                                 if mode in counted else {})}
    row["gae_s_per_image"] = best["gae"] / n if "gae" in best else None
    row["naive_s_per_image"] = best["naive"] / naive_n
    naive_map = results["naive"]  # [gh * gw] of the last naive image
    last = ref.scores[naive_n - 1].flatten().to(naive_map.device)
    row["max_abs_diff_vs_naive"] = (naive_map - last).abs().max().item()
    row["occlusion_s_per_image"] = best["occlusion"] / naive_n if occlusion is not None else None
    row["memory"] = {}
    for batch_size in (16, 64, None):
        row["memory"][str(batch_size or f"auto ({chunk})")] = peak_memory(name, model, images, batch_size, device,
                                                                          args.threads)
    report(row)
    return row


def report(row: dict) -> None:
    naive, occ = row["naive_s_per_image"], row["occlusion_s_per_image"]
    peaks = "  ".join(f"{k} {v / 1e9:.0f}" for k, v in row["gemm_peak_flops"].items())
    print(f"\n{row['model']}: {row['flops_per_image'] / 1e9:.1f} GFLOP per image, chunk {row['batch_size']}, "
          f"GEMM peak (GFLOP/s) {peaks}, max|engine - naive| {row['max_abs_diff_vs_naive']:.1e}")
    print(f"  {'mode':14s} {'s/img':>8s} {'GFLOP/s':>8s} {'of peak':>8s} {'vs naive':>9s} {'vs Occl.':>9s} "
          f"{'Spearman':>9s}   (s/img: best round, {row['images']} images per call; rounds and one per call below)")
    print(f"  {'naive fp32':14s} {naive:8.2f}")
    if occ is not None:
        print(f"  {'Captum Occl.':14s} {occ:8.2f}")
    if row.get("gae_s_per_image"):
        print(f"  {'GAE':14s} {row['gae_s_per_image']:8.3f}")
    for mode, m in row["modes"].items():
        vs_occ = f"{occ / m['s_per_image']:8.2f}x" if occ is not None else f"{'-':>9s}"
        extra = (f"  exact fp32 / this {m['exact_fp32_over_this']:.1f}x, this / GAE {m['over_gae']:.2f}x, "
                 f"{m['gflop_per_image']:.1f} GFLOP/img" if "over_gae" in m else "")
        print(f"  {mode:14s} {m['s_per_image']:8.3f} {m['flops'] / 1e9:8.0f} {m['of_peak']:8.0%} "
              f"{naive / m['s_per_image']:8.2f}x {vs_occ} {m['spearman_vs_fp32']:9.4f}{extra}")
        rounds = ", ".join(f"{t:.3f}" for t in m["rounds_s_per_image"])
        single = ", ".join(f"{t:.3f}" for t in m["one_per_call"]["rounds_s_per_image"])
        print(f"  {'':14s} rounds {rounds}; one image per call: {single}")
    mem = "  ".join(f"batch {k}: {v / 2**20:.0f} MiB" if v is not None else f"batch {k}: n/a"
                    for k, v in row["memory"].items())
    print(f"  peak memory (fp32, one image): {mem}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="deit_tiny,vit_small,vit_base")
    parser.add_argument("--images", type=int, default=4, help="images per model for the engine")
    parser.add_argument("--naive-images", type=int, default=1, help="images for the naive loop and Occlusion")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; each configuration keeps its best")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--modes", default="fp32,bf16,compile,fast",
                        help="fp32 always; bf16, compile, fast (CAAP's fast mode, with GAE) optional")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
    print(f"torch {torch.__version__}, {device} ({name}), {args.threads} threads, layers {LAYERS}")
    rows = [r for m in args.models.split(",") if m for r in [measure(m, args, device)] if r is not None]
    if args.json:
        from caap.bench.provenance import record
        from caap.io import save_json

        save_json(args.json, {"torch": torch.__version__, "device": name, "threads": args.threads,
                              "provenance": record(device), "rows": rows})


if __name__ == "__main__":
    main()
