"""timm-layout checkpoints of the ViT family (DeiT distilled, DeiT III, DINOv2 with and without registers,
QK-norm, packed and unpacked SwiGLU) load to the same numbers; the prefix tokens are detected, never mistaken
for a non-square grid.

The timm state dicts are written from a random vitkit model following timm's documented key names
(``vision_transformer.py`` / ``deit.py``): ``reg_token``, ``dist_token``, ``head_dist``, ``ls1.gamma``,
``attn.q_norm``, ``mlp.fc1`` packed or ``mlp.fc1_g`` / ``mlp.fc1_x``; ``pos_embed`` with positions for all
prefix tokens, or for none (``no_embed_class``: prefix positions folded into the tokens).
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from test_convert_vit import assert_close, jitter  # noqa: E402

import vitkit

TINY = dict(image_size=(32, 32), patch_size=8, dim=32, depth=2, num_heads=2, num_classes=5)


def to_timm(model, embed_class: bool = True, unpack_swiglu: bool = False,
            register_positions: bool = False) -> dict[str, torch.Tensor]:
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    pos = sd.pop("pos_embed.weight")
    prefix = [sd.pop(k) for k in ("cls_pos_embed", "dist_pos_embed") if k in sd]
    if embed_class:
        if register_positions and "reg_token" in sd:  # timm's default: every prefix token has a position
            reg_pos = torch.randn_like(sd["reg_token"])
            sd["reg_token"] -= reg_pos
            prefix.append(reg_pos)
        sd["pos_embed"] = torch.cat([*prefix, pos], dim=1)  # (1, P' + N, D)
    else:  # no_embed_class: prefix positions folded into the tokens, pos_embed (1, N, D)
        for name, p in zip(("cls_token", "dist_token"), prefix, strict=False):
            sd[name] += p
        sd["pos_embed"] = pos
    if unpack_swiglu:
        for key in [k for k in sd if ".mlp.fc1." in k]:
            sd[key.replace("fc1", "fc1_g")], sd[key.replace("fc1", "fc1_x")] = sd.pop(key).chunk(2)
    return sd


CASES = {
    # name: (vitkit overrides, to_timm options)
    "deit-distilled": (dict(distilled=True), {}),
    "deit3-no-embed-class": (dict(layer_scale_init=1e-6), dict(embed_class=False)),
    "dinov2": (dict(layer_scale_init=1e-5, patch_size=4), {}),
    "dinov2-reg-no-embed-class": (dict(layer_scale_init=1e-5, num_register_tokens=4),
                                  dict(embed_class=False)),
    "registers-with-positions": (dict(num_register_tokens=2), dict(register_positions=True)),
    "swiglu-packed-qknorm": (dict(mlp="swiglu", qk_norm=True, num_classes=0), {}),
    "swiglu-unpacked": (dict(mlp="swiglu", mlp_hidden_dim=48), dict(unpack_swiglu=True)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_timm_family_layouts_load_to_same_numbers(tmp_path, case):
    overrides, options = CASES[case]
    model = jitter(vitkit.create_model("vit_tiny_patch16_224", **{**TINY, **overrides}))
    save_file(to_timm(model, **options), str(tmp_path / "model.safetensors"))
    loaded, report = vitkit.load_checkpoint(tmp_path / "model.safetensors", num_heads=2)
    assert report.format == "timm" and report.clean, str(report)
    cfg = loaded.config
    assert (cfg.num_prefix_tokens, cfg.image_size, cfg.mlp, cfg.qk_norm, cfg.distilled) == (
        model.num_prefix_tokens, (32, 32), model.config.mlp, model.config.qk_norm, model.config.distilled)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert_close(loaded(images), model(images), "output")
        assert_close(loaded.forward_features(images), model.forward_features(images), "features")


def test_timm_dinov2_by_architecture_name_and_no_square_message(tmp_path):
    model = jitter(vitkit.create_model("dinov2_vits14_reg", dim=32, depth=2, num_heads=2,
                                       image_size=(28, 28)))
    save_file(to_timm(model, embed_class=False), str(tmp_path / "reg.safetensors"))
    loaded = vitkit.load_pretrained(tmp_path / "reg.safetensors", model="vit_small_patch14_reg4_dinov2",
                                    dim=32, depth=2, num_heads=2, image_size=(28, 28))
    images = torch.randn(1, 3, 42, 28)
    with torch.no_grad():
        assert_close(loaded(images), model(images), "output at another grid")
    sd = to_timm(model, embed_class=False)
    sd["pos_embed"] = sd["pos_embed"][:, :3]  # 3 positions: no grid whatever the prefix
    save_file(sd, str(tmp_path / "odd.safetensors"))
    with pytest.raises(ValueError, match=r"5 prefix tokens \(\[CLS\], \[DIST\], registers\).*image_size"):
        vitkit.load_pretrained(tmp_path / "odd.safetensors", num_heads=2)


def test_timm_dinov2_giant_shapes_take_heads_from_the_table(caplog):
    from vitkit.convert.timm_vit import infer_vit_config

    dim, hidden = 1536, 4096  # DINOv2 ViT-g/14: SwiGLUPacked fc1 (2·4096, 1536)
    shapes = {"patch_embed.proj.weight": (dim, 3, 14, 14), "pos_embed": (1, 1 + 37 * 37, dim),
              "cls_token": (1, 1, dim), "blocks.0.attn.qkv.weight": (3 * dim, dim),
              "blocks.0.mlp.fc1.weight": (2 * hidden, dim), "blocks.0.mlp.fc2.weight": (dim, hidden),
              "blocks.0.ls1.gamma": (dim,), "blocks.39.norm1.weight": (dim,)}
    sd = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    with caplog.at_level("INFO", logger="vitkit.convert.timm_vit"):
        cfg = infer_vit_config(sd, {})
    assert (cfg.num_heads, cfg.mlp, cfg.mlp_width, cfg.image_size) == (24, "swiglu", 4096, (518, 518))
    assert "DINOv2 ViT-g/14" in caplog.text


def test_timm_qk_norm_layer_scale_registers_match_a_plain_torch_oracle(tmp_path):
    """Independent of vitkit's modules: timm's Block math with q_norm / k_norm (LayerNorm over each head's d
    channels, before the scaling), LayerScale γ on both branches and 2 registers after [CLS] without
    positions (``no_embed_class``), written with random values under timm's key names."""
    from test_oracle_layouts import layer_norm, linear, normal, timm_vit_weights

    torch.manual_seed(0)
    dim, heads, depth = 32, 4, 2
    sd = timm_vit_weights(dim, depth, 64, grid=4)  # patch 8, 32×32 images, [CLS], 5 classes
    sd["pos_embed"] = sd["pos_embed"][:, 1:]  # no_embed_class: positions for the patches only
    sd["reg_token"] = normal(1, 2, dim, std=0.5)
    for i in range(depth):
        for ls in ("ls1", "ls2"):
            sd[f"blocks.{i}.{ls}.gamma"] = normal(dim, std=0.5)
        for qk in ("q_norm", "k_norm"):
            sd[f"blocks.{i}.attn.{qk}.weight"] = 1 + normal(dim // heads, std=0.1)
            sd[f"blocks.{i}.attn.{qk}.bias"] = normal(dim // heads, std=0.1)

    def reference(images):
        x = torch.nn.functional.conv2d(images, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"],
                                       stride=8).flatten(2).transpose(1, 2) + sd["pos_embed"]
        x = torch.cat([sd["cls_token"].expand(len(x), -1, -1), sd["reg_token"].expand(len(x), -1, -1), x], 1)
        B, T, D = x.shape
        for i in range(depth):
            b = f"blocks.{i}"
            qkv = linear(layer_norm(x, sd, f"{b}.norm1"), sd, f"{b}.attn.qkv")
            qkv = qkv.reshape(B, T, 3, heads, D // heads)
            q, k, v = qkv.permute(2, 0, 3, 1, 4)  # (B, H, T, d) each
            q, k = layer_norm(q, sd, f"{b}.attn.q_norm"), layer_norm(k, sd, f"{b}.attn.k_norm")
            attn = ((q * (D // heads) ** -0.5) @ k.transpose(-2, -1)).softmax(-1) @ v
            x = x + sd[f"{b}.ls1.gamma"] * linear(attn.transpose(1, 2).reshape(B, T, D), sd, f"{b}.attn.proj")
            hidden = torch.nn.functional.gelu(linear(layer_norm(x, sd, f"{b}.norm2"), sd, f"{b}.mlp.fc1"))
            x = x + sd[f"{b}.ls2.gamma"] * linear(hidden, sd, f"{b}.mlp.fc2")
        return linear(layer_norm(x, sd, "norm")[:, 0], sd, "head")

    save_file(sd, str(tmp_path / "m.safetensors"))
    model = vitkit.load_pretrained(tmp_path / "m.safetensors", num_heads=heads)
    assert model.config.qk_norm and model.num_prefix_tokens == 3
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert_close(model(images), reference(images), "logits")
