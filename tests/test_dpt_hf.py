"""DPT parity with HF transformers (random init, saved locally, loaded through vitkit.load_pretrained) and
export.

HF's DPT reshapes tokens to a square grid, so parity is checked on square inputs; vitkit's non-square
behaviour is tested on its own terms (output at input size, finite) and against HF on the square case it
reduces to.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import vitkit
from vitkit.weights import load_pretrained, save_pretrained

transformers = pytest.importorskip("transformers")
warnings.filterwarnings("ignore", category=UserWarning)

TINY = dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64, image_size=64,
            patch_size=16, backbone_out_indices=[0, 1, 2, 3], neck_hidden_sizes=[8, 16, 32, 32],
            fusion_hidden_size=16, num_labels=3)
BIT = dict(model_type="bit", num_channels=3, embedding_size=16, hidden_sizes=[32, 64, 128], depths=[1, 1, 1],
           num_groups=4, layer_type="bottleneck", global_padding="same", embedding_dynamic_padding=True,
           out_features=["stage1", "stage2", "stage3"])
HYBRID = dict(TINY, is_hybrid=True, backbone_config=BIT, backbone_out_indices=[0, 1, 2, 3],
              neck_hidden_sizes=[32, 64, 32, 32], reassemble_factors=[1, 1, 1, 0.5],
              backbone_featmap_shape=[1, 128, 4, 4])


def _randomise(model: torch.nn.Module) -> None:
    """Weights far from HF's near-zero init, so outputs vary across pixels and a wrong mapping shows."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim > 1:  # unit-gain weights (std 1/sqrt(fan-in)) keep activations O(1) through every layer
                fan_in = p[0].numel() if "resize" not in name else p.shape[0] * p[0, 0].numel()
                p.copy_(torch.randn(p.shape, generator=g) / fan_in ** 0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1 + (1.0 if "norm" in name else 0.0))
        for name, b in model.named_buffers():
            if "running_var" in name:
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)
            elif "running_mean" in name:
                b.copy_(torch.randn(b.shape, generator=g) * 0.1)


def _hf_model(cls_name: str, tmp_path, **config):
    cfg = transformers.DPTConfig(**config)
    torch.manual_seed(0)
    model = getattr(transformers, cls_name)(cfg).eval()
    _randomise(model)
    model.save_pretrained(tmp_path / "hf")
    return model


def _hf_out(model, images):
    with torch.no_grad():
        out = model(pixel_values=images)
    return out.predicted_depth if hasattr(out, "predicted_depth") else out.logits


CASES = [
    ("DPTForDepthEstimation", TINY),
    ("DPTForDepthEstimation", dict(TINY, readout_type="add", add_projection=True, fusion_hidden_size=256)),
    ("DPTForSemanticSegmentation", dict(TINY, readout_type="ignore", use_batch_norm_in_fusion_residual=True)),
    ("DPTForSemanticSegmentation", TINY),
    ("DPTForDepthEstimation", HYBRID),
    ("DPTForSemanticSegmentation", HYBRID),
]


@pytest.mark.parametrize("cls_name,config", CASES,
                         ids=["depth", "depth-add-proj", "seg-ignore-bn", "seg", "hybrid-depth",
                              "hybrid-seg"])
def test_dpt_parity_with_hf(cls_name, config, tmp_path):
    hf = _hf_model(cls_name, tmp_path, **config)
    ours = load_pretrained(tmp_path / "hf").eval()
    assert isinstance(ours, vitkit.models.dpt.DPT)
    images = torch.randn(2, 3, 64, 64)
    ref = _hf_out(hf, images)
    with torch.no_grad():
        out = ours(images)
    assert out.shape == ref.shape
    assert ref.std() > 1e-2  # a meaningful comparison, not two near-constant maps
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    # export back to HF and reload there: same outputs
    save_pretrained(ours, tmp_path / "back", format="hf")
    back = getattr(transformers, cls_name).from_pretrained(tmp_path / "back").eval()
    torch.testing.assert_close(_hf_out(back, images), ref, atol=1e-4, rtol=1e-4)


def test_non_square_input_on_its_own_terms(tmp_path):
    hf = _hf_model("DPTForDepthEstimation", tmp_path, **TINY)
    ours = load_pretrained(tmp_path / "hf").eval()
    with torch.no_grad():
        for h, w in [(48, 80), (112, 48), (80, 48)]:  # (80, 48): odd 5×3 grid
            depth = ours(torch.randn(1, 3, h, w))
            assert depth.shape == (1, h, w) and torch.isfinite(depth).all() and (depth >= 0).all()
        square = torch.randn(1, 3, 96, 96)  # the square case it reduces to (another size than trained)
        torch.testing.assert_close(ours(square), _hf_out(hf, square), atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="multiples of the patch"):
        ours(torch.randn(1, 3, 50, 64))
