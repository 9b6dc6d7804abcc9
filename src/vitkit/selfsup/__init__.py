"""Self-supervised pretraining (MAE, masked patch prediction) and its evaluation by fine-tuning and linear probing,
as library calls on the shared training engine: ``pretrain(cfg)``, ``finetune(ckpt, cfg)``, ``linprobe(ckpt, cfg)``.
"""

from .recipes import finetune, labelled_subset, linprobe, load_encoder, pretrain

__all__ = ["finetune", "labelled_subset", "linprobe", "load_encoder", "pretrain"]
