"""Weight interop: HF transformers ViT (both directions), timm-layout and JAX .npz checkpoints → same numbers.

HF is the oracle: tiny random models built from configs and saved locally (no downloads). timm and JAX
checkpoints are synthesised from a random vitkit model following those formats' documented key layouts.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import vitkit
from vitkit.convert.timm_vit import infer_vit_config
from vitkit.errors import UsageError
from vitkit.viz.record import record_attention

transformers = pytest.importorskip("transformers")

ATOL = 1e-4


def jitter(module: torch.nn.Module, std: float = 0.2) -> torch.nn.Module:
    """Give every parameter O(0.1) random values so parity checks compare non-trivial numbers."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            base = 1.0 if ("norm" in name and name.endswith("weight")) else 0.0
            p.copy_(base + std * torch.randn_like(p))
    return module.eval()


def hf_model(cls, save_dir, **config):
    config.setdefault("attn_implementation", "eager")
    model = jitter(cls(transformers.ViTConfig(**config)))
    model.save_pretrained(save_dir)
    return model


def vitkit_activations(model, images):
    """(hidden states as HF lays them out: embeddings + after every block, per-layer attention weights)."""
    with torch.no_grad(), record_attention(model) as rec:
        hidden = [model.prepare_tokens(images)] + model.forward_intermediates(images)
    return hidden, rec.weights


def assert_close(a, b, what):
    err = (a - b).abs().max().item()
    assert a.shape == b.shape, f"{what}: shapes {tuple(a.shape)} vs {tuple(b.shape)}"
    assert err < ATOL, f"{what}: max abs error {err}"


HF_CASES = {
    # name: (HF class, config, input (H, W), interpolate_pos_encoding)
    "cls-32": ("ViTForImageClassification",
               dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                    image_size=32, patch_size=8, num_labels=5), (32, 32), False),
    "cls-224x160-interp": ("ViTForImageClassification",
                           dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=128, image_size=224, patch_size=16, num_labels=3,
                                layer_norm_eps=1e-6),
                           (224, 160), True),
    "model-pooler-gray-noqkvbias": ("ViTModel",
                                    dict(hidden_size=48, num_hidden_layers=3, num_attention_heads=3,
                                         intermediate_size=96, image_size=28, patch_size=7, num_channels=1,
                                         qkv_bias=False, layer_norm_eps=1e-5, pooler_output_size=24),
                                    (28, 28), False),
    "model-nonsquare": ("ViTModel",
                        dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                             image_size=[32, 48], patch_size=8), (32, 48), False),
}


@pytest.mark.parametrize("case", list(HF_CASES))
def test_hf_to_vitkit_parity(case, tmp_path):
    cls_name, config, (h, w), interp = HF_CASES[case]
    hf = hf_model(getattr(transformers, cls_name), tmp_path, **config)
    model, report = vitkit.load_checkpoint(tmp_path)
    assert report.clean and report.format == "hf:vit", str(report)
    assert model.config.eps == config.get("layer_norm_eps", 1e-12)
    images = torch.randn(2, config.get("num_channels", 3), h, w)
    with torch.no_grad():
        out = hf(images, output_hidden_states=True, output_attentions=True, interpolate_pos_encoding=interp)
    hidden, attentions = vitkit_activations(model.eval(), images)
    assert len(hidden) == len(out.hidden_states) and len(attentions) == len(out.attentions)
    for i, (ours, theirs) in enumerate(zip(hidden, out.hidden_states, strict=False)):
        assert_close(ours, theirs, f"hidden state {i}")
    for i, (ours, theirs) in enumerate(zip(attentions, out.attentions, strict=False)):
        assert_close(ours, theirs, f"attention weights of layer {i}")
    with torch.no_grad():
        if cls_name == "ViTForImageClassification":
            assert_close(model(images), out.logits, "logits")
        else:
            assert_close(model.forward_features(images), out.last_hidden_state, "last_hidden_state")
            if out.pooler_output is not None:
                assert_close(model(images), out.pooler_output, "pooler_output (as pre-logits)")


