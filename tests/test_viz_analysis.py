"""Pure attention / embedding analyses against hand-computed values."""

import math

import pytest
import torch

from vitkit.viz.analysis import (
    attention_rollout,
    filter_principal_components,
    fuse_heads,
    mean_attention_distance,
    patch_distances,
    patch_map,
    position_similarity,
)


def test_rollout_two_layers_hand_computed():
    # Two tokens, one head. A_l = (W_l + I) / 2 since rows of W sum to 1.
    w1 = torch.tensor([[0.5, 0.5], [0.0, 1.0]])
    w2 = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    a1 = torch.tensor([[0.75, 0.25], [0.0, 1.0]])
    a2 = torch.tensor([[1.0, 0.0], [0.25, 0.75]])
    expected = a2 @ a1  # [[0.75, 0.25], [0.1875, 0.8125]]
    torch.testing.assert_close(expected, torch.tensor([[0.75, 0.25], [0.1875, 0.8125]]))
    out = attention_rollout([w1[None, None], w2[None, None]])
    torch.testing.assert_close(out[0], expected)


def test_rollout_head_fusion_and_discard():
    # Heads [[0.5,0.5],[0,1]] and [[1,0],[1,0]]: max → [[1,.5],[1,1]], min → [[.5,0],[0,0]].
    w = torch.tensor([[[0.5, 0.5], [0.0, 1.0]], [[1.0, 0.0], [1.0, 0.0]]])[None]  # (1, 2, 2, 2)
    # max: ([[1,.5],[1,1]] + I) → [[2,.5],[1,2]] / rowsum → [[.8,.2],[1/3,2/3]]
    torch.testing.assert_close(attention_rollout([w], "max")[0], torch.tensor([[0.8, 0.2], [1 / 3, 2 / 3]]))
    # min: [[1.5,0],[0,1]] → identity
    torch.testing.assert_close(attention_rollout([w], "min")[0], torch.eye(2))
    # mean [[.75,.25],[.5,.5]]; discard 1/4 of 4 entries drops the lowest (0.25) → [[1.75,0],[.5,1.5]]
    torch.testing.assert_close(attention_rollout([w], "mean", discard_ratio=0.25)[0],
                               torch.tensor([[1.0, 0.0], [0.25, 0.75]]))
    with pytest.raises(KeyError, match="mean, max, min"):
        fuse_heads(w, "median")
    with pytest.raises(ValueError, match="discard_ratio"):
        attention_rollout([w], discard_ratio=1.0)


def test_rollout_rows_sum_to_one_on_random_weights():
    torch.manual_seed(0)
    layers = [torch.randn(2, 3, 7, 7).softmax(-1) for _ in range(4)]
    for fusion in ("mean", "max", "min"):
        out = attention_rollout(layers, fusion, discard_ratio=0.9)
        torch.testing.assert_close(out.sum(-1), torch.ones(2, 7))


def test_patch_map_cls_and_no_cls_non_square():
    grid = (2, 3)
    w = torch.rand(1, 2, 7, 7).softmax(-1)
    cls = patch_map(w, grid, num_prefix_tokens=1)
    assert cls.shape == (1, 2, 2, 3)
    torch.testing.assert_close(cls[0, 1, 1, 2], w[0, 1, 0, 6])  # row-major: patch (1, 2) is token 1 + 5
    w6 = torch.rand(2, 6, 6)
    received = patch_map(w6, grid, num_prefix_tokens=0)
    assert received.shape == (2, 2, 3)
    torch.testing.assert_close(received[1, 0, 1], w6[1, :, 1].mean())
    with pytest.raises(ValueError, match="do not match"):
        patch_map(w, (3, 3), 1)


def test_attention_distance_known_values():
    grid = (2, 2)
    # Each patch attends only to itself → 0 (the [CLS] key is ignored).
    self_only = torch.zeros(1, 1, 5, 5)
    self_only[0, 0, 0, 0] = 1.0
    self_only[0, 0, 1:, 1:] = torch.eye(4) * 0.5
    self_only[0, 0, 1:, 0] = 0.5
    assert mean_attention_distance(self_only, grid, 16, 1).item() == pytest.approx(0.0)
    # Uniform over a 2×2 grid: distances 0, 1, 1, √2 patches → (2 + √2) / 4 · patch size.
    uniform = torch.full((3, 2, 4, 4), 0.25)
    out = mean_attention_distance(uniform, grid, 16, 0)
    assert out.shape == (2,)
    torch.testing.assert_close(out, torch.full((2,), 16 * (2 + math.sqrt(2)) / 4))
    # Non-square 1×3 grid, each patch attends to its right-most neighbour row end: queries 0,1,2 → key 2.
    right = torch.zeros(1, 1, 3, 3)
    right[..., 2] = 1.0
    assert mean_attention_distance(right, (1, 3), 1, 0).item() == pytest.approx((2 + 1 + 0) / 3)


def test_patch_distances():
    d = patch_distances((2, 3), 2)
    assert d.shape == (6, 6)
    assert d[0, 5].item() == pytest.approx(2 * math.sqrt(1 + 4))


def test_position_similarity_diagonal_is_one():
    torch.manual_seed(0)
    pos = torch.randn(1, 12, 8)
    sim = position_similarity(pos, (3, 4))
    assert sim.shape == (3, 4, 3, 4)
    for i in range(3):
        for j in range(4):
            assert sim[i, j, i, j].item() == pytest.approx(1.0, abs=1e-6)
    assert sim.abs().max() <= 1 + 1e-6
    with pytest.raises(ValueError, match="do not form"):
        position_similarity(pos, (3, 3))


def test_filter_principal_components():
    torch.manual_seed(0)
    filters = torch.randn(64, 3, 4, 4)
    comps, explained = filter_principal_components(filters, 28)
    assert comps.shape == (28, 3, 4, 4) and explained.shape == (28,)
    flat = comps.reshape(28, -1)
    torch.testing.assert_close(flat @ flat.T, torch.eye(28), atol=1e-5, rtol=0)
    assert (explained[:-1] >= explained[1:]).all() and explained.sum() <= 1 + 1e-6
    # Filters along one direction: the first component is that direction (up to sign) and explains it all.
    direction = torch.randn(1, 48)
    direction /= direction.norm()
    line = (torch.randn(10, 1) * direction).reshape(10, 3, 4, 4)
    comps, explained = filter_principal_components(line, 5)
    assert comps.shape == (5, 3, 4, 4)
    assert abs(float(comps[0].flatten() @ direction[0])) == pytest.approx(1.0, abs=1e-5)
    assert explained[0].item() == pytest.approx(1.0, abs=1e-5)
