"""The run config: one typed `TrainConfig` with nested data, augmentation, optimizer and task sections.

Resolved from defaults ← YAML file (``--config``) ← command-line options ← ``--set key=value`` (dotted keys
such as ``optim.lr=1e-3``) with `vitkit.config.replace_config`. The task section is tagged by ``kind``
(``task.kind=depth``). A run writes its *resolved* config (what actually ran: model, channels, split,
absolute data path, mask ratio, ...) as RUN/config.yaml, and
``vitkit train --config RUN/config.yaml --out NEW`` runs it again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .config import config_from_dict, config_to_dict, flatten_config, replace_config
from .data import DataConfig
from .data.transforms import AugmentConfig
from .errors import UsageError, require


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
    lr_scale: dict[str, float] = field(default_factory=dict)  # lr factor by parameter prefix: {encoder: 0.1}
    ema_decay: float | None = None  # EMA of weights; None: off


# ---- task sections: tagged by `kind` -----------------------------------------------------------------------
@dataclass
class ClassifyConfig:
    """A classifier trained from scratch on labelled images (`vitkit train`)."""

    kind: Literal["classify"] = "classify"


@dataclass
class DenseConfig:
    """A DPT trained for depth or segmentation (`vitkit train --task depth|segment`).

    depth_loss: "ssi" (relative depth, MiDaS) or "silog" (metric); depth_space: what the model predicts for
    "ssi" ("disparity" as MiDaS / DPT, or "depth"). init_encoder: a ViT / MAE checkpoint whose encoder
    initialises the DPT (an absolute path once resolved). train_scenes / val_scenes / scene_size: the built-in
    procedural set (when data.path is None). An encoder learning rate apart from the decoder's is
    ``optim.lr_scale.encoder``.
    """

    kind: Literal["depth", "segment"] = "depth"
    depth_loss: Literal["ssi", "silog"] = "ssi"
    depth_space: Literal["disparity", "depth"] = "disparity"
    trim: float = 0.2
    grad_weight: float = 0.5
    aux_weight: float = 0.4
    ignore_index: int = 255
    init_encoder: str | None = None
    crop: tuple[int, int] | None = None
    flip: bool = True
    depth_scale: float = 1.0
    train_scenes: int = 2000
    val_scenes: int = 200
    scene_size: int = 64


@dataclass
class PretrainConfig:
    """Self-supervised pretraining without labels (`vitkit pretrain`): MAE or masked patch prediction.

    mask_ratio: MAE's share of hidden patches; None = the preset's (resolved into the saved config).
    crop_scale: area range of MAE's random resized crop.
    """

    kind: Literal["pretrain"] = "pretrain"
    method: Literal["mae", "mpp"] = "mae"
    mask_ratio: float | None = None
    crop_scale: tuple[float, float] = (0.2, 1.0)


@dataclass
class FinetuneConfig:
    """A pretrained encoder fine-tuned as a classifier (`vitkit finetune`).

    init: the encoder's checkpoint (anything `vitkit.load_pretrained` reads; an absolute path once resolved);
    None trains ``model`` from scratch, the baseline. pool: "avg" (patch-token mean + fresh fc-norm, as MAE)
    or "cls". label_fraction: class-stratified share of the training labels kept (seeded by
    data.split_seed). head_init_std: trunc-normal std of the new head (0: zeros).
    """

    kind: Literal["finetune"] = "finetune"
    init: str | None = None
    pool: Literal["avg", "cls"] = "avg"
    label_fraction: float = 1.0
    head_init_std: float = 2e-5
    allow_pickle: tuple[str, ...] = ()


@dataclass
class LinprobeConfig:
    """A linear probe on a frozen encoder (`vitkit linprobe`).

    init, pool, label_fraction: as for fine-tuning (pool defaults to the [CLS] token). cache: compute the
    features once (no augmentation) instead of running the encoder on every augmented batch.
    """

    kind: Literal["linprobe"] = "linprobe"
    init: str | None = None
    pool: Literal["avg", "cls"] = "cls"
    label_fraction: float = 1.0
    cache: bool = True
    allow_pickle: tuple[str, ...] = ()


TaskConfig = ClassifyConfig | DenseConfig | PretrainConfig | FinetuneConfig | LinprobeConfig


@dataclass
class TrainConfig:
    """Everything a run needs; its resolved form is saved as RUN/config.yaml.

    The defaults are the `vitkit train` recipe: a 0.45 M-parameter ViT on the built-in digits (upsampled to
    16×16), ≥ 97 % held-out accuracy in a few minutes on 2 CPU cores.
    """

    model: str | None = "vit_micro_patch4_16"  # preset name; None when task.init supplies the model
    model_args: dict[str, Any] = field(default_factory=dict)  # config overrides, e.g. {depth: 4}
    task: TaskConfig = field(default_factory=ClassifyConfig)
    epochs: int = 120
    batch_size: int = 64  # global images per optimizer step, over all processes and micro-batches
    seed: int = 0
    out: str = ""  # run directory; "" = runs/<data>-<model> from the command line
    device: str = "auto"  # auto: cuda if available, else cpu
    # CPU threads for torch; None: 1 for models under 50 MFLOPs per image (they lose more to thread
    # synchronisation than they gain, badly so on a busy machine), else torch's default (one per core)
    threads: int | None = None
    amp: bool = True  # autocast on CPU and CUDA (weights, optimizer and loss stay fp32)
    amp_dtype: Literal["bf16", "fp16"] = "bf16"  # fp16 adds a GradScaler (CUDA; DDP or one process)
    # ddp: every process holds the whole model; fsdp: FSDP2, parameters, gradients and optimizer state
    # sharded over the processes (one unit per transformer block), checkpoints written with DCP
    strategy: Literal["ddp", "fsdp"] = "ddp"
    grad_checkpointing: bool = False  # recompute block activations in backward (less memory, ~30% slower)
    compile: bool = False  # torch.compile the model
    deterministic: bool = False  # deterministic algorithms (bit-exact resume on one thread)
    eval_every: int = 1  # epochs between evaluations
    ckpt_every: int = 0  # optimizer steps between mid-epoch checkpoints; 0: at epoch ends only
    log_every: int = 10  # optimizer steps between train entries in metrics.jsonl
    max_nonfinite: int = 5  # stop after this many non-finite steps in a row
    # the weights that pick and fill checkpoints/best (ema needs optim.ema_decay)
    best_weights: Literal["raw", "ema"] = "raw"
    tensorboard: bool = False  # also write TensorBoard events (needs the `tensorboard` extra)
    report: bool = True  # at the end, RUN/figures/*.png and RUN/report.html (needs matplotlib)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=default_augment)
    optim: OptimConfig = field(default_factory=OptimConfig)


# Settings a resumed run may change: they decide how and where it runs, not what it computes.
RESUMABLE_CHANGES = ("out", "device", "threads", "compile", "grad_checkpointing", "epochs", "eval_every",
                     "ckpt_every", "log_every", "max_nonfinite", "tensorboard", "report", "data.num_workers",
                     "data.decode_workers", "data.in_memory", "data.memory_limit_gb")


def load_train_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Defaults, then the YAML file at `path` (if any), then `overrides` (dotted keys allowed).

    Raises:
        UsageError: a missing or malformed file, an unknown field or a value of the wrong type.
    """
    cfg = TrainConfig()
    if path is not None:
        cfg = replace_config(cfg, _migrate(read_yaml(path)))
    overrides = dict(overrides or {})
    # model_args is a free-form dict: ``model_args.depth=4`` adds to it rather than replacing it
    extra = {k.partition(".")[2]: overrides.pop(k) for k in list(overrides) if k.startswith("model_args.")}
    if extra:
        overrides["model_args"] = {**cfg.model_args, **overrides.get("model_args", {}), **extra}
    return replace_config(cfg, overrides)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping from `path`, or `UsageError` saying what is wrong with the file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"--config {path}: no such file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise UsageError(f"--config {path} is not valid YAML{at}: "
                         f"{getattr(e, 'problem', None) or e}") from None
    if not isinstance(data, dict):
        raise UsageError(f"--config {path}: expected a mapping of config fields at the top level")
    return data