def test_hf_vitmodel_gets_a_new_head_on_request(tmp_path):
    hf_model(transformers.ViTModel, tmp_path, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
             intermediate_size=64, image_size=32, patch_size=16)
    # dropping the pooler is explicit: strict loading names its keys
    with pytest.raises(ValueError, match="unexpected: +pre_logits.fc.weight"):
        vitkit.load_pretrained(tmp_path, representation_size=None)
    dropped = vitkit.load_pretrained(tmp_path, representation_size=None, strict=False)
    assert dropped.config.representation_size is None
    model, report = vitkit.load_checkpoint(tmp_path, num_classes=4)
    assert sorted(report.reinitialised) == ["head.bias", "head.weight"] and not report.missing
    assert model.config.representation_size == 32 and model(torch.randn(1, 3, 32, 32)).shape == (1, 4)


def test_hf_labels_and_preprocessing_are_mapped(tmp_path):
    hf_model(transformers.ViTForImageClassification, tmp_path, hidden_size=32, num_hidden_layers=1,
             num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=16,
             id2label={0: "cat", 1: "dog"}, label2id={"cat": 0, "dog": 1})
    transformers.ViTImageProcessor(image_mean=[0.1, 0.2, 0.3], image_std=[0.4, 0.5, 0.6],
                                   resample=2).save_pretrained(tmp_path)
    cfg = vitkit.load_pretrained(tmp_path).config
    assert cfg.preprocess.label_names == ("cat", "dog")
    assert cfg.preprocess.mean == (0.1, 0.2, 0.3) and cfg.preprocess.std == (0.4, 0.5, 0.6)
    assert cfg.preprocess.interpolation == "bilinear"


EXPORT_CASES = {
    "classifier": dict(num_classes=7, preprocess={"label_names": tuple("abcdefg")}),
    "pooler": dict(num_classes=0, representation_size=16),
    "bare-nonsquare": dict(num_classes=0, image_size=(32, 48), qkv_bias=False, eps=1e-12),
}


@pytest.mark.parametrize("case", list(EXPORT_CASES))
def test_vitkit_to_hf_parity(case, tmp_path):
    overrides = {"image_size": (32, 32), **EXPORT_CASES[case]}
    model = jitter(vitkit.create_model("vit_tiny_patch16_224", dim=32, depth=2, num_heads=2, patch_size=8,
                                       **overrides))
    vitkit.save_pretrained(model, tmp_path, format="hf")
    cls = transformers.ViTForImageClassification if model.config.num_classes else transformers.ViTModel
    hf = cls.from_pretrained(tmp_path, attn_implementation="eager").eval()
    images = torch.randn(2, 3, *model.config.image_size)
    with torch.no_grad():
        out = hf(images, output_hidden_states=True, output_attentions=True)
        if model.config.num_classes:
            assert_close(model(images), out.logits, "logits")
            assert hf.config.id2label[6] == "g"
        else:
            assert_close(model.forward_features(images), out.last_hidden_state, "last_hidden_state")
        if model.config.representation_size:
            assert_close(model(images), out.pooler_output, "pooler_output")
    hidden, attentions = vitkit_activations(model, images)
    for ours, theirs in zip(hidden + attentions, out.hidden_states + out.attentions, strict=False):
        assert_close(ours, theirs, "hidden state / attention")
    assert (tmp_path / "preprocessor_config.json").is_file()
    again = vitkit.load_pretrained(tmp_path)  # the HF directory loads back into vitkit
    with torch.no_grad():
        assert_close(again(images), model(images), "vitkit → HF → vitkit")


@pytest.mark.parametrize("overrides, problem", [
    (dict(pool="avg"), "average pooling"),
    (dict(fc_norm=True), "fc_norm"),
    (dict(representation_size=16), "pre-logits"),
    (dict(pos_embed="sincos"), "sin-cos"),
    (dict(qk_norm=True), "QK-norm"),
])
def test_hf_export_refuses_what_hf_cannot_express(tmp_path, overrides, problem):
    model = vitkit.create_model("vit_tiny_patch4_32", dim=32, depth=1, num_heads=2, **overrides)
    with pytest.raises(ValueError, match=problem):
        vitkit.save_pretrained(model, tmp_path, format="hf")
    assert not (tmp_path / "model.safetensors").exists()


# ---- timm layout -------------------------------------------------------------------------------------------
def to_timm(model) -> dict[str, torch.Tensor]:
    """timm's ViT state dict for a vitkit model: pos_embed (1, P + N, D) with the [CLS] position first."""
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    pos = sd.pop("pos_embed.weight")
    cls_pos = sd.pop("cls_pos_embed", None)
    sd["pos_embed"] = pos if cls_pos is None else torch.cat([cls_pos, pos], dim=1)
    return sd


