"""Typed configs: dataclasses that merge overrides with type checks and round-trip through JSON/YAML.

Every model, objective and run config in vitkit is a dataclass. `replace_config` is the single way overrides
(keyword arguments, ``--set key=value`` strings, YAML mappings) are applied: nested dataclasses merge from
dicts, unknown keys raise an error that lists the valid ones, and values are checked against the field types.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar

C = TypeVar("C")


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict of a dataclass config (tuples become lists), ready for JSON or YAML."""
    if not dataclasses.is_dataclass(cfg):
        raise TypeError(f"expected a dataclass config, got {type(cfg).__name__}")
    return _plain(dataclasses.asdict(cfg))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def flatten_config(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``."""
    out: dict[str, Any] = {}
    for k, v in data.items():
        if isinstance(v, dict):
            out.update(flatten_config(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
    """Build dataclass `cls` from a (possibly partial) mapping, defaults filling the rest."""
    return replace_config(_default_instance(cls), data)


def _default_instance(cls: type[C]) -> C:
    try:
        return cls()
    except TypeError as e:
        raise TypeError(f"{cls.__name__} needs every field given: {e}") from None


def replace_config(cfg: C, overrides: Mapping[str, Any] | None = None, **kwargs: Any) -> C:
    """Return a copy of `cfg` with `overrides` applied, merging nested dataclasses and checking types.

    Keys may be dotted (``"encoder.dim"``) or nested mappings (``{"encoder": {"dim": 64}}``).

    Raises:
        KeyError: an unknown field, with the closest valid names.
        TypeError: a value that does not fit the field's annotated type.
    """
    merged: dict[str, Any] = {}
    for key, value in {**(overrides or {}), **kwargs}.items():
        head, _, rest = key.partition(".")
        part = {rest: value} if rest else value
        if head not in merged:
            merged[head] = dict(part) if isinstance(part, Mapping) else part  # a copy: callers' dicts stay
        elif isinstance(merged[head], dict) and isinstance(part, Mapping):
            merged[head] = {**merged[head], **part}  # "a.b" and {"a": {...}} both given: merge them
        else:
            raise TypeError(f"cannot set {key!r}: {head!r} was also given a whole value")
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    hints = typing.get_type_hints(type(cfg))
    changes: dict[str, Any] = {}
    for name, value in merged.items():
        if name not in fields:
            close = difflib.get_close_matches(name, fields, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else f"; valid: {', '.join(fields)}"
            raise KeyError(f"{type(cfg).__name__} has no field {name!r}{hint}")
        current = getattr(cfg, name)
        switches_kind = isinstance(value, Mapping) and value.get("kind", getattr(current, "kind", None)) != \
            getattr(current, "kind", None)
        if dataclasses.is_dataclass(current) and isinstance(value, Mapping) and not switches_kind:
            changes[name] = replace_config(current, value)
        else:
            changes[name] = _coerce(value, hints[name], f"{type(cfg).__name__}.{name}")
    return dataclasses.replace(cfg, **changes)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check `value` against type `hint`, converting lists to tuples and ints to floats where asked."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if isinstance(value, Mapping) and "kind" in value:  # a tagged union: the `kind` picks the member
            return _tagged_member(value, args, where)
        errors = []
        for option in args:
            try:
                return _coerce(value, option, where)
            except TypeError as e:
                errors.append(str(e))
        raise TypeError(f"{where}: {value!r} fits none of {hint}")
    if hint is type(None):
        if value is None:
            return None
        raise TypeError(f"{where}: expected None, got {value!r}")
    if origin is typing.Literal:
        if value in args:
            return value
        raise TypeError(f"{where}: {value!r} is not one of {list(args)}")
    if origin is tuple:
        if args == (int, int) and isinstance(value, int) and not isinstance(value, bool):
            return (value, value)  # a size pair given as one int: a square (image_size=384)
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"{where}: expected a sequence, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], where) for v in value)
        if len(args) != len(value):
            raise TypeError(f"{where}: expected {len(args)} items, got {len(value)}")
        return tuple(_coerce(v, a, where) for v, a in zip(value, args, strict=False))
    if origin in (list, dict):
        if not isinstance(value, origin):
            raise TypeError(f"{where}: expected {origin.__name__}, got {value!r}")
        return value
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if isinstance(value, Mapping):
            return config_from_dict(hint, value)
        raise TypeError(f"{where}: expected {hint.__name__} or a mapping, got {value!r}")
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(hint, type):
        if isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
            return value
        raise TypeError(f"{where}: expected {hint.__name__}, got {type(value).__name__} {value!r}")
    return value


def _tagged_member(value: Mapping[str, Any], options: tuple[Any, ...], where: str) -> Any:
    """Build the dataclass among `options` whose ``kind`` field (a Literal) admits ``value["kind"]``."""
    kinds: dict[Any, Any] = {}
    for option in options:
        if dataclasses.is_dataclass(option):
            hint = typing.get_type_hints(option).get("kind")
            kinds.update({k: option for k in typing.get_args(hint)})
    if value["kind"] not in kinds:
        raise TypeError(f"{where}.kind: {value['kind']!r} is not one of {list(kinds)}")
    return config_from_dict(kinds[value["kind"]], value)


def parse_set_items(items: list[str]) -> dict[str, Any]:
    """Parse ``key=value`` strings (values read as YAML scalars, so ``3``, ``1e-3``, ``true``, ``[1,2]``)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects key=value, got {item!r}")
        value = yaml.safe_load(raw)
        if isinstance(value, str) and _YAML11_MISSED_FLOAT.match(value.strip()):
            value = float(value)  # YAML 1.1 reads "1e-5" (no dot) as a string
        out[key.strip()] = value
    return out


_YAML11_MISSED_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


@dataclasses.dataclass
class PreprocessConfig:
    """How images must be prepared for a model's weights; saved in every checkpoint's config.

    mean/std are per channel on [0, 1] pixels; `label_names` index the classifier's outputs. `resize` is how
    an image of any shape reaches the model's (H, W) at evaluation (`vitkit.transforms_for` applies it):

    * ``"crop"`` (timm's eval transform, vitkit's own models): scale the shorter side to ``side / crop_pct``
      keeping the aspect ratio, then centre-crop (H, W); `crop_pct` 1.0 crops only what sticks out.
    * ``"squash"`` (HF image processors, models imported from HF): resize straight to H × W with Pillow at
      `interpolation`, ignoring the aspect ratio; `crop_pct` is unused.
    """

    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    interpolation: str = "bicubic"
    crop_pct: float = 1.0
    label_names: tuple[str, ...] = ()
    resize: Literal["crop", "squash"] = "crop"
