"""Record attention weights from any vitkit model for the length of one ``with`` block.

    with vitkit.record_attention(model) as rec:
        logits = model(images)
    rec.weights          # [(B, H, T, T), ...] one per recorded layer, in model order
    rec[-1]              # the last layer's weights

Shapes: B batch · H heads · T tokens (prefix tokens first, then patches in row-major order).

Every attention layer in vitkit is a `layers.Attention`; its `observer` attribute, when set, routes that
layer through the explicit path and hands it the weights. The recorder sets the observer on the chosen layers
only, on entry, and puts the previous observer back on exit (also when the block raises), so the fused path
is used again afterwards and everywhere else during the block. Observers chain: a recorder nested inside
another on the same layer passes the weights on to the outer one, so both see every call made while both are
active. No global state is touched; two models recorded at once share nothing. The observer lives on the
layer, so threads running the *same* model instance during the block all record into it.

Layers are numbered in `model.modules()` order, which for ViT, hybrid and DPT backbones is block order; for
MAE the encoder's blocks come before the decoder's (record ``model.encoder``, or pick indices, for one).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn

from ..layers import Attention


def attention_layers(model: nn.Module) -> list[Attention]:
    """Every `layers.Attention` inside `model`, in `model.modules()` order."""
    return [m for m in model.modules() if isinstance(m, Attention)]


class AttentionRecording:
    """Weights captured by `record_attention`.

    Attributes:
        layers: indices (into `attention_layers(model)`) of the recorded layers, in model order.
        calls: per recorded layer index, the weights (B, H, T, T) of every forward call made in the block.
    """

    def __init__(self, layers: Sequence[int], device: torch.device | str | None) -> None:
        self.layers = list(layers)
        self.device = None if device is None else torch.device(device)
        self.calls: dict[int, list[Tensor]] = {i: [] for i in self.layers}

    def _store(self, index: int, weights: Tensor) -> None:
        weights = weights.detach()
        self.calls[index].append(weights if self.device is None else weights.to(self.device))

    @property
    def weights(self) -> list[Tensor]:
        """The latest call's weights (B, H, T, T) of each recorded layer, in model order."""
        missing = [i for i in self.layers if not self.calls[i]]
        if missing:
            raise RuntimeError(f"no attention was recorded for layers {missing}: run the model inside the "
                               f"`with record_attention(...)` block (layers skipped by the forward pass, "
                               f"e.g. beyond forward_intermediates' last block, record nothing)")
        return [self.calls[i][-1] for i in self.layers]

    def __getitem__(self, layer: int) -> Tensor:
        """Latest weights (B, H, T, T) of model layer `layer` (negative: counted from the last recorded)."""
        if layer < 0:
            layer = self.layers[layer]
        if layer not in self.calls:
            raise KeyError(f"layer {layer} was not recorded; recorded layers: {self.layers}")
        if not self.calls[layer]:
            raise RuntimeError(f"layer {layer} has not run inside the `with record_attention(...)` block")
        return self.calls[layer][-1]

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[Tensor]:
        """The latest weights (B, H, T, T) of each recorded layer, in model order (as `weights`).

        Without it Python would iterate through `__getitem__` with 0, 1, 2, ... which names model layers,
        not positions among the recorded ones.
        """
        return iter(self.weights)

    def stack(self) -> Tensor:
        """The latest weights of all recorded layers as one tensor (L, B, H, T, T)."""
        return torch.stack(self.weights)

    def clear(self) -> None:
        """Forget everything recorded so far (recording goes on)."""
        for calls in self.calls.values():
            calls.clear()


def _chain(recording: AttentionRecording, index: int, previous):
    def observe(weights: Tensor) -> None:
        recording._store(index, weights)
        if previous is not None:
            previous(weights)

    return observe


@contextlib.contextmanager
def record_attention(model: nn.Module, layers: int | Sequence[int] | None = None,
                     device: torch.device | str | None = "cpu") -> Iterator[AttentionRecording]:
    """Record attention weights (B, H, T, T) of `model`'s attention layers during a ``with`` block.

    Args:
        model: any module containing `layers.Attention` layers (ViT, hybrid, MAE, DPT, or a part of one).
        layers: indices into the model's attention layers (negative counts from the end), or None for all.
        device: where to keep the recorded weights ("cpu" by default, so long loops do not fill accelerator
            memory); None keeps them where they were computed. Weights are always detached.

    Yields:
        An `AttentionRecording`; read `weights`, index it by layer, or `stack()` it.

    Only the chosen layers leave the fused (SDPA) path, and only inside the block. With gradient checkpointing
    the recomputation in backward records a second call; `weights` returns the latest.
    """
    found = attention_layers(model)
    if not found:
        raise ValueError(f"{type(model).__name__} contains no vitkit attention layers (layers.Attention)")
    depth = len(found)
    if layers is None:
        chosen = list(range(depth))
    else:
        wanted = [layers] if isinstance(layers, int) else list(layers)
        bad = [i for i in wanted if not -depth <= i < depth]
        if bad:
            raise IndexError(f"attention layers {bad} out of range: the model has {depth} (0..{depth - 1})")
        chosen = sorted({i % depth for i in wanted})
    recording = AttentionRecording(chosen, device)
    previous = {i: found[i].observer for i in chosen}
    try:
        for i in chosen:
            found[i].observer = _chain(recording, i, previous[i])
        yield recording
    finally:
        for i in chosen:
            found[i].observer = previous[i]
