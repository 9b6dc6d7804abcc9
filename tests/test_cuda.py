"""What only a GPU shows (marked `cuda`, skipped without one; benchmarks/gpu_check.sh runs them): device
placement, bf16 / fp16 autocast, the fused SDPA kernels, attention recording, deterministic mode, and the
NCCL paths (metrics, step agreement, DDP and FSDP in one process)."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from test_engine import make_trainer, tiny_model
from torch.nn.attention import SDPBackend, sdpa_kernel

from vitkit.engine.distributed import agree_to_step, run_on_main
from vitkit.engine.fsdp import ensure_process_group
from vitkit.engine.metrics import MeanMetrics
from vitkit.layers.attention import Attention
from vitkit.viz import record_attention

pytestmark = pytest.mark.cuda
CUDA = torch.device("cuda", 0)


@pytest.fixture
def nccl_group():
    ensure_process_group(CUDA)  # a one-member NCCL group
    assert dist.get_backend() == "nccl"
    yield
    dist.destroy_process_group()


def test_trainer_places_model_batches_and_pins_memory(tmp_path):
    trainer = make_trainer(tmp_path, device="cuda", epochs=1, amp=True)
    assert all(p.device == CUDA for p in trainer.model.parameters())
    assert trainer.train_data.pin_memory
    val = trainer.fit()
    assert val["acc1"] >= 0 and trainer.step == 6
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.benchmark


def test_bf16_autocast_and_fp16_with_grad_scaler(tmp_path):
    trainer = make_trainer(tmp_path / "bf16", device="cuda", amp=True)
    images = torch.randn(4, 1, 8, 8, device=CUDA)
    with trainer._autocast():
        assert trainer.model(images).dtype == torch.bfloat16
    fp16 = make_trainer(tmp_path / "fp16", device="cuda", amp=True, amp_dtype="fp16", epochs=1)
    assert fp16.scaler.is_enabled()
    fp16.fit()
    assert all(torch.isfinite(p).all() for p in fp16.model.parameters())


@pytest.mark.parametrize(("backend", "dtype"), [(SDPBackend.FLASH_ATTENTION, torch.bfloat16),
                                                (SDPBackend.EFFICIENT_ATTENTION, torch.float32)])
def test_fused_attention_kernels_run_our_layout(backend, dtype):
    attn = Attention(64, num_heads=4).to(CUDA, dtype)
    x = torch.randn(2, 197, 64, device=CUDA, dtype=dtype)
    with sdpa_kernel(backend):  # raises if this kernel cannot take the call
        out = attn(x)
    reference, _ = attn(x, return_weights=True)  # the explicit path
    torch.testing.assert_close(out, reference, rtol=2e-2, atol=2e-2)


def test_record_attention_on_cuda():
    model = tiny_model().to(CUDA).eval()
    with record_attention(model) as rec, torch.no_grad():
        model(torch.randn(3, 1, 8, 8, device=CUDA))
    weights = rec.stack()
    assert weights.device.type == "cpu" and weights.shape[:2] == (2, 3)
    torch.testing.assert_close(weights.sum(-1), torch.ones_like(weights.sum(-1)))


def test_deterministic_mode_trains_on_cuda(tmp_path):
    # bilinear position-embedding resampling backward has no deterministic CUDA kernel: a warning, no error
    trainer = make_trainer(tmp_path, device="cuda", deterministic=True, epochs=1)
    trainer.fit()
    x = torch.randn(1, 1, 4, 4, device=CUDA, requires_grad=True)
    with torch.autocast("cuda", enabled=False):
        F.interpolate(x, size=(8, 8), mode="bilinear").sum().backward()


def test_nccl_metrics_agreement_and_save_signal(nccl_group):
    meter = MeanMetrics(CUDA)
    meter.update({"loss": torch.tensor(2.0, device=CUDA)}, 3)
    assert meter.compute() == {"loss": 2.0}
    assert agree_to_step(True, False, CUDA) == (True, False)
    run_on_main(lambda: None, "nothing")


def test_ddp_and_fsdp_in_one_process_on_nccl(tmp_path, nccl_group):
    model = tiny_model().to(CUDA)
    ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[0])
    ddp(torch.randn(4, 1, 8, 8, device=CUDA)).sum().backward()
    assert model.head.weight.grad is not None
    trainer = make_trainer(tmp_path, device="cuda", strategy="fsdp", amp=True, epochs=1)
    trainer.fit()
    assert (tmp_path / "checkpoints" / "last" / "dcp" / ".metadata").is_file()
    resumed = make_trainer(tmp_path, device="cuda", strategy="fsdp", amp=True, epochs=1)
    assert resumed.resume() and resumed.step == trainer.step
