"""Hugging Face Hub names: ``hf-hub:ORG/NAME[@REVISION]`` → a local model directory (the ``hub`` extra).

`download` fetches only what vitkit reads — ``config.json``, ``preprocessor_config.json`` and the weights
(``model.safetensors``, sharded or not; ``pytorch_model.bin`` only when a repo has no safetensors) — through
``huggingface_hub``, which keeps them in its cache (``HF_HOME`` / ``HF_HUB_CACHE``) and answers from there
without a network (``HF_HUB_OFFLINE=1``). The directory then loads like any local one, in the vitkit, HF
transformers or timm layout (`vitkit.load_pretrained`); nothing here knows a layout.

`PRETRAINED` names, per preset, the Hub repo whose weights load into exactly that preset
(``vitkit.create_model(name, pretrained=True)``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import ModuleType

from .errors import RunFailure, UsageError

log = logging.getLogger(__name__)

PREFIX = "hf-hub:"
CONFIG_FILES = ["config.json", "preprocessor_config.json"]
SAFETENSORS = ["model.safetensors", "model.safetensors.index.json", "model-*-of-*.safetensors"]
PICKLE = ["pytorch_model.bin"]
INSTALL = "pip install 'vitkit[hub]'"

# preset → the Hub repo whose weights are that preset exactly (timm's AugReg ViTs: the timm layout,
# ImageNet-21k pretraining fine-tuned on ImageNet-1k; MAE and DPT: the authors' weights in the HF layout)
PRETRAINED: dict[str, str] = {
    "vit_tiny_patch16_224": "hf-hub:timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k",
    "vit_tiny_patch16_384": "hf-hub:timm/vit_tiny_patch16_384.augreg_in21k_ft_in1k",
    "vit_small_patch16_224": "hf-hub:timm/vit_small_patch16_224.augreg_in21k_ft_in1k",
    "vit_small_patch16_384": "hf-hub:timm/vit_small_patch16_384.augreg_in21k_ft_in1k",
    "vit_small_patch32_224": "hf-hub:timm/vit_small_patch32_224.augreg_in21k_ft_in1k",
    "vit_small_patch32_384": "hf-hub:timm/vit_small_patch32_384.augreg_in21k_ft_in1k",
    "vit_base_patch16_224": "hf-hub:timm/vit_base_patch16_224.augreg2_in21k_ft_in1k",
    "vit_base_patch16_384": "hf-hub:timm/vit_base_patch16_384.augreg_in21k_ft_in1k",
    "vit_base_patch32_224": "hf-hub:timm/vit_base_patch32_224.augreg_in21k_ft_in1k",
    "vit_base_patch32_384": "hf-hub:timm/vit_base_patch32_384.augreg_in21k_ft_in1k",
    "vit_large_patch16_224": "hf-hub:timm/vit_large_patch16_224.augreg_in21k_ft_in1k",
    "vit_large_patch16_384": "hf-hub:timm/vit_large_patch16_384.augreg_in21k_ft_in1k",
    "vit_large_patch32_384": "hf-hub:timm/vit_large_patch32_384.orig_in21k_ft_in1k",
    "mae_vit_base_patch16": "hf-hub:facebook/vit-mae-base",
    "mae_vit_large_patch16": "hf-hub:facebook/vit-mae-large",
    "mae_vit_huge_patch14": "hf-hub:facebook/vit-mae-huge",
    "dpt_large_depth": "hf-hub:Intel/dpt-large",
    "dpt_hybrid_depth": "hf-hub:Intel/dpt-hybrid-midas",
}


def is_hub_name(value: object) -> bool:
    """True for ``hf-hub:...`` strings."""
    return isinstance(value, str) and value.startswith(PREFIX)


def parse_hub_name(name: str) -> tuple[str, str | None]:
    """``hf-hub:ORG/NAME[@REVISION]`` → (repo id, revision or None)."""
    repo_id, _, revision = name[len(PREFIX):].partition("@")
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(parts) or (revision == "" and "@" in name):
        raise UsageError(f"{name}: expected hf-hub:ORG/NAME or hf-hub:ORG/NAME@REVISION")
    return repo_id, revision or None


def pinned_name(name: str, folder: Path) -> str:
    """``hf-hub:ORG/NAME@<commit>`` for hub name `name` whose files `download` put in snapshot `folder`."""
    repo_id, _ = parse_hub_name(name)
    return f"{PREFIX}{repo_id}@{folder.name}"  # the cache names each snapshot folder by its commit


def pretrained_name(preset: str) -> str:
    """The Hub name of `preset`'s weights (`PRETRAINED`); UsageError for a preset without one."""
    if preset not in PRETRAINED:
        raise UsageError(f"{preset} has no known pretrained weights (presets with them: "
                         f"{', '.join(sorted(PRETRAINED))}); pass pretrained='hf-hub:ORG/NAME' or a path")
    return PRETRAINED[preset]


def download(name: str) -> Path:
    """The local snapshot directory of hub name `name`, fetched into the cache if it is not there yet.

    Raises:
        UsageError: a malformed name, huggingface_hub not installed, a repo that is neither on the Hub nor
            in the cache (offline), or a repo without config.json and weights.
        RunFailure: the Hub answered with another error (server down, rate limit).
    """
    repo_id, revision = parse_hub_name(name)
    hub = _import_hub()
    folder = _snapshot(hub, name, repo_id, revision, CONFIG_FILES + SAFETENSORS)
    if not _has_weights(folder):
        folder = _snapshot(hub, name, repo_id, revision, CONFIG_FILES + PICKLE)
    if not (folder / "config.json").is_file() or not _has_weights(folder):
        raise UsageError(f"{name}: the repo (at {folder}) has no config.json with model.safetensors or "
                         "pytorch_model.bin; vitkit loads repos in the vitkit, HF transformers or timm "
                         "layout")
    log.info("%s: %s", name, folder)
    return folder


def _import_hub() -> ModuleType:
    try:
        import huggingface_hub
    except ImportError:
        raise UsageError(f"hf-hub: names need huggingface_hub: {INSTALL}") from None
    return huggingface_hub


def _snapshot(hub: ModuleType, name: str, repo_id: str, revision: str | None, patterns: list[str]) -> Path:
    from huggingface_hub import constants, errors

    try:
        return Path(hub.snapshot_download(repo_id, revision=revision, allow_patterns=patterns))
    except errors.LocalEntryNotFoundError:  # offline (or no connection) and not in the cache
        cache = constants.HF_HUB_CACHE
        raise UsageError(f"{name}: not found in the Hugging Face cache at {cache} and the Hub cannot be "
                         "reached; connect to the network (unset HF_HUB_OFFLINE) or put the repo's files "
                         "there, or pass a local path") from None
    except errors.RevisionNotFoundError:
        raise UsageError(f"{name}: the repo has no revision {revision!r}") from None
    except errors.RepositoryNotFoundError:  # gated repos too
        raise UsageError(f"{name}: no such repo on the Hub, or it is private or gated (log in with "
                         "`hf auth login` if you have access)") from None
    except errors.HfHubHTTPError as e:
        raise RunFailure(f"{name}: the Hub answered {str(e).splitlines()[0]}; try again later") from None


def _has_weights(folder: Path) -> bool:
    names = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
    return any((folder / n).is_file() for n in names)