def _migrate(data: dict[str, Any]) -> dict[str, Any]:
    """Read configs from before the task section: ``dense: {task: depth, ...}`` → ``task: {kind: depth}``."""
    if "dense" not in data:
        return data
    data = dict(data)
    dense = data.pop("dense")
    if isinstance(dense, dict):
        dense = dict(dense)
        scale = dense.pop("encoder_lr_scale", 1.0)
        data["task"] = {"kind": dense.pop("task", "depth"), **dense}
        if scale != 1.0:
            data.setdefault("optim", {}).setdefault("lr_scale", {})["encoder"] = scale
    return data


def save_train_config(cfg: TrainConfig, path: str | Path) -> None:
    import yaml

    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


def train_config_from_dict(data: dict[str, Any]) -> TrainConfig:
    return config_from_dict(TrainConfig, _migrate(data))


def check_loop_config(cfg: TrainConfig) -> None:
    """Refuse loop settings the Trainer cannot honour, with the field name and what to give."""
    o = cfg.optim
    for name, value, low in (("epochs", cfg.epochs, 1), ("batch_size", cfg.batch_size, 1),
                             ("eval_every", cfg.eval_every, 1), ("log_every", cfg.log_every, 1),
                             ("ckpt_every", cfg.ckpt_every, 0), ("max_nonfinite", cfg.max_nonfinite, 1),
                             ("optim.accum_steps", o.accum_steps, 1)):
        require(value >= low, f"{name} must be >= {low}, got {value}")
    require(cfg.batch_size % o.accum_steps == 0,
            f"batch_size {cfg.batch_size} must be divisible by optim.accum_steps {o.accum_steps}")
    require(o.lr > 0 and o.min_lr >= 0, f"optim.lr must be > 0 and optim.min_lr >= 0, got {o.lr}, {o.min_lr}")
    require(o.warmup_epochs >= 0, f"optim.warmup_epochs must be >= 0, got {o.warmup_epochs}")
    require(o.clip_grad is None or o.clip_grad > 0, f"optim.clip_grad must be > 0 or null, got {o.clip_grad}")
    require(o.ema_decay is None or 0 < o.ema_decay < 1,
            f"optim.ema_decay must be in (0, 1), got {o.ema_decay}")
    require(cfg.best_weights == "raw" or o.ema_decay is not None,
            "best_weights=ema needs an EMA: set optim.ema_decay (e.g. 0.999)")
    require(cfg.strategy in ("ddp", "fsdp"), f"strategy must be ddp or fsdp, got {cfg.strategy!r}")
    require(cfg.amp_dtype in ("bf16", "fp16"), f"amp_dtype must be bf16 or fp16, got {cfg.amp_dtype!r}")
    require(not (cfg.amp and cfg.amp_dtype == "fp16" and cfg.strategy == "fsdp"),
            "amp_dtype=fp16 with strategy=fsdp is not supported (no sharded gradient scaler); "
            "use amp_dtype=bf16")


def check_resumable(checkpoint: Path, saved: dict[str, Any], current: dict[str, Any]) -> None:
    """Refuse to resume when a setting that decides what the run computes (batch size, data, task, optimizer,
    ...) differs from the checkpoint's; settings in `RESUMABLE_CHANGES` may change.

    Raises:
        UsageError: listing each differing field as ``field: checkpoint → now``.
    """
    if not saved:
        return
    saved_flat = flatten_config(config_to_dict(train_config_from_dict(saved)))  # older files: today's fields
    current_flat = flatten_config(current)
    diff = [f"{k}: {saved_flat.get(k, '<missing>')!r} → {current_flat.get(k, '<missing>')!r}"
            for k in sorted(set(saved_flat) | set(current_flat))
            if not k.startswith(RESUMABLE_CHANGES) and saved_flat.get(k, "<missing>") != current_flat.get(k,
                                                                                              "<missing>")]
    if diff:
        raise UsageError(f"refusing to resume {checkpoint}: the run was started with other settings "
                         f"({'; '.join(diff)}); restore them, or use another --out for a new run")