TIMM_CASES = {
    "cls": dict(),
    "gap-fcnorm-no-cls": dict(class_token=False, pool="avg"),
    "prelogits-noqkvbias": dict(representation_size=24, qkv_bias=False),
}


@pytest.mark.parametrize("suffix", [".safetensors", ".pth", ".bin"])
@pytest.mark.parametrize("case", list(TIMM_CASES))
def test_timm_layout_loads_to_same_numbers(tmp_path, case, suffix):
    model = jitter(vitkit.create_model("vit_tiny_patch4_32", dim=32, depth=2, num_heads=2,
                                       **TIMM_CASES[case]))
    path = tmp_path / f"vit{suffix}"
    sd = to_timm(model)
    save_file(sd, str(path)) if suffix == ".safetensors" else torch.save(sd, path)
    loaded, report = vitkit.load_checkpoint(path, num_heads=2)
    assert report.format == "timm" and report.clean, str(report)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert_close(loaded(images), model(images), "logits")
        assert_close(loaded.forward_features(images), model.forward_features(images), "features")


def test_timm_no_embed_class_and_model_name(tmp_path):
    model = jitter(vitkit.create_model("vit_tiny_patch4_32", dim=32, depth=2, num_heads=2))
    with torch.no_grad():
        model.cls_pos_embed.zero_()  # timm no_embed_class: [CLS] gets no position
    sd = to_timm(model)
    sd["pos_embed"] = sd["pos_embed"][:, 1:]
    torch.save({"model": sd, "epoch": 3}, tmp_path / "ckpt.pth")  # wrapped, as training scripts save
    loaded = vitkit.load_pretrained(tmp_path / "ckpt.pth", model="vit_tiny_patch4_32", dim=32, depth=2,
                                    num_heads=2)
    images = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert_close(loaded(images), model(images), "logits")


def timm_shapes(dim: int, depth: int, mlp_dim: int) -> dict[str, torch.Tensor]:
    """A timm ViT state dict's shapes (on the meta device: no memory), patch 16 at 224."""
    shapes = {"patch_embed.proj.weight": (dim, 3, 16, 16), "pos_embed": (1, 197, dim),
              "cls_token": (1, 1, dim), "head.weight": (1000, dim),
              "blocks.0.attn.qkv.weight": (3 * dim, dim), "blocks.0.attn.qkv.bias": (3 * dim,),
              "blocks.0.mlp.fc1.weight": (mlp_dim, dim), f"blocks.{depth - 1}.norm1.weight": (dim,)}
    return {k: torch.empty(s, device="meta") for k, s in shapes.items()}


def test_timm_shape_inference_takes_heads_only_from_a_standard_size(caplog):
    with caplog.at_level("INFO", logger="vitkit.convert.timm_vit"):
        cfg = infer_vit_config(timm_shapes(192, 12, 768), {})
    assert (cfg.dim, cfg.depth, cfg.num_heads, cfg.patch_size, cfg.image_size) == (192, 12, 3, 16, (224, 224))
    assert cfg.mlp_ratio == 4.0 and cfg.num_classes == 1000 and cfg.pool == "cls"
    assert "3 attention heads, from ViT-Ti's size" in caplog.text and "pass num_heads=N" in caplog.text
    assert infer_vit_config(timm_shapes(1024, 24, 4096), {}).num_heads == 16  # ViT-L
    # width, depth or MLP width off the table: a guess could compute another function, so it is refused
    for shape in ((256, 12, 1024), (192, 6, 768), (192, 12, 384)):
        with pytest.raises(UsageError, match=r"not stored in the weights.*pass num_heads=N \(or model="):
            infer_vit_config(timm_shapes(*shape), {})
        assert infer_vit_config(timm_shapes(*shape), {"num_heads": 4}).num_heads == 4


