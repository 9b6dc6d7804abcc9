"""Building blocks shared by every vitkit model; each primitive exists once, here."""

from .attention import Attention, NormFactory, additive_mask, explicit_attention
from .block import Block
from .drop import DropPath, drop_path
from .layer_scale import LayerScale
from .masking import RandomMask, gather_tokens, random_masking
from .mlp import Mlp, SwiGLU, swiglu_hidden_dim
from .patch_embed import PatchEmbed, check_images
from .patchify import patchify, unpatchify
from .pos_embed import LearnedPosEmbed, SinCosPosEmbed, resample_pos_embed, sincos_pos_embed_2d
from .rope import RopeConfig, RotaryEmbedding2d, apply_rope
from .std_conv import StdConv2d, pad_same

__all__ = [
    "Attention", "Block", "DropPath", "LayerScale", "LearnedPosEmbed", "Mlp", "NormFactory", "PatchEmbed",
    "RandomMask", "RopeConfig", "RotaryEmbedding2d", "SinCosPosEmbed", "StdConv2d", "SwiGLU", "additive_mask",
    "apply_rope", "check_images", "drop_path", "explicit_attention", "gather_tokens", "pad_same", "patchify",
    "random_masking", "resample_pos_embed", "sincos_pos_embed_2d", "swiglu_hidden_dim", "unpatchify",
]
