"""Building blocks shared by every vitkit model; each primitive exists once, here."""

from .attention import Attention, additive_mask, explicit_attention
from .block import Block
from .drop import DropPath, drop_path
from .masking import RandomMask, gather_tokens, random_masking
from .mlp import Mlp
from .patch_embed import PatchEmbed, check_images
from .patchify import patchify, unpatchify
from .pos_embed import LearnedPosEmbed, SinCosPosEmbed, resample_pos_embed, sincos_pos_embed_2d
from .std_conv import StdConv2d, pad_same

__all__ = [
    "Attention", "Block", "DropPath", "LearnedPosEmbed", "Mlp", "PatchEmbed", "RandomMask", "SinCosPosEmbed",
    "StdConv2d", "additive_mask", "check_images", "drop_path", "explicit_attention", "gather_tokens",
    "pad_same", "patchify", "random_masking", "resample_pos_embed", "sincos_pos_embed_2d", "unpatchify",
]
