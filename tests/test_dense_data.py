"""Dense data: procedural scenes (exact geometry, determinism, texture), folder format, joint augmentation,
the Middlebury motorcycle with its holes, the seeded loader."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vitkit.data import ImageLoader
from vitkit.data.dense import (
    DenseFolder,
    DenseTransform,
    ShapesDense,
    load_motorcycle,
    read_depth,
)
from vitkit.data.shapes import SHAPE_CLASSES, _box, _plane, _sphere, render_scene
from vitkit.objectives.depth import ssi_loss, valid_mask


def test_ray_casting_is_exact_on_known_geometry():
    d = np.array([[[0.0, 0.0, 1.0], [0.5, 0.0, 1.0]]])  # (1, 2, 3), d_z = 1 so t is the depth
    t, n = _sphere(d, np.array([0.0, 0.0, 5.0]), 1.0)
    assert t[0, 0] == pytest.approx(4.0) and np.allclose(n[0, 0], [0, 0, -1])
    assert _plane(d, np.array([0.0, 0.0, 1.0]), 7.0)[0].tolist() == [7.0, 7.0]
    t, n = _box(d, np.array([0.0, 0.0, 6.0]), np.array([1.0, 1.0, 1.0]), 0.0)
    assert t[0, 0] == pytest.approx(5.0) and np.allclose(n[0, 0], [0, 0, -1])
    t, _ = _box(d, np.array([0.0, 0.0, 6.0]), np.array([1.0, 1.0, 1.0]), np.pi / 4)  # edge-on: √2 closer
    assert t[0, 0] == pytest.approx(6.0 - np.sqrt(2.0))


def test_scenes_are_deterministic_labelled_and_textured():
    a, b = render_scene((3, 1), 48), render_scene((3, 1), 48)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], render_scene((3, 2), 48)[0])
    data = ShapesDense(12, 48, seed=0)
    assert len(data) == 12 and data.class_names == SHAPE_CLASSES
    depth, labels, images = data.tensors["depth"], data.tensors["labels"], data.tensors["images"]
    assert torch.isfinite(depth).all() and depth.min() > 0.5 and data.tensors["valid"].all()
    assert set(labels.unique().tolist()) == {0, 1, 2, 3}
    # depth is not readable from brightness: weak correlation over all pixels
    brightness = images.float().mean(1).flatten()
    corr = np.corrcoef(brightness.numpy(), (1 / depth).flatten().numpy())[0, 1]
    assert abs(corr) < 0.5
    # the floor recedes: in every image its depth grows towards the horizon (upwards)
    for i in range(len(data)):
        rows = [depth[i, r][labels[i, r] == 1] for r in (47, 40)]
        if all(len(r) for r in rows):
            assert rows[0].mean() < rows[1].mean()


def test_dense_folder_reads_depth_pngs_npy_and_masks(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "depth").mkdir()
    (tmp_path / "masks").mkdir()
    for i in range(2):
        Image.fromarray(np.full((6, 8, 3), 40 * i, np.uint8)).save(tmp_path / "images" / f"s{i}.png")
        Image.fromarray(np.full((6, 8), i + 1, np.uint8), mode="L").save(tmp_path / "masks" / f"s{i}.png")
    mm = np.full((6, 8), 1500, np.uint16)
    mm[0, 0] = 0  # missing
    Image.fromarray(mm).save(tmp_path / "depth" / "s0.png")
    np.save(tmp_path / "depth" / "s1.npy", np.where(np.eye(6, 8) > 0, np.inf, 2.0).astype(np.float32))
    depth = DenseFolder(tmp_path, "depth", depth_scale=0.001)
    assert depth.tensors["depth"][0, 1, 1].item() == pytest.approx(1.5)
    assert not depth.tensors["valid"][0, 0, 0] and depth.tensors["valid"][0].sum() == 47
    assert depth.tensors["valid"][1].sum() == 48 - 6  # inf on the diagonal is missing
    masks = DenseFolder(tmp_path, "segment", size=(12, 16))
    assert masks.tensors["images"].shape == (2, 3, 12, 16)
    assert masks.tensors["labels"][1].unique().tolist() == [2]
    (tmp_path / "images" / "orphan.png").write_bytes((tmp_path / "images" / "s0.png").read_bytes())
    with pytest.raises(FileNotFoundError, match="no target"):
        DenseFolder(tmp_path, "segment")
    assert read_depth(tmp_path / "depth" / "s1.npy")[1].sum() == 42


def test_joint_crop_and_flip_keep_image_and_targets_aligned():
    n, h, w = 6, 10, 12
    pattern = torch.arange(h * w, dtype=torch.float32).reshape(1, h, w).expand(n, h, w)
    batch = {"images": (pattern % 251).to(torch.uint8)[:, None].expand(n, 3, h, w).clone(),
             "depth": pattern + 1, "valid": torch.ones(n, h, w, dtype=torch.bool), "labels": pattern.long()}
    transform = DenseTransform((0.0,) * 3, (1 / 255,) * 3, crop=(7, 5), flip=True)
    out = transform(batch, torch.Generator().manual_seed(1))
    assert out["images"].shape == (n, 3, 7, 5) and out["depth"].shape == (n, 7, 5)
    # mean 0, std 1/255 turns the images back into raw values: they must match the labels pixel for pixel
    torch.testing.assert_close(out["images"][:, 0], (out["labels"] % 251).float(), atol=1e-3, rtol=0)
    assert torch.equal(out["depth"], out["labels"].float() + 1)
    flipped = (out["labels"][:, 0, 1] < out["labels"][:, 0, 0])
    assert flipped.any() and (~flipped).any()  # some samples flipped, some not


def test_motorcycle_real_pair_with_inf_holes():
    pytest.importorskip("skimage")
    sample = load_motorcycle(size=(120, 176))
    depth, valid = sample["depth"], sample["valid"]
    assert sample["images"].shape == (1, 3, 120, 176) and sample["images"].dtype == torch.uint8
    assert 0.02 < (~valid).float().mean() < 0.2  # the +inf disparity holes
    assert (depth[~valid] == 0).all() and (depth[valid] > 0).all()
    mask = valid_mask(depth, valid)
    disparity = torch.where(mask, 1 / depth.clamp_min(1e-6), torch.zeros_like(depth))
    assert ssi_loss(3 * disparity + 0.5, disparity, mask).item() < 1e-4  # exact up to scale and shift
    noisy = ssi_loss(disparity + torch.randn_like(disparity) * disparity.std(), disparity, mask)
    assert torch.isfinite(noisy) and noisy.item() > 0.1


def test_dense_loader_is_seeded_and_yields_dicts():
    data = ShapesDense(10, 32, seed=0)
    loader = ImageLoader(data, 4, shuffle=True, drop_last=True, seed=3)
    first = [b["labels"] for b in loader.epoch(0)]
    again = [b["labels"] for b in loader.epoch(0)]
    assert len(first) == 2 and all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    resumed = list(loader.epoch(0, start_batch=1))
    assert torch.equal(resumed[0]["labels"], first[1])
