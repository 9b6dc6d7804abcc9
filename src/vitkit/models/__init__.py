"""vitkit models; importing this package registers every model family and preset."""

from . import (
                       dpt_presets,  # noqa: F401  (registers DPT presets)
                       hybrid,  # noqa: F401  (registers the hybrid R50+ViT presets)
                       mae,  # noqa: F401  (registers the MAE type and presets)
                       mpp,  # noqa: F401  (registers masked patch prediction)
                       probe,  # noqa: F401  (registers the linear probe)
                       vit_family,  # noqa: F401  (registers DeiT, DINOv2, DINOv3 and AugReg hybrid presets)
                       vit_presets,  # noqa: F401  (registers ViT presets)
)
from .registry import (
                       build_model,
                       create_model,
                       get_model_config,
                       list_models,
                       register_model,
                       register_model_type,
)
from .vit import VisionTransformer, ViTConfig

__all__ = ["ViTConfig", "VisionTransformer", "build_model", "create_model", "get_model_config", "list_models",
           "register_model", "register_model_type"]
