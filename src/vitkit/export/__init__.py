"""Export vitkit models to deployment formats (ONNX); `vitkit export` is the command line."""

from .onnx import FORMATS, export_onnx, onnx_max_abs_diff, read_onnx_metadata

__all__ = ["FORMATS", "export_onnx", "onnx_max_abs_diff", "read_onnx_metadata"]
