"""Smoke tests of the benchmark harness: one tiny round, the fields are there; speed is never asserted."""

from __future__ import annotations

import json
import math

import pytest
import torch

from vitkit.bench import (
    BenchConfig,
    build_candidates,
    format_table,
    run_benchmark,
    run_candidates,
)
from vitkit.cli.main import main
from vitkit.layers.attention import use_explicit_attention
from vitkit.models.registry import get_model_config
from vitkit.models.summary import forward_flops, vit_forward_flops

TINY = {"depth": 1, "dim": 32, "num_heads": 2}
FIELDS = {"model", "impl", "mode", "precision", "batch", "img_s", "step_ms", "tflops", "frac_peak",
          "gflops_per_img", "peak_rss_gib", "step_mem_gib", "peak_bf16_tflops", "peak_fp32_tflops",
          "peak_bf16_tflops_median", "frac_peak_best", "vs_hf_best", "device", "threads"}


def _tiny(**kw) -> BenchConfig:
    return BenchConfig(model="vit_tiny_patch4_32", batch_sizes=(2,), rounds=1, warmup=1, overrides=dict(TINY),
                       **kw)


def test_train_rows_have_every_field_and_compare_with_hf():
    rows = run_benchmark(_tiny(hf_attn=("eager",)))
    assert [r["impl"] for r in rows] == ["vitkit", "hf-eager"]
    for r in rows:
        assert FIELDS <= r.keys()
        assert r["img_s"] > 0 and r["tflops"] > 0 and r["peak_bf16_tflops"] > 0 and r["peak_rss_gib"] > 0
        assert r["gflops_per_img"] == pytest.approx(3 * vit_forward_flops(get_model_config(
            "vit_tiny_patch4_32", **TINY)) / 1e9, rel=1e-3)
        json.dumps(r)
    assert rows[1]["vs_hf_best"] == 1.0
    table = format_table(rows)
    assert "vitkit" in table and "hf-eager" in table and "matmul 1024² best" in table


def test_inference_without_hf_and_bf16_weights():
    rows = run_benchmark(_tiny(mode="infer", precision="bf16-weights", hf=False))
    assert len(rows) == 1 and rows[0]["vs_hf_best"] is None and rows[0]["mode"] == "infer"
    assert rows[0]["gflops_per_img"] == pytest.approx(
        vit_forward_flops(get_model_config("vit_tiny_patch4_32", **TINY)) / 1e9, rel=1e-3)


def test_bf16_weights_training_is_refused():
    with pytest.raises(ValueError, match="inference"):
        build_candidates(_tiny(precision="bf16-weights"), 2)


def test_mae_candidates_and_flops():
    cfg = get_model_config("mae_vit_base_patch16")
    enc = cfg.encoder
    # encoder on 49 visible patches + [CLS], decoder on all 196 + 1 tokens: the paper's ~1.8x FLOP saving
    # over ViT-B
    vit = vit_forward_flops(get_model_config("vit_base_patch16_224"))
    assert forward_flops(cfg) == pytest.approx(vit / 1.8, rel=0.05)
    one_block = get_model_config("mae_vit_base_patch16", decoder_depth=1)
    assert forward_flops(one_block) == pytest.approx(vit / 3.4, rel=0.05)
    assert enc.dim == 768
    small = BenchConfig(model="mae_vit_tiny_patch4_32", batch_sizes=(2,), rounds=1, warmup=1,
                        hf_attn=("eager",), overrides={"decoder_depth": 1})
    rows = run_candidates(build_candidates(small, 2), rounds=1, warmup=1)
    assert [r["impl"] for r in rows] == ["vitkit", "hf-eager"]
    assert all(math.isfinite(r["img_s"]) for r in rows)


def test_cli_prints_json_lines_then_table(capsys):
    assert main(["bench", "vit_tiny_patch4_32", "--batch-sizes", "2", "--rounds", "1", "--warmup", "1",
                 "--mode", "infer", "--dtype", "fp32", "--set", "depth=1", "--set", "dim=32",
                 "--set", "num_heads=2"]) == 0
    out = capsys.readouterr().out.splitlines()
    row = json.loads(out[0])
    assert row["impl"] == "vitkit" and row["precision"] == "fp32" and row["batch"] == 2
    assert any(line.startswith("model") and "img/s" in line for line in out)


def test_attention_policy_explicit_only_for_reduced_precision_cpu():
    q = torch.zeros(1, 2, 65, 8, dtype=torch.bfloat16, requires_grad=True)
    assert use_explicit_attention(q)
    with torch.no_grad():
        assert use_explicit_attention(q.detach())  # bf16 inference too
    assert not use_explicit_attention(q.float())  # fp32 keeps SDPA (and its exact numerics)
    long = torch.zeros(1, 2, 4096, 8, dtype=torch.bfloat16, requires_grad=True)
    assert not use_explicit_attention(long)  # T² weights would cost more memory than the kernel saves


@pytest.mark.slow
def test_compiled_candidates_train_and_infer():
    for mode in ("train", "infer"):
        rows = run_benchmark(_tiny(mode=mode, hf=False, compile=True,
                                   precision="bf16" if mode == "train" else "bf16-weights"))
        assert [r["impl"] for r in rows] == ["vitkit", "vitkit+compile"]
        assert rows[1]["compile_s"] is not None


def test_hybrid_is_benchmarked_with_its_trunk_counted(caplog):
    trunk = {"layers": (1, 1, 1), "channels": (32, 64, 128), "stem_width": 16, "num_groups": 4}
    overrides = {"dim": 32, "depth": 1, "num_heads": 2, "image_size": (64, 64), "backbone": trunk}
    rows = run_benchmark(BenchConfig(model="vit_base_r50_s16_224", batch_sizes=(2,), rounds=1, warmup=1,
                                     overrides=overrides))
    assert [r["impl"] for r in rows] == ["vitkit"]  # HF has no equivalent exported from vitkit: said, skipped
    assert "no HF sdpa candidate" in caplog.text
    cfg = get_model_config("vit_base_r50_s16_224", **overrides)
    assert rows[0]["gflops_per_img"] == pytest.approx(3 * forward_flops(cfg) / 1e9, rel=1e-5)
    assert forward_flops(cfg) > vit_forward_flops(get_model_config("vit_base_r50_s16_224", **{
        **overrides, "backbone": None, "patch_size": 16}))  # the trunk costs more than a 16x16 patch conv


def test_unsupported_models_are_refused_clearly():
    with pytest.raises(KeyError):
        build_candidates(BenchConfig(model="no_such_model"), 1)
