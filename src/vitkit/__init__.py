"""vitkit: Vision Transformers in PyTorch — ViT, hybrid, MAE, masked patch prediction and DPT."""

from .config import PreprocessConfig, replace_config
from .models import ViTConfig, VisionTransformer, build_model, create_model, get_model_config, list_models
from .viz.record import record_attention

__version__ = "0.1.0"

__all__ = ["PreprocessConfig", "ViTConfig", "VisionTransformer", "build_model", "create_model",
           "get_model_config", "list_models", "record_attention", "replace_config"]