# ---- JAX .npz (google-research/vision_transformer) ---------------------------------------------------------
def to_jax(model, prefix: str = "") -> dict[str, np.ndarray]:
    """The JAX release's arrays for a vitkit ViT: Flax kernels are (in, out), convs HWIO, heads split out."""
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    H, D = model.config.num_heads, model.config.dim
    d = D // H
    out = {
        "embedding/kernel": sd["patch_embed.proj.weight"].transpose(2, 3, 1, 0),  # OIHW → HWIO
        "embedding/bias": sd["patch_embed.proj.bias"],
        "cls": sd["cls_token"],
        "Transformer/posembed_input/pos_embedding": np.concatenate(
            [sd["cls_pos_embed"], sd["pos_embed.weight"]], axis=1),
        "Transformer/encoder_norm/scale": sd["norm.weight"], "Transformer/encoder_norm/bias": sd["norm.bias"],
        "head/kernel": sd["head.weight"].T, "head/bias": sd["head.bias"],
    }
    if "pre_logits.fc.weight" in sd:
        out["pre_logits/kernel"] = sd["pre_logits.fc.weight"].T
        out["pre_logits/bias"] = sd["pre_logits.fc.bias"]
    for i in range(model.config.depth):
        b, j = f"blocks.{i}.", f"Transformer/encoderblock_{i}/"
        a = f"{j}MultiHeadDotProductAttention_1/"
        for theirs, ours in (("LayerNorm_0", "norm1"), ("LayerNorm_2", "norm2")):
            out[f"{j}{theirs}/scale"] = sd[f"{b}{ours}.weight"]
            out[f"{j}{theirs}/bias"] = sd[f"{b}{ours}.bias"]
        for n, w, bias in zip(("query", "key", "value"), np.split(sd[f"{b}attn.qkv.weight"], 3),
                              np.split(sd[f"{b}attn.qkv.bias"], 3), strict=False):
            out[f"{a}{n}/kernel"] = w.T.reshape(D, H, d)  # (D_in, H, d)
            out[f"{a}{n}/bias"] = bias.reshape(H, d)
        out[f"{a}out/kernel"] = sd[f"{b}attn.proj.weight"].T.reshape(H, d, D)  # (H, d, D_out)
        out[f"{a}out/bias"] = sd[f"{b}attn.proj.bias"]
        for r in (0, 1):
            out[f"{j}MlpBlock_3/Dense_{r}/kernel"] = sd[f"{b}mlp.fc{r + 1}.weight"].T
            out[f"{j}MlpBlock_3/Dense_{r}/bias"] = sd[f"{b}mlp.fc{r + 1}.bias"]
    return {prefix + k: np.ascontiguousarray(v) for k, v in out.items()}


def jax_reference_logits(w: dict[str, np.ndarray], images: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """The JAX model's forward written from its arrays (Flax layouts, einsums), independent of vitkit."""
    t = {k: torch.from_numpy(v) for k, v in w.items()}
    kernel = t["embedding/kernel"]  # (p, p, C, D)
    p = kernel.shape[0]
    B, C, H, W = images.shape
    patches = images.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 3, 5, 1)  # (B, gh, gw, p, p, C)
    x = torch.einsum("bhwijc,ijcd->bhwd", patches, kernel).flatten(1, 2) + t["embedding/bias"]
    x = torch.cat([t["cls"].expand(B, -1, -1), x], dim=1) + t["Transformer/posembed_input/pos_embedding"]

    def norm(x, name):
        return F.layer_norm(x, x.shape[-1:], t[f"{name}/scale"], t[f"{name}/bias"], eps)

    i = 0
    while f"Transformer/encoderblock_{i}/LayerNorm_0/scale" in t:
        j = f"Transformer/encoderblock_{i}/"
        a = f"{j}MultiHeadDotProductAttention_1/"
        y = norm(x, f"{j}LayerNorm_0")
        q, k, v = (torch.einsum("btd,dhk->bthk", y, t[f"{a}{n}/kernel"]) + t[f"{a}{n}/bias"]
                   for n in ("query", "key", "value"))
        weights = torch.einsum("bqhk,bshk->bhqs", q, k).mul(q.shape[-1] ** -0.5).softmax(-1)
        o = torch.einsum("bhqs,bshk->bqhk", weights, v)
        x = x + torch.einsum("bqhk,hkd->bqd", o, t[f"{a}out/kernel"]) + t[f"{a}out/bias"]
        y = norm(x, f"{j}LayerNorm_2")
        y = F.gelu(y @ t[f"{j}MlpBlock_3/Dense_0/kernel"] + t[f"{j}MlpBlock_3/Dense_0/bias"])
        x = x + y @ t[f"{j}MlpBlock_3/Dense_1/kernel"] + t[f"{j}MlpBlock_3/Dense_1/bias"]
        i += 1
    pooled = norm(x, "Transformer/encoder_norm")[:, 0]
    if "pre_logits/kernel" in t:
        pooled = torch.tanh(pooled @ t["pre_logits/kernel"] + t["pre_logits/bias"])
    return pooled @ t["head/kernel"] + t["head/bias"]


