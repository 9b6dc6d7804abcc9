"""FLOP counts and `vitkit models`: the analytic ViT formula and the meta-device counter agree, hybrids and
DPT get a count, models whose forward pass depends on the data get NaN rather than an error."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from torch import nn

from vitkit.cli.main import main
from vitkit.models.registry import build_model, get_model_config
from vitkit.models.resnetv2 import ResNetV2Config
from vitkit.models.summary import (
    counted_forward_flops,
    forward_flops,
    summarize_model,
    vit_forward_flops,
)

TINY_TRUNK = {"layers": (1, 1, 1), "channels": (32, 64, 128), "stem_width": 16, "num_groups": 4}


def _counted(cfg) -> float:
    with torch.device("meta"):
        model = build_model(cfg)
    return counted_forward_flops(model, (cfg.in_chans, *cfg.image_size))


def test_counter_counts_a_convolution_by_hand():
    with torch.device("meta"):
        conv = nn.Conv2d(3, 8, 3, padding=1)
    assert counted_forward_flops(conv, (3, 16, 20)) == 2 * 16 * 20 * 8 * 3 * 9


@pytest.mark.parametrize("name, overrides", [
    ("vit_base_patch16_224", {}),
    ("vit_tiny_patch4_32", {"pool": "avg", "class_token": False}),
    ("vitc_tiny_stem4_32", {}),
    ("vit_hybrid_conv4_32", {}),
    ("vit_hybrid_conv7_32", {}),
    ("vit_small_patch16_224", {"image_size": (224, 160), "representation_size": 384}),
])
def test_analytic_vit_formula_equals_the_counter(name, overrides):
    cfg = get_model_config(name, **overrides)
    assert vit_forward_flops(cfg) == _counted(cfg)


def test_hybrid_count_is_trunk_plus_transformer():
    cfg = get_model_config("vit_base_r50_s16_224", dim=64, depth=2, num_heads=2, num_classes=10,
                           image_size=(64, 96), backbone=TINY_TRUNK)
    with pytest.raises(ValueError, match="hybrid"):
        vit_forward_flops(cfg)
    with torch.device("meta"):
        trunk = build_model(ResNetV2Config(**TINY_TRUNK))
    trunk_flops = counted_forward_flops(trunk, (3, 64, 96))
    # the same transformer fed the trunk's (128, 4, 6) feature map as 1x1 patches
    tokens_only = dataclasses.replace(cfg, backbone=None, image_size=(4, 6), patch_size=1, in_chans=128)
    assert trunk_flops > 0
    assert forward_flops(cfg) == pytest.approx(trunk_flops + vit_forward_flops(tokens_only), rel=1e-12)


def test_summaries_of_hybrid_dpt_and_data_dependent_models():
    hybrid = summarize_model("vit_base_r50_s16_224")
    vit_b = summarize_model("vit_base_patch16_224")
    assert hybrid["input"] == "224x224" and hybrid["gflops"] > vit_b["gflops"]  # same tokens + an R50 trunk
    assert math.isfinite(summarize_model("dpt_hybrid_depth")["gflops"])
    mpp = summarize_model("mpp_vit_tiny_patch4_32")  # loss over a boolean-masked subset: no count
    assert math.isnan(mpp["gflops"]) and mpp["params"] > 0 and mpp["input"] == "32x32"


def test_models_cli_lists_gflops(capsys):
    assert main(["models", "vit_base_r50_s16_*", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["name"] for r in rows] == ["vit_base_r50_s16_224", "vit_base_r50_s16_384"]
    assert rows[1]["gflops"] > 2 * rows[0]["gflops"]  # 2.9x the tokens
    assert main(["models", "no_such_model*"]) == 1
