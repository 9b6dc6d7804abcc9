"""One-call inference: `vitkit.pipeline(task, checkpoint)` loads a model once and turns images into plain
results (Python numbers, strings and numpy arrays; no tensors).

    pipe = vitkit.pipeline("image-classification", "runs/cls")
    pipe("cat.jpg")                       # [{"label": "cat", "index": 3, "score": 0.91}, ...]  (top 5)
    pipe([Image.open("a.png"), array], top_k=1)   # one result per image
    pipe.describe()                       # what the model is and how it reads images (JSON-serialisable)

Tasks (`TASKS`): image-classification (here), depth-estimation and image-segmentation (`infer.dense`),
mae-reconstruction (`viz.reconstruction`), attention (`viz.overlays`). Every pipeline preprocesses with
`transforms_for` (the checkpoint's saved preprocessing), batches by `batch_size`, and runs under
`torch.inference_mode` on `device`; ``dtype=torch.bfloat16`` (or ``"bfloat16"``) runs under bf16 autocast,
the default keeps fp32. Accepted images: see `infer.preprocess.INPUTS`.

``engine="onnx"`` (image-classification only, fp32) runs the model through onnxruntime instead of torch: the
model is exported once to an ONNX file cached by its config and weights (`infer.onnx.onnx_engine`), and
images get the same preprocessing and results in the same format. An ``.onnx`` file `vitkit export` wrote can
be given instead of a checkpoint (image-classification): onnxruntime runs it, no torch model is built.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..engine.distributed import resolve_device
from ..errors import UsageError, require
from .preprocess import INPUTS, Preprocess, split_inputs, transforms_for, vision_encoder

ENGINES = ("torch", "onnx")
TASKS = ("image-classification", "depth-estimation", "image-segmentation", "mae-reconstruction", "attention")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """None → float32; a name or torch dtype among `DTYPES` (float16 on CUDA only)."""
    if dtype is None:
        return torch.float32
    name = dtype if isinstance(dtype, str) else str(dtype).removeprefix("torch.")
    require(name in DTYPES, f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    require(name != "float16" or device.type == "cuda", "dtype float16 runs on CUDA only; use bfloat16")
    return DTYPES[name]


class Pipeline:
    """A model loaded once, with its preprocessing, on a device; call it on images (see the module docstring).

    Subclasses set `task`, `kinds` (the `infer.images.KINDS` they take), `wanted` (what they need, for the
    refusal message), `defaults` (their call options) and implement `_run`.
    """

    task: ClassVar[str]
    kinds: ClassVar[tuple[str, ...]]
    wanted: ClassVar[str]
    defaults: ClassVar[dict[str, Any]] = {}
    engine: str = "torch"  # what runs the model (`ENGINES`)

    def __init__(self, model: nn.Module, *, device: str | torch.device = "auto",
                 dtype: str | torch.dtype | None = None, batch_size: int = 8, path: str | Path | None = None,
                 **options: Any) -> None:
        from .images import describe_model, model_kind

        if model_kind(model) not in self.kinds:
            raise UsageError(f"{self.task} needs {self.wanted}, not {describe_model(model)[0]}")
        require(batch_size >= 1, f"batch_size must be ≥ 1 (got {batch_size})")
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.model = model.to(self.device).eval()
        self.batch_size = batch_size
        self.path = None if path is None else Path(path)
        self.preprocess: Preprocess = transforms_for(model)
        self.options = self._options(options)

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, **kwargs: Any) -> Pipeline:
        """Load what a ``--checkpoint`` value names (refusing a model of another kind), then build."""
        from .images import load_model_for

        model, path = load_model_for(checkpoint, cls.kinds, cls.wanted)
        return cls(model, path=path, **kwargs)

    # ---- calling -------------------------------------------------------------------------------------------
    def __call__(self, inputs: Any, **options: Any) -> Any:
        """One image → one result; a list (or a 4-D array/tensor) → a list of results, in order."""
        images, single = split_inputs(inputs)
        require(bool(images), f"no images given; give {INPUTS}")
        opts = self._options({**self.options, **options})
        results: list[Any] = []
        for start in range(0, len(images), self.batch_size):
            results += self._run(images[start:start + self.batch_size], opts, start)
        return results[0] if single else results

    def _options(self, options: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(options) - set(self.defaults))
        require(not unknown, f"{self.task} takes no option {', '.join(unknown)}; its options: "
                f"{', '.join(f'{k}={v!r}' for k, v in self.defaults.items()) or 'none'}")
        return {**self.defaults, **options}

    def _run(self, images: Sequence[Any], options: dict[str, Any], first: int) -> list[Any]:
        """Results for one batch of at most `batch_size` images, the first being image `first` of the call."""
        raise NotImplementedError

    @contextmanager
    def running(self) -> Iterator[None]:
        """inference_mode, and autocast when `dtype` asks for it."""
        amp = self.dtype != torch.float32
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=self.dtype, enabled=amp):
            yield

    def model_inputs(self, images: Sequence[Any]) -> Tensor:
        """Images → the normalised batch (B, C, H, W) on `device`."""
        return self.preprocess(list(images)).to(self.device, non_blocking=True)

    # ---- describing ----------------------------------------------------------------------------------------
    def labels(self) -> list[str]:
        """The name of each output class ("class N" where the checkpoint names none); [] without classes."""
        return []

    def describe(self) -> dict[str, Any]:
        """What the model is and how it reads images, as plain JSON-serialisable data."""
        from .images import KINDS, model_kind

        encoder = vision_encoder(self.model)
        kind = model_kind(self.model)
        return {"task": self.task, "name": type(self.model).__name__, "kind": kind, "what": KINDS[kind][0],
                "checkpoint": None if self.path is None else str(self.path),
                "parameters": sum(p.numel() for p in self.model.parameters()),
                "image_size": list(self.preprocess.image_size), "patch_size": encoder.patch_size,
                "device": str(self.device), "engine": self.engine,
                "dtype": str(self.dtype).removeprefix("torch."),
                "batch_size": self.batch_size, "labels": self.labels(),
                "preprocessing": self.preprocess.to_dict(), "options": dict(self.options)}


def top_classes(logits: Tensor, label_names: Sequence[str], top_k: int) -> list[list[dict[str, Any]]]:
    """Logits (B, K) → per image its `top_k` classes ``{"label", "index", "score"}`` (softmax, best first)."""
    require(isinstance(top_k, int) and top_k >= 1, f"top_k must be an integer ≥ 1 (got {top_k!r})")
    probs = logits.float().softmax(-1).cpu()  # (B, K)
    top = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
    return [[{"label": label_names[i], "index": i, "score": p} for p, i in zip(values, indices, strict=True)]
            for values, indices in zip(top.values.tolist(), top.indices.tolist(), strict=True)]


def class_names(names: Sequence[str], num_classes: int) -> list[str]:
    """`names` when there is one per class, else "class N"."""
    return list(names) if len(names) == num_classes else [f"class {i}" for i in range(num_classes)]


class ClassificationPipeline(Pipeline):
    """image-classification: each image → its `top_k` classes, ``{"label", "index", "score"}`` (softmax
    probabilities, highest first). A linear probe is folded into a plain classifier."""

    task = "image-classification"
    kinds = ("classifier", "probe")
    wanted = "a classifier (a ViT with a head, or a linear probe)"
    defaults = {"top_k": 5}

    def __init__(self, model: nn.Module, *, label_names: Sequence[str] | None = None, engine: str = "torch",
                 **kwargs: Any) -> None:
        """`label_names`: one name per class, instead of the checkpoint's (`saved_label_names`). `engine`:
        torch runs the model itself; onnx runs its cached ONNX export in onnxruntime (`onnx_engine`)."""
        from ..models.probe import LinearProbe
        from .images import saved_label_names

        if isinstance(model, LinearProbe):
            model = model.to_classifier()
        super().__init__(model, **kwargs)
        k = self.model.config.num_classes
        names = saved_label_names(self.model, self.path) if label_names is None else list(label_names)
        require(label_names is None or len(names) == k, f"label_names has {len(names)} names for {k} classes")
        self.label_names = class_names(names, k)
        require(engine in ENGINES, f"engine {engine!r} is not one of {', '.join(ENGINES)}")
        self.engine = engine
        self.logits: Callable[[Tensor], Tensor] = self.model  # images (B, C, H, W) → logits (B, K)
        if engine == "onnx":
            from .onnx import onnx_engine

            self.logits = onnx_engine(self.model, self.device, self.dtype).forward

    def labels(self) -> list[str]:
        return list(self.label_names)

    def _run(self, images: Sequence[Any], options: dict[str, Any], first: int) -> list[Any]:
        with self.running():
            logits = self.logits(self.model_inputs(images))
        return top_classes(logits, self.label_names, options["top_k"])


def _pipeline_class(task: str) -> type[Pipeline]:
    if task == "image-classification":
        return ClassificationPipeline
    if task in ("depth-estimation", "image-segmentation"):
        from .dense import DepthPipeline, SegmentationPipeline

        return DepthPipeline if task == "depth-estimation" else SegmentationPipeline
    if task == "mae-reconstruction":
        from ..viz.reconstruction import ReconstructionPipeline

        return ReconstructionPipeline
    if task == "attention":
        from ..viz.overlays import AttentionPipeline

        return AttentionPipeline
    raise UsageError(f"unknown task {task!r}; one of {', '.join(TASKS)}")


def pipeline(task: str, checkpoint: str | Path | nn.Module, *, device: str | torch.device = "auto",
             dtype: str | torch.dtype | None = None, batch_size: int = 8, engine: str = "torch",
             **task_options: Any) -> Pipeline:
    """A `Pipeline` for `task` (one of `TASKS`) on a model, or a checkpoint (anything ``--checkpoint`` takes:
    a run directory, a checkpoint directory or file, an HF directory, or for image-classification an exported
    ``.onnx`` file); `task_options` become the defaults of every call (e.g. ``top_k=3``). `engine`
    (`ENGINES`): onnx runs image-classification in onnxruntime."""
    cls = _pipeline_class(task)
    kwargs = dict(device=device, dtype=dtype, batch_size=batch_size, **task_options)
    if engine != "torch":
        require(cls is ClassificationPipeline, f"engine={engine!r} runs image-classification only; "
                f"{task} runs on torch (engine='torch')")
        kwargs["engine"] = engine
    if isinstance(checkpoint, nn.Module):
        return cls(checkpoint, **kwargs)
    if Path(checkpoint).suffix == ".onnx":
        return onnx_file_pipeline(task, Path(checkpoint), device, dtype, batch_size, task_options)
    return cls.from_checkpoint(checkpoint, **kwargs)


def onnx_file_pipeline(task: str, path: Path, device: str | torch.device, dtype: str | torch.dtype | None,
                       batch_size: int, options: dict[str, Any]) -> Any:
    """An ONNX file `vitkit export` wrote, as an image-classification pipeline run by onnxruntime
    (`infer.onnx.OnnxClassifier`: same inputs, same results, no torch model)."""
    from .onnx import OnnxClassifier

    require(task == "image-classification", f"{path} is an ONNX file: vitkit.pipeline runs ONNX files for "
            f"image-classification only; for {task}, give the checkpoint it was exported from")
    require(resolve_dtype(dtype, torch.device("cpu")) == torch.float32,
            f"an ONNX file runs in float32 only, not {dtype}")
    unknown = sorted(set(options) - set(ClassificationPipeline.defaults))
    require(not unknown, f"image-classification takes no option {', '.join(unknown)}; its options: top_k=5")
    return OnnxClassifier(path, device=str(device), batch_size=batch_size, **options)

