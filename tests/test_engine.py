"""Engine unit tests: schedule, parameter groups, non-finite handling, atomic checkpoints, resume refusal,
JSONL."""

from __future__ import annotations

import copy
import errno
import json
import math
from pathlib import Path

import pytest
import torch

from vitkit.config import PreprocessConfig
from vitkit.data import InMemoryImages
from vitkit.engine import (
    NonFiniteError,
    TrainConfig,
    Trainer,
    build_param_groups,
    layer_decay_scales,
    warmup_cosine_lr,
)
from vitkit.engine import checkpoint as ckpt
from vitkit.engine.augment import eval_transform_for, train_transform_for
from vitkit.engine.logs import MetricsLog
from vitkit.models import VisionTransformer, ViTConfig
from vitkit.objectives import ClassificationObjective, ObjectiveOutput


def tiny_model(dim: int = 16) -> VisionTransformer:
    return VisionTransformer(ViTConfig(image_size=(8, 8), patch_size=4, in_chans=1, num_classes=3, dim=dim,
                                       depth=2, num_heads=2, preprocess=PreprocessConfig((0.5,), (0.5,))))


def tiny_data(n: int = 48, seed: int = 0) -> InMemoryImages:
    g = torch.Generator().manual_seed(seed)
    targets = torch.arange(n) % 3
    images = (torch.rand(n, 1, 8, 8, generator=g) * 80 + targets.view(-1, 1, 1, 1) * 80).to(torch.uint8)
    return InMemoryImages(images, targets, ["a", "b", "c"])


def tiny_cfg(out: Path, **kw) -> TrainConfig:
    cfg = TrainConfig(**{"epochs": 2, "batch_size": 8, "out": str(out), "amp": False, "log_every": 1,
                         "device": "cpu", **kw})
    cfg.optim.warmup_epochs = 0.5
    return cfg


def make_trainer(out: Path, model=None, objective=None, **kw) -> Trainer:
    cfg = tiny_cfg(out, **kw)
    model = model or tiny_model()
    train_tf = train_transform_for(cfg.augment, model.config.preprocess, 3)
    eval_tf = eval_transform_for(model.config.preprocess)
    objective = objective or ClassificationObjective()
    return Trainer(model, objective, tiny_data(), tiny_data(24, seed=1), cfg, out,
                   train_transform=train_tf, eval_transform=eval_tf)


# ---- schedule and optimizer groups -------------------------------------------------------------------------
def test_warmup_cosine_values():
    def lr(s: int) -> float:
        return warmup_cosine_lr(s, total_steps=110, base_lr=1.0, warmup_steps=10, min_lr=0.1)

    assert lr(0) == 0.0
    assert lr(5) == pytest.approx(0.5)
    assert lr(10) == pytest.approx(1.0)
    assert lr(60) == pytest.approx(0.1 + 0.9 * 0.5)  # halfway through the cosine
    assert lr(110) == pytest.approx(0.1)
    assert lr(500) == pytest.approx(0.1)
    values = [lr(s) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))  # monotone decay after warmup
    assert warmup_cosine_lr(3, 10, 2.0) == pytest.approx(1.0 + math.cos(math.pi * 0.3))


def test_param_groups_skip_decay_on_norms_biases_tokens_pos_embed():
    model = tiny_model()
    groups = build_param_groups(model, weight_decay=0.05)
    no_decay = {n for g in groups if g["weight_decay"] == 0.0 for n in g["names"]}
    decay = {n for g in groups if g["weight_decay"] > 0 for n in g["names"]}
    assert {"cls_token", "cls_pos_embed", "pos_embed.weight", "blocks.0.norm1.weight",
            "blocks.0.attn.qkv.bias",
            "norm.weight", "head.bias"} <= no_decay
    assert {"blocks.0.attn.qkv.weight", "blocks.1.mlp.fc1.weight", "patch_embed.proj.weight",
            "head.weight"} <= decay
    assert not decay & no_decay
    assert len(decay | no_decay) == len(list(model.parameters()))


