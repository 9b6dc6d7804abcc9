"""Depth and segmentation losses and metrics on cases with known answers."""

from __future__ import annotations

import pytest
import torch

from vitkit.objectives.dense_metrics import (
    align_scale_shift,
    confusion_matrix,
    depth_metrics,
    segmentation_scores,
)
from vitkit.objectives.depth import (
    DepthObjective,
    gradient_matching,
    normalize_median_mad,
    silog_loss,
    ssi_loss,
    trimmed_mae,
)
from vitkit.objectives.segmentation import SegmentationObjective


def _depth(b: int = 2, h: int = 16, w: int = 20) -> torch.Tensor:
    return torch.rand(b, h, w) * 8 + 1  # depths in [1, 9]


def test_scale_and_shift_off_prediction_scores_perfectly() -> None:
    gt = _depth()
    valid = torch.ones_like(gt, dtype=torch.bool)
    pred = 3.7 * gt - 2.5  # right up to scale and shift
    m = depth_metrics(pred, gt, valid, align="depth")
    assert m["abs_rel"] < 1e-5 and m["rmse"] < 1e-4 and m["delta1"] == 1.0
    assert ssi_loss(pred, gt, valid).item() < 1e-5
    disp = 0.3 / gt + 0.1  # disparity off by scale and shift
    m = depth_metrics(disp, gt, valid, align="disparity")
    assert m["abs_rel"] < 1e-4 and m["delta1"] == 1.0
    unaligned = depth_metrics(pred, gt, valid, align="none")
    assert unaligned["abs_rel"] > 0.5 and unaligned["delta1"] < 0.5


def test_align_scale_shift_recovers_parameters_per_image() -> None:
    gt = _depth()
    pred = torch.stack([(gt[0] - 1.0) / 2.0, (gt[1] + 4.0) * 3.0])
    scale, shift = align_scale_shift(pred, gt, torch.ones_like(gt, dtype=torch.bool))
    assert torch.allclose(scale, torch.tensor([2.0, 1 / 3]), atol=1e-4)
    assert torch.allclose(shift, torch.tensor([1.0, -4.0]), atol=1e-3)


def test_depth_metrics_known_values_and_mask() -> None:
    gt = torch.full((1, 4, 4), 2.0)
    pred = gt.clone()
    pred[0, 0, :2] = 3.0  # two pixels 50 % off → ratio 1.5 (fails δ1 = 1.25, passes δ2 = 1.5625)
    valid = torch.ones_like(gt, dtype=torch.bool)
    m = depth_metrics(pred, gt, valid)
    assert m["abs_rel"] == pytest.approx(2 * 0.5 / 16)
    assert m["rmse"] == pytest.approx((2 * 1.0 / 16) ** 0.5)
    assert m["delta1"] == pytest.approx(14 / 16) and m["delta2"] == 1.0
    valid[0, 0, :2] = False  # masking the wrong pixels makes the prediction perfect
    m = depth_metrics(pred, gt, valid)
    assert m["abs_rel"] == 0.0 and m["delta1"] == 1.0
    gt[0, 0, :2] = float("inf")  # missing depth (inf holes) is ignored without a mask
    assert depth_metrics(pred, gt)["abs_rel"] == 0.0


def test_losses_ignore_invalid_pixels() -> None:
    gt = _depth()
    valid = torch.rand_like(gt) > 0.3
    pred = 2 * gt + 1
    garbage = torch.where(valid, pred, torch.full_like(pred, 1e4))
    gt_holes = torch.where(valid, gt, torch.full_like(gt, float("inf")))
    assert ssi_loss(garbage, gt_holes, valid & torch.isfinite(gt_holes)).item() < 1e-5
    scaled = torch.where(valid, 5 * gt, torch.zeros_like(gt))  # zeros where invalid: log would be -inf
    assert silog_loss(scaled, gt, valid, lam=1.0).item() < 1e-3  # λ = 1: fully scale-invariant
    expected = (0.15 * torch.log(torch.tensor(5.0)) ** 2).sqrt().item()  # λ = 0.85 keeps 15 % of the offset
    assert silog_loss(scaled, gt, valid).item() == pytest.approx(expected, rel=1e-4)


