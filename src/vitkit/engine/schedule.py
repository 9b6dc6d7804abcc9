"""Learning-rate schedule as a pure function of the optimizer step: linear warmup, then cosine decay.

Being a function of the step (not an object with state), the schedule needs nothing in a checkpoint beyond the
step itself, and resuming lands on exactly the same learning rate.
"""

from __future__ import annotations

import math


def warmup_cosine_lr(step: int, total_steps: int, base_lr: float, warmup_steps: int = 0,
                     min_lr: float = 0.0, warmup_start_lr: float = 0.0) -> float:
    """Learning rate at optimizer step `step` (0-based).

    Rises linearly from `warmup_start_lr` (step 0) towards `base_lr` (reached at step `warmup_steps`), then
    follows half a cosine from `base_lr` down to `min_lr` at step `total_steps`; stays at `min_lr` after that.
    """
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    if step < warmup_steps:
        return warmup_start_lr + (base_lr - warmup_start_lr) * step / warmup_steps
    decay_steps = max(total_steps - warmup_steps, 1)
    progress = min((step - warmup_steps) / decay_steps, 1.0)
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * progress))
