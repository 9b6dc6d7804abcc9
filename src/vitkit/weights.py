"""Saving and loading weights: vitkit, HF transformers and timm directories, timm state dicts, JAX .npz, and
any of these by Hugging Face Hub name (``hf-hub:ORG/NAME``, `vitkit.hub`).

A vitkit checkpoint is a directory with ``config.json`` (``{"vitkit_version", "model_type", **config
fields}``, preprocessing included), ``model.safetensors`` and a ``README.md`` model card
(`vitkit.model_card`). `load_pretrained` also reads foreign layouts through the converters registered in
`vitkit.convert`, adapts what it may (position embeddings resampled to the config's grid; a new zero head
only when ``num_classes=`` asks for it) and reports every key it did not load one-to-one.

Files are read safely: safetensors and ``.npz`` (object arrays refused) never run code; ``.pth/.bin`` load
with ``torch.load(weights_only=True)``, and a pickle that needs more globals is refused unless the caller
names them in ``allow_pickle`` (which takes only the data-only types listed in
`vitkit.checkpoint_files.DATA_ONLY_GLOBALS`).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from . import convert
from .checkpoint_files import UnsafeCheckpointError, read_state_dict, write_safetensors
from .config import flatten_config, replace_config
from .convert.timm_hub import is_timm_config, timm_dir_to_vitkit
from .errors import UsageError
from .hub import is_hub_name, pretrained_name
from .layers import LearnedPosEmbed, resample_pos_embed
from .model_card import ModelCard, write_model_card
from .models import registry
from .models.registry import build_model, config_from_json_dict, config_to_json_dict
from .rundir import ACCEPTED, resolve_model_path

__all__ = ["LoadReport", "ModelCard", "UnsafeCheckpointError", "create_model", "load_checkpoint",
           "load_pretrained", "read_state_dict", "save_pretrained"]

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
# prefixes a wrapper adds to every key of the model it wraps → the wrapper
WRAPPER_PREFIXES = {"module.": "DistributedDataParallel", "_orig_mod.": "torch.compile"}


@dataclass
class LoadReport:
    """What a load did beyond copying tensors one-to-one.

    Attributes:
        format: "vitkit", "hf:<model_type>", or a state-dict format name ("timm", "jax", ...).
        missing: model keys the checkpoint did not provide (left at their initial values).
        unexpected: checkpoint keys the model has no place for (ignored).
        resampled: position-embedding keys interpolated to the model's grid, with old → new grid.
        reinitialised: head keys replaced by a fresh zero head because ``num_classes=`` asked for one.
        stripped: prefixes removed from every checkpoint key before reading its layout, with the wrapper that
            adds them (``module.``: DistributedDataParallel, ``_orig_mod.``: torch.compile); lossless.
        path: the file or directory loaded.
    """

    format: str
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    resampled: list[str] = field(default_factory=list)
    reinitialised: list[str] = field(default_factory=list)
    stripped: list[str] = field(default_factory=list)
    path: str = ""

    @property
    def clean(self) -> bool:
        return not (self.missing or self.unexpected or self.resampled or self.reinitialised)

    def __str__(self) -> str:
        lines = [f"loaded {self.path or 'checkpoint'} ({self.format} format)"]
        for name in ("missing", "unexpected", "resampled", "reinitialised", "stripped"):
            keys = getattr(self, name)
            lines.append(f"  {name + ':':15s}{', '.join(keys) if keys else '-'}")
        return "\n".join(lines)


# ---- saving ------------------------------------------------------------------------------------------------
def save_pretrained(model: nn.Module, directory: str | Path, format: str = "vitkit",
                    card: ModelCard | None = None) -> Path:
    """Write ``config.json`` + ``model.safetensors`` and a ``README.md`` model card to `directory` (created if
    needed) and return it.

    Args:
        model: a vitkit model with a registered ``.config`` dataclass.
        format: "vitkit", or "hf" for a directory HF transformers loads with its own classes (e.g.
            ``ViTForImageClassification.from_pretrained``); raises ValueError for a model HF cannot express.
        card: how the model was made (license, dataset, metrics, recipe) for the card; None: a card
            describing the model alone, license "other". A README.md that vitkit did not write is kept.
    """

    from . import __version__

    directory = Path(directory)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if format == "vitkit":
        config = {"vitkit_version": __version__, **config_to_json_dict(model.config)}
    elif format == "hf":
        config, state = _to_hf(model.config, state)
    else:
        raise ValueError(f"format must be 'vitkit' or 'hf', got {format!r}")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    write_safetensors(state, directory / WEIGHTS_NAME, metadata={"format": "pt"})
    if format == "hf":
        _write_hf_preprocessor(model.config, directory)
    params = sum(p.numel() for p in model.parameters())
    write_model_card(directory, model.config, params, card, format)
    return directory


def _to_hf(config: Any, state: dict[str, Tensor]) -> tuple[dict[str, Any], dict[str, Tensor]]:
    for converter in convert.hf_exporters():
        try:
            return converter.from_vitkit(config, state)
        except TypeError:
            continue  # not this converter's config class
    raise ValueError(f"no HF exporter handles {type(config).__name__}; save it with format='vitkit'")


def _write_hf_preprocessor(config: Any, directory: Path) -> None:
    """preprocessor_config.json for HF's ViTImageProcessor, from the config's preprocessing."""
    pre = getattr(config, "preprocess", None)
    size = getattr(config, "image_size", None)
    if pre is None or size is None:
        return
    resample = {"nearest": 0, "bilinear": 2, "bicubic": 3}.get(pre.interpolation, 3)  # PIL codes
    data = {"image_processor_type": "ViTImageProcessor", "do_resize": True, "do_rescale": True,
            "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": list(pre.mean),
            "image_std": list(pre.std), "resample": resample, "size": {"height": size[0], "width": size[1]}}
    (directory / "preprocessor_config.json").write_text(json.dumps(data, indent=2) + "\n")


# ---- loading -----------------------------------------------------------------------------------------------
def create_model(name: str, pretrained: bool | str | Path = False, **overrides: Any) -> nn.Module:
    """Build preset `name` (``vitkit.models.create_model``), with weights when `pretrained` asks for them.

    Args:
        pretrained: False: fresh weights. True: the preset's known weights on the Hugging Face Hub
            (`vitkit.hub.PRETRAINED`; UsageError for a preset without). A path or ``hf-hub:ORG/NAME``: those
            weights; a bare weights file is read into the preset (which gives what the file does not store,
            such as the heads); a model directory or repo must hold the preset's architecture.
        **overrides: config fields; ``num_classes`` different from the weights' puts a new zero head on.
            With weights, the model comes back in eval mode (as `load_pretrained`).
    """
    if pretrained is False:
        return registry.create_model(name, **overrides)
    source = pretrained_name(name) if pretrained is True else pretrained
    num_classes = overrides.pop("num_classes", None)
    path = resolve_model_path(source)
    if path.is_file():  # a bare state dict: read into the preset, which says what the file does not
        return load_pretrained(path, num_classes=num_classes, model=name, **overrides)
    preset = {"model": name} if is_timm_config(_read_config_json(path)) else {}  # heads from the preset
    model = load_pretrained(path, num_classes=num_classes, **preset, **overrides)
    wanted = registry.get_model_config(name, **overrides, **(
        {} if num_classes is None else {"num_classes": num_classes}))
    _check_architecture(model.config, wanted, f"{source} does not hold a {name}")
    return model


def _check_architecture(config: Any, wanted: Any, what: str) -> None:
    """UsageError unless `config` builds the same tensors and heads as `wanted`."""
    with torch.device("meta"):
        have = {k: tuple(v.shape) for k, v in build_model(config).state_dict().items()}
        want = {k: tuple(v.shape) for k, v in build_model(wanted).state_dict().items()}
    heads, wanted_heads = ([(k, v) for k, v in flatten_config(config_to_json_dict(c)).items()
                            if k.endswith("num_heads")] for c in (config, wanted))
    differ = sorted(set(have.items()) ^ set(want.items()), key=str)[:4]
    if differ or heads != wanted_heads:
        found = ", ".join(f"{k} {v}" for k, v in differ) or f"heads {heads} vs {wanted_heads}"
        raise UsageError(f"{what} (differences: {found}); load it with vitkit.load_pretrained instead")


def load_pretrained(path: str | Path, *, strict: bool = True, num_classes: int | None = None,
                    allow_pickle: Iterable[str] = (), format: str | None = None,
                    **overrides: Any) -> nn.Module:
    """Load a model from any supported checkpoint, in eval mode (call ``.train()`` to fine-tune it); logs the
    `LoadReport` (see `load_checkpoint`)."""
    model, _ = load_checkpoint(path, strict=strict, num_classes=num_classes, allow_pickle=allow_pickle,
                               format=format, **overrides)
    return model


def load_checkpoint(path: str | Path, *, strict: bool = True, num_classes: int | None = None,
                    allow_pickle: Iterable[str] = (), format: str | None = None,
                    **overrides: Any) -> tuple[nn.Module, LoadReport]:
    """Build a model from a checkpoint, auto-detecting its layout, and report what did not load one-to-one.

    Sources: a run directory (its exported classifier, else checkpoints/best, else last; see
    `vitkit.rundir.resolve_model_path`); a vitkit directory; an HF transformers ``save_pretrained``
    directory (any model_type with a registered converter); a timm directory (config.json naming an
    ``architecture`` that is a vitkit preset, `vitkit.convert.timm_hub`); a Hugging Face Hub name
    ``hf-hub:ORG/NAME[@REVISION]`` holding any of these (fetched into the HF cache, `vitkit.hub`); a
    state-dict file (.safetensors, .pth/.pt/.bin/.ckpt, .npz) in a registered layout (timm ViT, the JAX
    release's .npz, ...), detected from its keys or named by `format`.

    Position embeddings stored for another grid than the model's (e.g. ``image_size=384`` given) are resampled
    with the config's `pos_interp` mode. A checkpoint head of another size is an error unless `num_classes`
    asks for a new (zero-initialised) head. The model comes back in eval mode (dropout and stochastic depth
    off), as HF's ``from_pretrained`` returns it; call ``.train()`` before fine-tuning (the Trainer does).

    Args:
        path: a run, model or checkpoint directory, a weights file, or ``hf-hub:ORG/NAME[@REVISION]``.
        strict: raise if any model key is missing or any checkpoint key unused.
        num_classes: classes of the returned model's head; replaces the checkpoint's head if it differs
            (0 removes it).
        allow_pickle: extra globals a pickle file may use (see `read_state_dict`).
        format: a state-dict layout name (`vitkit.convert.state_dict_formats()`) to skip detection.
        **overrides: config fields (``image_size=384``, ``drop_path_rate=0.1``); for bare state dicts also
            ``model=NAME`` (start from a preset instead of inferring the architecture) and shape hints such as
            ``num_heads`` or ``image_size`` (non-square grids).

    Raises:
        ValueError: unreadable/unsafe files or shape mismatches; a `UsageError` (a ValueError) when strict and
            keys are missing or unexpected.
    """
    # `format` names a bare state dict's layout: the path is a file
    path = Path(path) if format and not is_hub_name(path) else resolve_model_path(path)
    report = LoadReport(format="", path=str(path))
    report.format, ckpt_cfg, state, overrides = _read_checkpoint(path, format, tuple(allow_pickle),
                                                                 dict(overrides), report)
    cfg = replace_config(ckpt_cfg, overrides)
    if num_classes is not None and num_classes != getattr(cfg, "num_classes", None):
        cfg = replace_config(cfg, num_classes=num_classes)  # KeyError listing the fields for headless models
        if hasattr(cfg, "preprocess"):
            cfg = replace_config(cfg, {"preprocess.label_names": ()})  # the old labels name the old classes
    model = build_model(cfg)
    state = _adapt_state_dict(model, state, ckpt_cfg, report, new_head=num_classes is not None)
    missing, unexpected = model.load_state_dict(state, strict=False)
    fresh_head = [k for k in missing if num_classes is not None and k.startswith("head.")]
    report.reinitialised += [k for k in fresh_head if k not in report.reinitialised]  # not in checkpoint
    report.missing = [k for k in missing if k not in report.reinitialised]
    report.unexpected = list(unexpected)
    if strict and (report.missing or report.unexpected):
        raise UsageError(f"checkpoint does not match the model (strict=True):\n{report}\n"
                         "Pass strict=False to load anyway, or fix the config overrides.")
    (logger.info if report.clean else logger.warning)("%s", report)
    return model.eval(), report


def _read_checkpoint(path: Path, format: str | None, allow_pickle: tuple[str, ...], overrides: dict[str, Any],
                     report: LoadReport) -> tuple[str, Any, dict[str, Tensor], dict[str, Any]]:
    """(format name, checkpoint config, vitkit-layout state dict, overrides still to apply)."""
    data = _read_config_json(path) if path.is_dir() else None
    weights = _read_dir_weights(path, allow_pickle) if path.is_dir() else read_state_dict(path, allow_pickle)
    state = _strip_wrapper_prefixes(weights, report)
    if data is not None:
        if _is_vitkit_config(data):
            return "vitkit", config_from_json_dict(data), state, overrides
        if is_timm_config(data):  # a timm directory: the architecture's preset gives the heads
            preset = overrides.pop("model", None)
            return "timm-dir", *timm_dir_to_vitkit(data, state, preset), overrides
        model_type = data.get("model_type")
        cfg, state = convert.get_hf_converter(model_type).to_vitkit(data, state)
        return f"hf:{model_type}", _with_hf_preprocessing(cfg, path), state, overrides
    layout = convert.get_state_dict_format(format) if format else convert.detect_state_dict_format(state)
    if layout is None:
        first = ", ".join(list(state)[:5])
        raise ValueError(f"{path}: unrecognised state-dict layout (first keys: {first}); "
                         f"known layouts: {', '.join(convert.state_dict_formats())} (pass format=NAME)")
    cfg, state = layout.to_vitkit(state, overrides)
    # the converter applied the overrides (shape hints, model=NAME); only plain config fields remain to apply
    return layout.name, cfg, state, {k: v for k, v in overrides.items() if k != "model"}


def _read_config_json(path: Path) -> dict[str, Any]:
    config_path = path / CONFIG_NAME
    if not config_path.is_file():
        raise UsageError(f"{path} has no {CONFIG_NAME}; expected {ACCEPTED}")
    return json.loads(config_path.read_text())


def _strip_wrapper_prefixes(state: dict[str, Tensor], report: LoadReport) -> dict[str, Tensor]:
    """`state` without the `WRAPPER_PREFIXES` that every key starts with (nested wrappers: each in turn)."""
    while state:
        prefix = next((p for p in WRAPPER_PREFIXES if all(k.startswith(p) for k in state)), None)
        if prefix is None:
            break
        state = {k[len(prefix):]: v for k, v in state.items()}
        report.stripped.append(f"{prefix} ({WRAPPER_PREFIXES[prefix]})")
    return state


def _is_vitkit_config(data: dict[str, Any]) -> bool:
    if "vitkit_version" in data:
        return True
    if "transformers_version" in data or "architectures" in data:
        return False
    try:
        config_from_json_dict(dict(data))
        return True
    except (ValueError, KeyError, TypeError):
        return False


def _read_dir_weights(path: Path, allow_pickle: tuple[str, ...]) -> dict[str, Tensor]:
    index = path / f"{WEIGHTS_NAME}.index.json"
    if index.is_file():  # sharded HF checkpoint
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return {k: v for shard in shards for k, v in read_state_dict(path / shard).items()}
    for name in (WEIGHTS_NAME, "pytorch_model.bin"):
        if (path / name).is_file():
            return read_state_dict(path / name, allow_pickle)
    raise FileNotFoundError(f"{path} has a {CONFIG_NAME} but no {WEIGHTS_NAME} (or pytorch_model.bin)")


def _with_hf_preprocessing(cfg: Any, path: Path) -> Any:
    """Fill the config's preprocessing from an HF preprocessor_config.json, when there is one."""
    pre_path = path / "preprocessor_config.json"
    if not pre_path.is_file() or not hasattr(cfg, "preprocess"):
        return cfg
    data = json.loads(pre_path.read_text())
    changes: dict[str, Any] = {}
    if "image_mean" in data and "image_std" in data:
        changes["preprocess.mean"] = tuple(data["image_mean"])
        changes["preprocess.std"] = tuple(data["image_std"])
    interpolation = {0: "nearest", 2: "bilinear", 3: "bicubic"}.get(data.get("resample"))
    if interpolation:
        changes["preprocess.interpolation"] = interpolation
    return replace_config(cfg, changes)


def _adapt_state_dict(model: nn.Module, state: dict[str, Tensor], ckpt_cfg: Any, report: LoadReport,
                      new_head: bool) -> dict[str, Tensor]:
    """Resample position embeddings to the model's grid; drop a head of another size when `new_head`."""
    expected = model.state_dict()
    out: dict[str, Tensor] = {}
    mismatched: list[str] = []
    for key, value in state.items():
        target = expected.get(key)
        if target is None and new_head and key.startswith("head."):
            report.reinitialised.append(f"{key} (head removed)")
        elif target is None or target.shape == value.shape:
            out[key] = value
        elif isinstance(_owner(model, key), LearnedPosEmbed) and value.shape[-1] == target.shape[-1]:
            embed = _owner(model, key)
            old = _stored_grid(key, value, ckpt_cfg)
            out[key] = resample_pos_embed(value, old, embed.grid, embed.mode, embed.antialias)
            report.resampled.append(f"{key} {old[0]}×{old[1]} → {embed.grid[0]}×{embed.grid[1]}")
        elif key.startswith("head.") and new_head:
            report.reinitialised.append(key)
        elif key.startswith("head.") and value.shape[0] != target.shape[0]:
            n = target.shape[0]
            raise ValueError(f"the checkpoint's head has {value.shape[0]} outputs but the model has {n}; "
                             f"pass num_classes={n} to replace it with a new zero-initialised head "
                             "(or num_classes=0 to drop it)")
        else:
            mismatched.append(f"{key} {tuple(value.shape)} vs {tuple(target.shape)}")
    if mismatched:
        raise ValueError(f"{len(mismatched)} checkpoint tensors do not fit the model (checkpoint vs model): "
                         f"{'; '.join(mismatched[:6])}{' ...' if len(mismatched) > 6 else ''}. "
                         "Check the config overrides.")
    return out


def _owner(model: nn.Module, key: str) -> nn.Module | None:
    module_path = key.rpartition(".")[0]
    try:
        return model.get_submodule(module_path)
    except AttributeError:
        return None


def _stored_grid(key: str, value: Tensor, ckpt_cfg: Any) -> tuple[int, int]:
    """The grid position embeddings (1, N, D) were stored for: the checkpoint config's, else square."""
    with torch.device("meta"):
        reference = build_model(ckpt_cfg)
    owner = _owner(reference, key)
    n = value.shape[1]
    if isinstance(owner, LearnedPosEmbed) and owner.grid[0] * owner.grid[1] == n:
        return owner.grid
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(f"{key}: {n} stored positions form neither the checkpoint's grid nor a square")
    return side, side
