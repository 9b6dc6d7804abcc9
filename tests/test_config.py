"""Typed configs: overrides with type checks, nested/dotted keys, JSON round trips, --set parsing."""

from __future__ import annotations

import json

import pytest

from vitkit import PreprocessConfig, ViTConfig, get_model_config, replace_config
from vitkit.config import config_from_dict, config_to_dict, parse_set_items
from vitkit.models.registry import config_from_json_dict, config_to_json_dict


def test_replace_config_copies_and_checks_types():
    cfg = ViTConfig()
    new = replace_config(cfg, {"dim": 64}, depth=3)
    assert (new.dim, new.depth) == (64, 3) and (cfg.dim, cfg.depth) == (768, 12)
    assert replace_config(cfg, mlp_ratio=2).mlp_ratio == 2.0
    assert isinstance(replace_config(cfg, eps=1).eps, float)
    assert replace_config(cfg, image_size=[64, 48]).image_size == (64, 48)
    with pytest.raises(TypeError, match="ViTConfig.depth"):
        replace_config(cfg, depth=2.5)
    with pytest.raises(TypeError, match="depth"):
        replace_config(cfg, depth=True)
    with pytest.raises(TypeError, match="pool"):
        replace_config(cfg, pool="max")
    with pytest.raises(TypeError, match="2 items"):
        replace_config(cfg, image_size=(1, 2, 3))


def test_unknown_fields_list_close_matches():
    with pytest.raises(KeyError, match="did you mean num_heads"):
        replace_config(ViTConfig(), num_head=4)


def test_nested_and_dotted_keys_merge():
    cfg = replace_config(ViTConfig(), {"preprocess.mean": [0.1, 0.2, 0.3], "preprocess": {"crop_pct": 0.9}})
    assert cfg.preprocess.mean == (0.1, 0.2, 0.3) and cfg.preprocess.crop_pct == 0.9
    assert cfg.preprocess.std == (0.5, 0.5, 0.5)
    nested = {"crop_pct": 0.8}
    cfg = replace_config(ViTConfig(), {"preprocess": nested, "preprocess.interpolation": "bilinear"})
    assert (cfg.preprocess.crop_pct, cfg.preprocess.interpolation) == (0.8, "bilinear")
    assert nested == {"crop_pct": 0.8}  # the caller's mapping is not modified
    with pytest.raises(TypeError, match="whole value"):
        replace_config(ViTConfig(), {"preprocess": PreprocessConfig(), "preprocess.mean": (0.0,)})


def test_optional_and_nested_dataclass_fields():
    cfg = replace_config(ViTConfig(), representation_size=None, fc_norm=True)
    assert cfg.representation_size is None and cfg.use_fc_norm
    hybrid = get_model_config("vit_base_r50_s16_384")
    assert hybrid.backbone is not None
    assert replace_config(hybrid, {"backbone.layers": [1, 1, 1]}).backbone.layers == (1, 1, 1)


@pytest.mark.parametrize("name", ["vit_base_patch16_384", "vit_tiny_patch4_28", "vit_base_r50_s16_384"])
def test_json_round_trip(name):
    cfg = get_model_config(name, preprocess={"label_names": ("a", "b")})
    data = json.loads(json.dumps(config_to_json_dict(cfg)))
    assert data["model_type"] == "vit"
    assert config_from_json_dict(data) == cfg
    assert config_from_dict(ViTConfig, config_to_dict(cfg)) == cfg


def test_json_with_unknown_model_type_is_refused():
    with pytest.raises(ValueError, match="known: .*vit"):
        config_from_json_dict({"model_type": "nope"})


def test_parse_set_items_reads_yaml_scalars():
    assert parse_set_items(["eps=-2E+3", "name=e5"]) == {"eps": -2000.0, "name": "e5"}
    assert parse_set_items(["dim=64", "eps=1e-5", "qkv_bias=false", "image_size=[32, 48]", "pool=avg"]) == {
        "dim": 64, "eps": 1e-5, "qkv_bias": False, "image_size": [32, 48], "pool": "avg"}
    with pytest.raises(ValueError, match="key=value"):
        parse_set_items(["dim"])


def test_int_image_size_is_a_square():
    assert ViTConfig(image_size=64).image_size == (64, 64)
    assert replace_config(ViTConfig(), image_size=384).image_size == (384, 384)
    with pytest.raises(TypeError, match="image_size"):
        replace_config(ViTConfig(), image_size=True)
    with pytest.raises(ValueError, match="pool='cls' needs class_token"):
        ViTConfig(class_token=False)
