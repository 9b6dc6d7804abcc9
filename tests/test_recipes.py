"""The recipes in configs/: each parses as a TrainConfig, builds its model at the recipe's image size and
takes one bf16 training step with finite loss and gradients."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from vitkit.models import create_model
from vitkit.runconfig import load_train_config

RECIPES = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_there_is_a_cifar10_recipe():
    assert "cifar10.yaml" in {p.name for p in RECIPES}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_builds_and_trains_one_step(path):
    cfg = load_train_config(path)
    model = create_model(cfg.model, **cfg.model_args)
    size = cfg.data.image_size
    assert model.config.image_size == (size, size), "the model's image size must be the data's"
    assert cfg.data.channels == model.config.in_chans
    torch.manual_seed(0)
    images, labels = torch.randn(4, cfg.data.channels, size, size), torch.arange(4) % model.config.num_classes
    with torch.autocast("cpu", torch.bfloat16, enabled=cfg.amp):
        loss = F.cross_entropy(model(images), labels, label_smoothing=cfg.augment.label_smoothing)
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
