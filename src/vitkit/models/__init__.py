"""vitkit models; importing this package registers every model family and preset."""

from . import vit_presets  # noqa: F401  (registers ViT presets)
from . import hybrid  # noqa: F401  (registers the hybrid R50+ViT presets)
from . import mae  # noqa: F401  (registers the MAE type and presets)
from . import mpp  # noqa: F401  (registers masked patch prediction)
from . import probe  # noqa: F401  (registers the linear probe)
from . import dpt_presets  # noqa: F401  (registers DPT presets)
from .registry import (build_model, create_model, get_model_config, list_models, register_model,
                       register_model_type)
from .vit import ViTConfig, VisionTransformer

__all__ = ["ViTConfig", "VisionTransformer", "build_model", "create_model", "get_model_config", "list_models",
           "register_model", "register_model_type"]