def test_layer_decay_scales_and_lr_scale_prefix():
    model = tiny_model()  # 2 blocks: embeddings id 0, blocks 1..2, head id 3
    scales = layer_decay_scales(model, 0.5)
    assert scales["head.weight"] == 1.0 and scales["norm.weight"] == 1.0
    assert scales["blocks.1.mlp.fc1.weight"] == 0.5
    assert scales["blocks.0.attn.qkv.weight"] == 0.25
    assert scales["patch_embed.proj.weight"] == 0.125 and scales["cls_token"] == 0.125
    groups = build_param_groups(model, 0.05, layer_decay=0.5, lr_scale={"head": 10.0})
    by_name = {n: g["lr_scale"] for g in groups for n in g["names"]}
    assert by_name["head.weight"] == 10.0 and by_name["blocks.0.attn.qkv.weight"] == 0.25


# ---- non-finite detection ----------------------------------------------------------------------------------
class PoisonedObjective(ClassificationObjective):
    """Returns a NaN loss on the calls listed in `bad` (0-based)."""

    def __init__(self, bad: set[int]) -> None:
        super().__init__()
        self.bad, self.calls = bad, 0

    def __call__(self, model, batch) -> ObjectiveOutput:
        out = super().__call__(model, batch)
        if self.calls in self.bad:
            out.loss = out.loss * float("nan")
        self.calls += 1
        return out


def test_nonfinite_steps_are_skipped_and_counted(tmp_path):
    trainer = make_trainer(tmp_path, objective=PoisonedObjective({1, 2}), max_nonfinite=3)
    trainer.resume()
    trainer.train_step(next(iter(trainer.train_data.epoch(0))))
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    for _ in range(2):
        trainer.train_step(next(iter(trainer.train_data.epoch(0))))
    assert trainer.nonfinite_total == 2 and trainer.nonfinite_run == 2
    # skipped, not applied
    assert all(torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    trainer.train_step(next(iter(trainer.train_data.epoch(0))))
    assert trainer.nonfinite_run == 0 and trainer.nonfinite_total == 2
    assert all(torch.isfinite(v).all() for v in trainer.model.state_dict().values())


def test_nonfinite_run_stops_with_the_step(tmp_path):
    trainer = make_trainer(tmp_path, objective=PoisonedObjective(set(range(3, 100))), max_nonfinite=3)
    with pytest.raises(NonFiniteError, match=r"stopping at step 5: 3 steps in a row"):
        trainer.fit()
    state = ckpt.find_checkpoint(tmp_path / "checkpoints" / "last")
    assert state is None  # no checkpoint was due yet, and nothing non-finite was written


def test_checkpoint_refuses_nonfinite_weights(tmp_path):
    model = tiny_model()
    with torch.no_grad():
        model.head.weight[0, 0] = float("inf")
    with pytest.raises(ckpt.CheckpointError, match="head.weight"):
        ckpt.save_checkpoint(tmp_path / "last", model, {}, {})
    assert not any(tmp_path.iterdir())


# ---- atomic checkpoints ------------------------------------------------------------------------------------
def test_failing_save_leaves_previous_checkpoint(tmp_path, monkeypatch):
    target = tmp_path / "checkpoints" / "last"
    first = tiny_model()
    ckpt.save_checkpoint(target, first, {"x": torch.ones(3)}, {"step": 1})
    second = tiny_model()
    with torch.no_grad():
        second.head.weight.fill_(7.0)

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    # the training-state write fails after the model's
    monkeypatch.setattr(ckpt, "write_safetensors", disk_full)
    with pytest.raises(OSError, match="No space left"):
        ckpt.save_checkpoint(target, second, {"x": torch.zeros(3)}, {"step": 2})
    found = ckpt.find_checkpoint(target)
    assert found == target
    model_state, meta, tensors = ckpt.load_checkpoint_state(found)
    assert meta == {"step": 1} and torch.equal(tensors["x"], torch.ones(3))
    assert all(torch.equal(model_state[k], v) for k, v in first.state_dict().items())
    assert sorted(p.name for p in target.parent.iterdir()) == ["last"]  # temp directory removed


def test_checkpoint_survives_crash_between_renames(tmp_path):
    target = tmp_path / "last"
    ckpt.save_checkpoint(target, tiny_model(), {}, {"step": 3})
    target.rename(tmp_path / ".last.old")  # state after the first rename of a swap
    assert ckpt.find_checkpoint(target) == tmp_path / ".last.old"


# ---- resume ------------------------------------------------------------------------------------------------
def test_resume_refuses_changed_model_config(tmp_path):
    make_trainer(tmp_path, epochs=1).fit()
    trainer = make_trainer(tmp_path, model=tiny_model(dim=32), epochs=2)
    with pytest.raises(ValueError, match=r"dim: 16 → 32"):
        trainer.fit()


def test_fit_resumes_and_jsonl_has_no_duplicate_steps(tmp_path):
    make_trainer(tmp_path, epochs=1).fit()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    # a killed run may have logged steps past its last checkpoint, and torn its last line
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({"step": 99, "epoch": 1, "split": "train", "loss": 1.0}) + "\n" + '{"step": 10')
    trainer = make_trainer(tmp_path, epochs=2)
    trainer.fit()
    assert trainer.step == 12
    entries = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    keys = [(e["step"], e["split"]) for e in entries]
    assert len(keys) == len(set(keys))
    assert [e["step"] for e in entries if e["split"] == "train"] == list(range(1, 13))
    assert [json.loads(line) for line in lines] == entries[: len(lines)]


