"""Training engine: the Trainer loop, optimizer groups, schedule, checkpoints, DDP, metrics and run
logging."""

from ..data.transforms import AugmentConfig
from ..runconfig import OptimConfig, TrainConfig, load_train_config, save_train_config
from .checkpoint import CheckpointError, find_checkpoint, load_checkpoint_state, save_checkpoint
from .ema import ModelEMA
from .optim import build_optimizer, build_param_groups, layer_decay_scales, layer_id
from .runtime import seed_everything
from .schedule import warmup_cosine_lr
from .trainer import NonFiniteError, Trainer

__all__ = ["AugmentConfig", "CheckpointError", "ModelEMA", "NonFiniteError", "OptimConfig", "TrainConfig",
           "Trainer",
           "build_optimizer", "build_param_groups", "find_checkpoint", "layer_decay_scales", "layer_id",
           "load_checkpoint_state", "load_train_config", "save_checkpoint", "save_train_config",
           "seed_everything",
           "warmup_cosine_lr"]
