#!/usr/bin/env bash
# One-GPU check of what CPU CI cannot see, in under 8 minutes (issue 17):
#   1. pytest -m cuda: device placement, bf16 / fp16 autocast, flash / efficient SDPA via sdpa_kernel,
#      record_attention on CUDA, deterministic mode, DDP and FSDP in one process on NCCL (tests/test_cuda.py);
#   2. ViT-B/16 training at 224 (bf16 autocast, torch.compile'd blocks, the largest batch of 512, 384, 256, ...
#      that fits with room for the HF model) for vitkit and HF transformers ViT, interleaved (`vitkit bench`):
#      img/s, MFU against the GPU's dense bf16 peak (vitkit.hardware) and the vitkit / HF ratio.
# Without CUDA it runs what is CPU-safe: the cuda tests report their skips, and a tiny model stands in for
# ViT-B/16 (a smoke run of the same benchmark path; its figures mean nothing).
#
#   bash benchmarks/gpu_check.sh            # from the repository root, vitkit importable (PYTHONPATH=src)
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="${PYTHONPATH:-src}"
PY="${PYTHON:-python}"

echo "== 1/2 pytest -m cuda"
timeout 300 "$PY" -m pytest -q -m cuda -rs tests/test_cuda.py || status=$?
if [ "${status:-0}" -ne 0 ] && [ "${status:-0}" -ne 5 ]; then
  echo "cuda tests failed (exit ${status})"; exit "${status}"
fi

if "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "== 2/2 ViT-B/16 training at 224, bf16 + torch.compile, vitkit vs HF transformers"
  BATCH=$(timeout 120 "$PY" - <<'PYEOF'
import torch, torch.nn.functional as F
from vitkit.models import create_model
model = create_model("vit_base_patch16_224").cuda()
opt = torch.optim.AdamW(model.parameters(), fused=True)
for batch in (512, 384, 256, 192, 128, 96, 64, 32):
    try:
        torch.cuda.reset_peak_memory_stats()
        x = torch.randn(batch, 3, 224, 224, device="cuda")
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x), torch.zeros(batch, dtype=torch.long, device="cuda"))
        loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
        # room for the HF model and compile's workspace next to it: at most 45 % of the GPU per model
        if torch.cuda.max_memory_allocated() < 0.45 * torch.cuda.get_device_properties(0).total_memory:
            print(batch); break
    except torch.cuda.OutOfMemoryError:
        pass
    del x
    torch.cuda.empty_cache()
else:
    print(32)
PYEOF
)
  echo "batch ${BATCH}"
  timeout 360 "$PY" -m vitkit bench vit_base_patch16_224 --mode train --dtype bf16 --compile --hf \
    --hf-attn sdpa --batch-sizes "${BATCH}" --rounds 8 --warmup 3 --device cuda
else
  echo "== 2/2 skipped: no CUDA GPU here (torch $("$PY" -c 'import torch; print(torch.__version__)')); ViT-B/16" \
       "at 224 needs one. CPU-safe smoke run of the same path on a tiny model instead:"
  OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}" timeout 300 "$PY" -m vitkit bench vit_tiny_patch4_32 --mode train \
    --dtype fp32 --hf --hf-attn sdpa --batch-sizes 8 --rounds 2 --warmup 1 --device cpu \
    --set num_classes=10
fi
