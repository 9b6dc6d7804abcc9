"""vitkit: Vision Transformers in PyTorch — ViT, hybrid, MAE, masked patch prediction and DPT."""

from .config import PreprocessConfig, replace_config
from .infer.pipeline import Pipeline, pipeline
from .infer.preprocess import transforms_for
from .models import VisionTransformer, ViTConfig, build_model, create_model, get_model_config, list_models
from .viz.record import record_attention
from .weights import load_checkpoint, load_pretrained, save_pretrained

__version__ = "0.1.0"

__all__ = ["Pipeline", "PreprocessConfig", "ViTConfig", "VisionTransformer", "build_model", "create_model",
           "get_model_config", "list_models", "load_checkpoint", "load_pretrained", "pipeline",
           "record_attention", "replace_config", "save_pretrained", "transforms_for"]
