"""What a request carries: one image and the endpoint's options, read from a multipart form (an ``image``
file and option fields) or a JSON object (``{"image": "<base64>", ...options}``), and checked.

Every problem with the input raises `BadInput` (the app answers 422, 415 for a content type it does not
read) with a message that names the field; nothing here reveals a server path.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from collections.abc import Callable
from typing import Any

from PIL import Image

from ..data.decode import UnreadableImage, open_image

JSON_TYPE = "application/json"
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
DEFAULT_MAX_PIXELS = 25_000_000  # 5000 × 5000; a PNG of a few KB can claim far more (a decompression bomb)


class BadInput(Exception):
    """The request cannot be read as asked; `status` is 422 (bad value) or 415 (content type)."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


async def read_request(request: Any) -> tuple[bytes, dict[str, Any]]:
    """(the encoded image, the other fields) of a multipart/form or JSON request (a Starlette `Request`)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == JSON_TYPE:
        return await _read_json(request)
    if content_type in FORM_TYPES:
        return await _read_form(request)
    raise BadInput(f"send multipart/form-data (an 'image' file) or {JSON_TYPE} ({{\"image\": base64}}), "
                   f"not {content_type or 'a body without a content type'}", status=415)


async def _read_json(request: Any) -> tuple[bytes, dict[str, Any]]:
    try:
        body = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BadInput("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadInput('the JSON body must be an object: {"image": "<base64>", ...options}')
    encoded = body.pop("image", None)
    if not isinstance(encoded, str) or not encoded:
        raise BadInput("missing field 'image': a base64-encoded image file (a data: URL works too)")
    if encoded.startswith("data:") and "," in encoded:
        encoded = encoded.split(",", 1)[1]
    try:
        return base64.b64decode(encoded, validate=True), body
    except (binascii.Error, ValueError):
        raise BadInput("field 'image' is not valid base64") from None


async def _read_form(request: Any) -> tuple[bytes, dict[str, Any]]:
    from starlette.datastructures import UploadFile
    from starlette.formparsers import MultiPartException

    try:
        form = await request.form(max_files=1, max_fields=16)
    except MultiPartException as e:
        raise BadInput(f"the form cannot be read: {e.message}") from None
    fields: dict[str, Any] = {}
    image = None
    for name, value in form.multi_items():
        if name == "image":
            image = value
        elif isinstance(value, UploadFile):
            raise BadInput(f"field {name!r} is a file; only 'image' is")
        else:
            fields[name] = value
    if image is None:
        raise BadInput("missing field 'image': an image file")
    data = await image.read() if isinstance(image, UploadFile) else image.encode()
    return data, fields


def decode_upload(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS,
                  load: Callable[[bytes], Any] | None = None) -> Any:
    """Encoded image bytes → ``load(data)`` (default: an RGB Pillow image at full size), refusing more than
    `max_pixels` from the header, before anything is decoded.

    Raises:
        BadInput: empty, not an image, truncated, or too many pixels.
    """
    if not data:
        raise BadInput("the image is empty (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as header:  # reads the header only
            w, h = header.size
    except Image.DecompressionBombError:
        raise BadInput("the image has too many pixels (a possible decompression bomb)") from None
    except (Image.UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise BadInput("the image cannot be decoded: not an image format the server reads") from None
    if w * h > max_pixels:
        raise BadInput(f"the image is {w}×{h} = {w * h} pixels, more than the server's limit of {max_pixels}")
    try:
        return load(data) if load is not None else open_image(data, channels=3, name="the image")
    except UnreadableImage as e:
        raise BadInput(f"the image cannot be decoded: {e.reason}") from None


def fit_side(image: Image.Image, max_side: int) -> Image.Image:
    """`image` with its longer side at most `max_side` (bicubic, aspect kept); smaller images as they are.

    Endpoints that answer at the image's own size (overlays, depth) would otherwise hold a 25-MP image per
    queued request and answer with a PNG of that size."""
    w, h = image.size
    if max(w, h) <= max_side:
        return image
    scale = max_side / max(w, h)
    return image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BICUBIC)
