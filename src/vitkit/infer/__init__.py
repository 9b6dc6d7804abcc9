"""Inference with a trained or converted model: `vitkit eval`, `predict`, `depth` and `segment` as library
calls (`images`: classifiers and the image-file plumbing every command shares; `dense`: DPT predictions)."""
