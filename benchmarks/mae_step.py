"""Cost of an MAE training step at 75% masking vs a full-token ViT step of the same encoder, with FLOP ratios.

Times forward + backward of four steps, interleaved (a random order per round) by the `vitkit.bench` harness,
with a bf16 and an fp32 matmul in every round that give the machine's peak in the same run:
  * the MAE encoder on the visible 25% of patches (+[CLS]) vs the same encoder on all patches;
  * the whole MAE step (encoder + decoder + loss) vs a ViT classification step (encoder + head on all tokens);
and prints the measured time ratios next to the analytic forward-FLOP ratios (`vitkit.models.summary`).

    python benchmarks/mae_step.py                                   # tiny CIFAR-size model, CPU-friendly
    python benchmarks/mae_step.py --model mae_vit_base_patch16 --batch 64 --device cuda
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from vitkit.bench import Candidate, resolve_device, run_candidates  # noqa: E402
from vitkit.config import replace_config  # noqa: E402
from vitkit.models import create_model  # noqa: E402
from vitkit.models.summary import mae_decoder_flops, vit_forward_flops  # noqa: E402
from vitkit.models.vit import VisionTransformer  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="mae_vit_tiny_patch4_32")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--mask-ratio", type=float, default=0.75)
    p.add_argument("--steps", type=int, default=10, help="timed rounds")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    device = resolve_device(args.device)
    torch.manual_seed(0)
    mae = create_model(args.model, mask_ratio=args.mask_ratio).to(device).train()
    enc_cfg = mae.config.encoder
    vit_cfg = replace_config(enc_cfg, num_classes=10)
    vit = VisionTransformer(vit_cfg).to(device).train()
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
        mae(images).loss.backward()

    def vit_step() -> None:
        F.cross_entropy(vit(images), labels).backward()

    # forward FLOPs per image; the patch projection runs on all N patches before masking, as in the code
    flops = {"mae_encoder": vit_forward_flops(enc_cfg, tokens=k + 1),
             "full_encoder": vit_forward_flops(enc_cfg), "vit_step": vit_forward_flops(vit_cfg)}
    flops["mae_step"] = flops["mae_encoder"] + mae_decoder_flops(mae.config)
    steps = {"mae_encoder": mae_encoder, "full_encoder": full_encoder, "mae_step": mae_step,
             "vit_step": vit_step}
    candidates = [Candidate(args.model, name, step, 3 * flops[name], args.batch, "train", "fp32", enc_cfg.dim)
                  for name, step in steps.items()]  # training: 3 × the forward FLOPs
    rows = {r["impl"]: r for r in run_candidates(candidates, args.steps, args.warmup, str(device))}
    first = next(iter(rows.values()))
    print(f"{args.model}: {n} patches, {k} visible at mask ratio {args.mask_ratio}; batch {args.batch}; "
          f"{first['device']}; torch threads {first['threads']}; matmul peak (same run, median) fp32 "
          f"{first['peak_fp32_tflops_median']} / bf16 {first['peak_bf16_tflops_median']} TFLOP/s")
    print(f"| {'step (forward + backward, fp32)':<34} | {'ms':>8} | {'time ratio':>10} | {'FLOP ratio':>10} "
          f"| {'of fp32 peak':>12} |")
    print(f"|{'-' * 36}|{'-' * 10}|{'-' * 12}|{'-' * 12}|{'-' * 14}|")
    for name, label, base in (("mae_encoder", "encoder, visible 25% (+[CLS])", "full_encoder"),
                              ("full_encoder", "encoder, all tokens", "full_encoder"),
                              ("mae_step", "MAE step (encoder + decoder)", "vit_step"),
                              ("vit_step", "ViT step (all tokens + head)", "vit_step")):
        row = rows[name]
        print(f"| {label:<34} | {row['step_ms']:>8.1f} | {row['step_ms'] / rows[base]['step_ms']:>10.2f} | "
              f"{flops[name] / flops[base]:>10.2f} | {row['frac_peak']:>12.2f} |")
    print(f"forward GFLOPs per image: encoder visible {flops['mae_encoder'] / 1e9:.3f}, encoder full "
          f"{flops['full_encoder'] / 1e9:.3f}, MAE decoder {mae_decoder_flops(mae.config) / 1e9:.3f}, "
          f"ViT {flops['vit_step'] / 1e9:.3f}")


if __name__ == "__main__":
    main()