def test_trimming_drops_the_largest_residuals() -> None:
    target = torch.zeros(1, 1, 10)
    pred = torch.zeros(1, 1, 10)
    pred[0, 0, :2] = 100.0  # two outliers = 20 %
    valid = torch.ones_like(pred, dtype=torch.bool)
    assert trimmed_mae(pred, target, valid, trim=0.2).item() == 0.0
    assert trimmed_mae(pred, target, valid, trim=0.0).item() == pytest.approx(20.0)


def test_median_mad_normalisation_and_gradient_matching() -> None:
    x = torch.tensor([[[1.0, 2.0, 3.0, 10.0]]])
    valid = torch.tensor([[[True, True, True, False]]])
    n = normalize_median_mad(x, valid)
    assert torch.allclose(n, torch.tensor([[[-1.5, 0.0, 1.5, 0.0]]]))  # median 2, MAD 2/3; invalid → 0
    gt = _depth()
    valid = torch.ones_like(gt, dtype=torch.bool)
    assert gradient_matching(gt + 3.0, gt, valid).item() < 1e-5  # constant residual: no gradient
    assert gradient_matching(gt * 2, gt, valid).item() > 0.1


def test_depth_objective_runs_on_a_model_and_masks() -> None:
    gt = _depth(2, 8, 8)
    valid = torch.ones_like(gt, dtype=torch.bool)

    def model(images):
        return 1.0 / gt * 0.5 + 0.2

    out = DepthObjective("ssi", space="disparity")(model, {"images": torch.zeros(2, 3, 8, 8), "depth": gt,
                                                            "valid": valid})
    assert out.loss.item() < 1e-5 and out.metrics["delta1"] == 1.0
    with pytest.raises(ValueError, match="ssi"):
        DepthObjective("l2")


def test_miou_on_a_hand_made_case_and_ignore_index() -> None:
    labels = torch.tensor([[[0, 0, 1, 1], [0, 0, 1, 255]]])
    pred = torch.tensor([[[0, 1, 1, 1], [0, 0, 1, 0]]])
    conf = confusion_matrix(pred, labels, num_classes=2)
    assert conf.tolist() == [[3, 1], [0, 3]]  # the ignored pixel is not counted
    s = segmentation_scores(conf)
    assert s["miou"] == pytest.approx((3 / 4 + 3 / 4) / 2)
    assert s["pixel_acc"] == pytest.approx(6 / 7)
    # a class absent from labels and predictions is left out of the mean
    assert segmentation_scores(confusion_matrix(pred, labels, num_classes=3))["miou"] == pytest.approx(0.75)


def test_segmentation_objective_ignores_pixels_and_weights_aux() -> None:
    torch.manual_seed(0)
    labels = torch.randint(0, 3, (2, 8, 8))
    logits = torch.randn(2, 3, 8, 8)

    class Out:
        def __init__(self, pred, aux):
            self.pred, self.aux = pred, aux

    def model(images, return_aux=False):
        return Out(logits, logits[..., ::2, ::2]) if return_aux else logits

    batch = {"images": torch.zeros(2, 3, 8, 8), "labels": labels}
    plain = SegmentationObjective(3, aux_weight=0.0)(model, batch).loss
    ref = torch.nn.functional.cross_entropy(logits, labels)
    assert plain.item() == pytest.approx(ref.item(), rel=1e-6)
    with_aux = SegmentationObjective(3, aux_weight=0.4)(model, batch)
    assert with_aux.loss.item() > plain.item() and "aux_loss" in with_aux.metrics
    # changing logits where labels are ignored changes nothing
    ignored = labels.clone()
    ignored[:, :4] = 255
    a = SegmentationObjective(3, aux_weight=0.0)(model, {"images": batch["images"], "labels": ignored}).loss
    logits[:, :, :4] += 100 * torch.randn(2, 3, 4, 8)
    b = SegmentationObjective(3, aux_weight=0.0)(model, {"images": batch["images"], "labels": ignored}).loss
    assert a.item() == pytest.approx(b.item(), rel=1e-6)