@pytest.mark.parametrize("prefix, overrides", [("", {}), ("opt/target/", {"representation_size": 24})])
def test_jax_npz_loads_to_same_numbers(tmp_path, prefix, overrides):
    model = jitter(vitkit.create_model("vit_tiny_patch4_32", dim=48, depth=2, num_heads=3, **overrides))
    np.savez(tmp_path / "ViT-Ti_4.npz", **to_jax(model, prefix))
    loaded, report = vitkit.load_checkpoint(tmp_path / "ViT-Ti_4.npz")  # heads read off the query kernel
    assert report.format == "jax" and report.clean, str(report)
    assert loaded.config.num_heads == 3
    images = torch.randn(2, 3, 32, 32)
    arrays = {k[len(prefix):]: v for k, v in to_jax(model, prefix).items()}
    with torch.no_grad():
        assert_close(loaded(images), jax_reference_logits(arrays, images), "logits vs JAX-layout reference")
        assert_close(loaded(images), model(images), "logits")
    # fine-tuning at a higher resolution: the 8×8 position grid is resampled to 12×12, a new head on request
    bigger, report = vitkit.load_checkpoint(tmp_path / "ViT-Ti_4.npz", image_size=48, num_classes=4)
    assert report.resampled == ["pos_embed.weight 8×8 → 12×12"]
    assert sorted(report.reinitialised) == ["head.bias", "head.weight"]
    assert bigger(torch.randn(1, 3, 48, 48)).shape == (1, 4)


def test_hf_bin_and_sharded_directories(tmp_path):
    hf = hf_model(transformers.ViTForImageClassification, tmp_path / "hf", hidden_size=32,
                  num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32,
                  patch_size=8, num_labels=3)
    sd = hf.state_dict()
    images = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        expected = hf(images).logits
    # an older HF directory: pytorch_model.bin instead of model.safetensors
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "config.json").write_text((tmp_path / "hf" / "config.json").read_text())
    torch.save(sd, tmp_path / "bin" / "pytorch_model.bin")
    # a sharded one: model-0000i-of-00002.safetensors + model.safetensors.index.json
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "config.json").write_text((tmp_path / "hf" / "config.json").read_text())
    keys = sorted(sd)
    weight_map = {}
    for i, part in enumerate((keys[: len(keys) // 2], keys[len(keys) // 2:])):
        name = f"model-0000{i + 1}-of-00002.safetensors"
        save_file({k: sd[k].contiguous() for k in part}, str(tmp_path / "shards" / name))
        weight_map.update({k: name for k in part})
    (tmp_path / "shards" / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    for sub in ("bin", "shards"):
        with torch.no_grad():
            assert_close(vitkit.load_pretrained(tmp_path / sub)(images), expected, sub)


def test_bare_vitkit_state_dict_without_config(tmp_path):
    model = jitter(vitkit.create_model("vit_tiny_patch4_32", dim=32, depth=2, num_heads=2))
    save_file(model.state_dict(), str(tmp_path / "weights.safetensors"))
    loaded, report = vitkit.load_checkpoint(tmp_path / "weights.safetensors", num_heads=2)
    assert report.format == "vitkit" and report.clean
    images = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(images), model(images))


def test_bare_vitkit_hybrid_state_dict_without_config(tmp_path):
    backbone = {"layers": (1, 1, 1), "channels": (32, 64, 128), "stem_width": 16, "num_groups": 8}
    model = jitter(vitkit.create_model("vit_base_r50_s16_224", dim=32, depth=1, num_heads=2,
                                       image_size=(64, 64), backbone=backbone))
    save_file(model.state_dict(), str(tmp_path / "hybrid.safetensors"))
    loaded = vitkit.load_pretrained(tmp_path / "hybrid.safetensors", num_heads=2,
                                    backbone={"num_groups": 8})  # GroupNorm groups are not in the shapes
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert_close(loaded(images), model(images), "hybrid logits")
