"""Cost of an MAE training step at 75% masking vs a full-token ViT step of the same encoder, with FLOP ratios.

Times forward + backward (median of --steps after --warmup) of:
  * the MAE encoder on the visible 25% of patches (+[CLS]) vs the same encoder on all patches;
  * the whole MAE step (encoder + decoder + loss) vs a ViT classification step (encoder + head on all tokens);
and prints the measured time ratios next to the analytic forward-FLOP ratios (`vitkit.models.summary`).

    python benchmarks/mae_step.py                                   # tiny CIFAR-size model, CPU-friendly
    python benchmarks/mae_step.py --model mae_vit_base_patch16 --batch 64 --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from vitkit.bench import time_call  # noqa: E402
from vitkit.models import create_model  # noqa: E402
from vitkit.models.summary import vit_forward_flops  # noqa: E402
from vitkit.models.vit import VisionTransformer, ViTConfig  # noqa: E402


def timed(fns: dict, steps: int, warmup: int, device: torch.device) -> dict[str, float]:
    """Median seconds of each `fn()` (forward + backward); the functions run interleaved, one call each per
    round, so load from other processes affects them alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for i in range(warmup + steps):
        for name, fn in fns.items():
            seconds = time_call(fn, device)
            if i >= warmup:
                times[name].append(seconds)
    return {name: statistics.median(ts) for name, ts in times.items()}


def decoder_flops(mae, num_patches: int, visible: int) -> float:
    """Forward FLOPs of the MAE decoder for one image: embed, blocks on 1 + N tokens, pixel prediction."""
    cfg, enc = mae.config, mae.config.encoder
    # the decoder's blocks alone: no patch projection (in_chans=0), no head (num_classes=0)
    blocks = ViTConfig(dim=cfg.decoder_dim, depth=cfg.decoder_depth, num_heads=cfg.decoder_num_heads,
                       mlp_ratio=cfg.decoder_mlp_ratio, in_chans=0, num_classes=0)
    pixels = enc.patch_size ** 2 * enc.in_chans
    return (2 * (visible + 1) * enc.dim * cfg.decoder_dim + vit_forward_flops(blocks, tokens=num_patches + 1)
            + 2 * num_patches * cfg.decoder_dim * pixels)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="mae_vit_tiny_patch4_32")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--mask-ratio", type=float, default=0.75)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    mae = create_model(args.model).to(device).train()
    enc_cfg = mae.config.encoder
    vit = VisionTransformer(ViTConfig(**{**vars(enc_cfg), "num_classes": 10})).to(device).train()
    images = torch.randn(args.batch, enc_cfg.in_chans, *enc_cfg.image_size, device=device)
    labels = torch.randint(0, 10, (args.batch,), device=device)
    n = (enc_cfg.image_size[0] // enc_cfg.patch_size) * (enc_cfg.image_size[1] // enc_cfg.patch_size)
    k = int(n * (1 - args.mask_ratio))

    def mae_encoder() -> None:
        latent, _, _ = mae.forward_encoder(images, args.mask_ratio)
        latent.float().square().mean().backward()

    def full_encoder() -> None:
        mae.encoder.forward_features(images).float().square().mean().backward()

    def mae_step() -> None:
        mae(images, mask_ratio=args.mask_ratio).loss.backward()

    def vit_step() -> None:
        F.cross_entropy(vit(images), labels).backward()

    t = timed({"mae_encoder": mae_encoder, "full_encoder": full_encoder, "mae_step": mae_step,
               "vit_step": vit_step}, args.steps, args.warmup, device)
    enc_vis = vit_forward_flops(enc_cfg, tokens=k + 1) - 2 * enc_cfg.dim * enc_cfg.num_classes
    enc_full = vit_forward_flops(enc_cfg)
    # the patch projection runs on all N patches before masking in both cases, as in the code
    mae_total = enc_vis + decoder_flops(mae, n, k)
    vit_total = vit_forward_flops(ViTConfig(**{**vars(enc_cfg), "num_classes": 10}))
    print(f"{args.model}: {n} patches, {k} visible at mask ratio {args.mask_ratio}; batch {args.batch}; "
          f"device {device}; torch threads {torch.get_num_threads()}")
    print(f"| {'step (forward + backward)':<34} | {'ms':>8} | {'time ratio':>10} | {'FLOP ratio':>10} |")
    print(f"|{'-' * 36}|{'-' * 10}|{'-' * 12}|{'-' * 12}|")
    rows = [("encoder, visible 25% (+[CLS])", t["mae_encoder"], t["mae_encoder"] / t["full_encoder"],
             enc_vis / enc_full),
            ("encoder, all tokens", t["full_encoder"], 1.0, 1.0),
            ("MAE step (encoder + decoder)", t["mae_step"], t["mae_step"] / t["vit_step"],
             mae_total / vit_total),
            ("ViT step (all tokens + head)", t["vit_step"], 1.0, 1.0)]
    for name, seconds, ratio, flops in rows:
        print(f"| {name:<34} | {seconds * 1e3:>8.1f} | {ratio:>10.2f} | {flops:>10.2f} |")
    print(f"forward GFLOPs per image: encoder visible {enc_vis / 1e9:.3f}, "
          f"encoder full {enc_full / 1e9:.3f}, MAE decoder {decoder_flops(mae, n, k) / 1e9:.3f}, "
          f"ViT {vit_total / 1e9:.3f}")


if __name__ == "__main__":
    main()
