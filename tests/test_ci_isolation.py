"""The conftest contains what a test changes in torch's process-wide state: in-process training's thread
count, the deterministic-algorithms switch and the default dtype do not reach the next test."""

from __future__ import annotations

from pathlib import Path

import pytest

INNER = """
import torch

from vitkit.cli.main import main

torch.set_num_threads(3)  # the session's setting: not 1, so the leak shows on any machine


def test_train_in_process(tmp_path):
    code = main(["train", "--out", str(tmp_path), "--epochs", "1", "--batch-size", "64", "--model",
                 "vit_tiny_patch2_28", "--set", "data.image_size=8", "--set", "model_args.dim=16",
                 "--set", "model_args.depth=1", "--set", "model_args.num_heads=2", "--device", "cpu",
                 "--no-amp", "--set", "report=false"])
    assert code == 0
    assert torch.get_num_threads() == 1  # a model this small trains on one thread
    torch.use_deterministic_algorithms(True)
    torch.set_default_dtype(torch.float64)


def test_next_test_sees_the_defaults():
    assert torch.get_num_threads() == 3
    assert not torch.are_deterministic_algorithms_enabled()
    assert torch.get_default_dtype() == torch.float32
"""


@pytest.mark.parametrize("with_conftest", [True, False])
def test_torch_globals_do_not_leak_into_the_next_test(pytester, with_conftest):
    if with_conftest:
        pytester.makeconftest(Path(__file__).with_name("conftest.py").read_text())
    pytester.makepyfile(test_inner=INNER)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")  # in-process re-imports break torch
    # without the fixture the leak shows: the check in the second test is live
    result.assert_outcomes(passed=2) if with_conftest else result.assert_outcomes(passed=1, failed=1)
