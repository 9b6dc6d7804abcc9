"""The run config the Trainer reads: `TrainConfig` and `OptimConfig` live in `vitkit.runconfig`."""

from ..runconfig import OptimConfig, TrainConfig, load_train_config, save_train_config, train_config_from_dict

__all__ = ["OptimConfig", "TrainConfig", "load_train_config", "save_train_config", "train_config_from_dict"]
