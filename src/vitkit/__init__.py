"""vitkit: Vision Transformers in PyTorch — ViT, hybrid, MAE, masked patch prediction and DPT."""

from .config import PreprocessConfig, replace_config
from .infer.pipeline import Pipeline, pipeline
from .infer.preprocess import transforms_for
from .model_card import ModelCard
from .models import VisionTransformer, ViTConfig, build_model, get_model_config, list_models
from .viz.record import record_attention
from .weights import create_model, load_checkpoint, load_pretrained, save_pretrained

__version__ = "0.1.0"

__all__ = ["ModelCard", "Pipeline", "PreprocessConfig", "ViTConfig", "VisionTransformer", "build_model",
           "create_model", "get_model_config", "list_models", "load_checkpoint", "load_pretrained",
           "pipeline", "record_attention", "replace_config", "save_pretrained", "transforms_for"]
