"""Exponential moving average of model weights (Polyak averaging), kept in fp32 next to the model."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from .fsdp import local


class ModelEMA:
    """A frozen copy of `model` whose floating-point weights track ``ema = d·ema + (1 − d)·weights``.

    The decay ramps up as ``min(decay, (1 + n) / (10 + n))`` over the first updates n, so early averages are
    not dominated by the random initialisation. Buffers that are not floating point are copied.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One step towards `model`'s weights: a single fused ``lerp`` over all floating-point tensors (the
        local shards when both are FSDP-sharded alike), no host synchronisation."""
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        current = model.state_dict()
        ema_floats, model_floats = [], []
        for name, ema_value in self.module.state_dict().items():
            value, ema_value = local(current[name].detach()), local(ema_value)
            if ema_value.dtype.is_floating_point:
                ema_floats.append(ema_value)
                model_floats.append(value.to(ema_value.dtype))
            else:
                ema_value.copy_(value)
        if ema_floats:
            torch._foreach_lerp_(ema_floats, model_floats, 1.0 - d)  # ema + (1 − d)(w − ema)

    def state_dict(self) -> dict[str, Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, Tensor], updates: int) -> None:
        self.module.load_state_dict(state)
        self.updates = updates
