"""The API's endpoints as data: for each one, the pipeline task that answers it, the options it takes
(checked by pydantic: a bad value is a 422 naming the field) and how its result becomes JSON."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from ..infer.dense import label_palette
from .encode import depth_json, hex_colour, png_base64


class Options(BaseModel):
    """Options of one request: unknown fields are refused (a typo must not be silently ignored)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NoOptions(Options):
    pass


class ClassifyOptions(Options):
    top_k: int = Field(5, ge=1, le=1000, description="labels to return, best first")


class AttentionOptions(Options):  # method=cls takes layer and head; rollout uses every layer and head
    method: Literal["rollout", "cls"] = Field("rollout", description="rollout through all layers, or one "
                                              "layer's [CLS] attention")
    layer: int = Field(-1, description="the block for method=cls (negative counts from the end)")
    head: int | None = Field(None, ge=0, description="one head for method=cls; omitted: the heads' mean")


class ReconstructOptions(Options):
    mask_ratio: float = Field(0.75, ge=0.0, le=0.95, description="fraction of patches hidden")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="which patches are hidden")


def classify_json(result: list[dict[str, Any]]) -> dict[str, Any]:
    return {"predictions": [{"label": str(r["label"]), "index": int(r["index"]), "score": float(r["score"])}
                            for r in result]}


def attention_json(result: dict[str, Any]) -> dict[str, Any]:
    values = np.clip(np.nan_to_num(np.asarray(result["map"], dtype=np.float64)), 0.0, 1.0)
    gray = Image.fromarray(np.round(values * 255).astype(np.uint8))  # (H, W) "L"
    top1 = result.get("prediction")
    return {"overlay": png_base64(result["overlay"]), "map": png_base64(gray),
            "grid": [int(g) for g in result["grid"]], "titles": [str(t) for t in result.get("titles", [])],
            "prediction": None if top1 is None else classify_json([top1])["predictions"][0]}


def segment_json(result: dict[str, Any]) -> dict[str, Any]:
    labels = np.asarray(result["labels"]).astype(np.int64)
    names = [str(n) for n in result["class_names"]]
    palette = label_palette(len(names))
    indices, counts = np.unique(labels, return_counts=True)
    classes = [{"index": int(i), "name": names[i], "color": hex_colour(palette[i]),
                "fraction": round(float(c) / labels.size, 6)}
               for i, c in zip(indices, counts, strict=True) if 0 <= i < len(names)]
    mask = Image.fromarray(np.clip(labels, 0, 255).astype(np.uint8), mode="L")  # pixel = class index
    return {"overlay": png_base64(result["overlay"]), "mask": png_base64(mask), "classes": classes,
            "num_classes": len(names)}


RECONSTRUCTION_PANELS = ("original", "masked", "reconstruction", "reconstruction_visible")


def reconstruct_json(result: dict[str, Any]) -> dict[str, Any]:
    return {**{k: png_base64(result[k]) for k in RECONSTRUCTION_PANELS}, "loss": float(result["loss"])}


@dataclass(frozen=True)
class Endpoint:
    """One ``POST /v1/<name>``: the pipeline task behind it, its options and its result's JSON."""

    task: str
    options: type[Options]
    to_json: Callable[[Any], dict[str, Any]]
    summary: str
    # The pipeline's input: "storage" = `Preprocess.load` of the upload, decoded (and shrunk) on the request's
    # thread exactly as the pipeline decodes a file; "image" = the whole image (results at its own size).
    decode: str = "image"
    # The MAE masks image i of one call with seed + i, so each request gets a call of its own (same mask as
    # `pipe(image, seed=...)`).
    call_per_image: bool = False


ENDPOINTS: dict[str, Endpoint] = {
    "classify": Endpoint("image-classification", ClassifyOptions, classify_json, "top-k labels with scores",
                         decode="storage"),
    "attention": Endpoint("attention", AttentionOptions, attention_json, "an attention map over the image"),
    "depth": Endpoint("depth-estimation", NoOptions, depth_json, "a depth map with its colour bar"),
    "segment": Endpoint("image-segmentation", NoOptions, segment_json, "per-pixel classes and a legend"),
    "reconstruct": Endpoint("mae-reconstruction", ReconstructOptions, reconstruct_json,
                            "MAE: the image, masked, reconstructed", call_per_image=True),
}

# The endpoints each kind of checkpoint (`vitkit.infer.images.KINDS`) answers; attention wherever a ViT
# encoder sees the image.
ENDPOINTS_BY_KIND: dict[str, tuple[str, ...]] = {
    "classifier": ("classify", "attention"),
    "probe": ("classify", "attention"),
    "mae": ("reconstruct", "attention"),
    "depth": ("depth",),
    "segment": ("segment",),
    "encoder": ("attention",),
    "mpp": ("attention",),
}