def test_metrics_log_truncates_after_step(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    for step in (1, 2, 3):
        log.write(step, 0, "train", {"loss": float(step)})
    log.truncate_after(2)
    assert [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2]


# ---- accumulation and EMA ------------------------------------------------------------------------------
def test_gradient_accumulation_matches_one_big_batch(tmp_path):
    """With 1 or 4 micro-batches, the gradient the optimizer sees is the big batch's mean-loss gradient.

    Gradients are captured before the step and compared directly, with clipping off: clipping and AdamW both
    hide a wrong gradient scale from the weights (and lr is 0 at step 0 of the warmup)."""
    from vitkit.data.transforms import AugmentConfig

    torch.manual_seed(0)
    start = tiny_model()
    with torch.no_grad():
        start.head.weight.normal_(std=0.2)  # the zero-initialised head would stop every gradient below it
    for accum in (1, 4):
        trainer = make_trainer(tmp_path / str(accum), model=copy.deepcopy(start), augment=AugmentConfig())
        trainer.cfg.optim.accum_steps, trainer.cfg.optim.clip_grad = accum, None
        batch = next(iter(trainer.train_data.epoch(0)))
        reference = copy.deepcopy(start)  # no random augmentation: the generator is not used
        loss = trainer.objective(reference, trainer.train_transform(batch, torch.Generator())).loss
        names = [n for n, _ in reference.named_parameters()]
        expected = dict(zip(names, torch.autograd.grad(loss, list(reference.parameters())), strict=True))
        seen: dict[str, torch.Tensor] = {}

        def capture(optimizer, args, kwargs, seen=seen, model=trainer.model):
            seen.update({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})

        trainer.optimizer.register_step_pre_hook(capture)
        metrics, _ = trainer.train_step(batch)
        assert seen.keys() == expected.keys()
        assert expected["patch_embed.proj.weight"].abs().sum() > 0  # gradients reach the first layer
        for k, g in expected.items():
            torch.testing.assert_close(seen[k], g, rtol=1e-4, atol=1e-6, msg=lambda m, k=k: f"{k}: {m}")
        total = torch.cat([g.flatten() for g in expected.values()]).norm()
        assert metrics["grad_norm"] == pytest.approx(total.item(), rel=1e-4)  # the logged pre-clip norm


def test_ema_tracks_weights_with_warmup_decay():
    from vitkit.engine import ModelEMA

    model = torch.nn.Linear(2, 1)
    ema = ModelEMA(model, decay=0.9)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)  # first update: decay min(0.9, 2/11)
    d = 2 / 11
    torch.testing.assert_close(ema.module.weight, start * d + (start + 1.0) * (1 - d))
    assert not ema.module.weight.requires_grad
