"""Typed run configuration for `vitkit train`: one TrainConfig with nested data, augmentation and optimizer
parts.

Resolved from defaults ← YAML file (``--config``) ← command-line options ← ``--set key=value`` (dotted keys
such as ``optim.lr=1e-3``) with `vitkit.config.replace_config`, and saved as ``DIR/config.yaml`` next to every
run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import config_from_dict, config_to_dict, replace_config
from ..data import DataConfig
from ..data.transforms import AugmentConfig
from .dense_config import DenseConfig


def default_augment() -> AugmentConfig:
    """Random resized crops (60–100 % of the area, near-square) and label smoothing 0.1: no flips, so digits
    and text stay readable."""
    return AugmentConfig(crop_scale=(0.6, 1.0), crop_ratio=(0.8, 1.25), label_smoothing=0.1)


@dataclass
class OptimConfig:
    """AdamW with warmup + cosine, clipping, accumulation and an optional EMA of the weights."""

    lr: float = 1.5e-3  # peak learning rate for a batch of `batch_size`
    min_lr: float = 1e-5
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_epochs: float = 5.0
    clip_grad: float | None = 1.0  # max global grad norm; None: no clipping
    accum_steps: int = 1  # micro-batches per optimizer step (batch_size is split among them)
    layer_decay: float | None = None  # layer-wise lr decay (fine-tuning); None: off
    ema_decay: float | None = None  # EMA of weights; None: off


@dataclass
class TrainConfig:
    """Everything a training run needs; saved as DIR/config.yaml.

    The defaults are the `vitkit train` recipe: a 0.45 M-parameter ViT on the built-in digits (upsampled to
    16×16), ≥ 97 % held-out accuracy in a few minutes on 2 CPU cores.
    """

    model: str = "vit_micro_patch4_16"
    model_args: dict[str, Any] = field(default_factory=dict)  # ViTConfig overrides, e.g. {depth: 4}
    epochs: int = 120
    batch_size: int = 64  # global images per optimizer step, over all processes and micro-batches
    seed: int = 0
    out: str = ""  # run directory; "" = runs/<data>-<model> from the command line
    device: str = "auto"  # auto: cuda if available, else cpu
    # CPU threads for torch; None: 1 for models under 50 MFLOPs per image (they lose more to thread
    # synchronisation than they gain, badly so on a busy machine), else torch's default (one per core)
    threads: int | None = None
    amp: bool = True  # bf16 autocast on CPU and CUDA (weights, optimizer and loss stay fp32)
    compile: bool = False  # torch.compile the model
    deterministic: bool = False  # deterministic algorithms (bit-exact resume on one thread)
    eval_every: int = 1  # epochs between evaluations
    ckpt_every: int = 0  # optimizer steps between mid-epoch checkpoints; 0: at epoch ends only
    log_every: int = 10  # optimizer steps between train entries in metrics.jsonl
    max_nonfinite: int = 5  # stop after this many non-finite steps in a row
    tensorboard: bool = False  # also write TensorBoard events (needs the `tensorboard` extra)
    report: bool = True  # at the end, DIR/figures/*.png and DIR/report.html (needs matplotlib)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=default_augment)
    optim: OptimConfig = field(default_factory=OptimConfig)
    dense: DenseConfig | None = None  # a depth / segmentation run (`vitkit train --task`); None: classification


def load_train_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Defaults, then the YAML file at `path` (if any), then `overrides` (dotted keys allowed)."""
    import yaml

    cfg = TrainConfig()
    if path is not None:
        data = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of config fields at the top level")
        cfg = replace_config(cfg, data)
    overrides = dict(overrides or {})
    # model_args is a free-form dict: ``model_args.depth=4`` adds to it rather than replacing it
    extra = {k.partition(".")[2]: overrides.pop(k) for k in list(overrides) if k.startswith("model_args.")}
    if extra:
        overrides["model_args"] = {**cfg.model_args, **overrides.get("model_args", {}), **extra}
    return replace_config(cfg, overrides)


def save_train_config(cfg: TrainConfig, path: str | Path) -> None:
    import yaml

    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


def train_config_from_dict(data: dict[str, Any]) -> TrainConfig:
    return config_from_dict(TrainConfig, data)
