"""The conftest contains what a test changes in torch's process-wide state: in-process training's thread
count, the deterministic-algorithms switch and the default dtype do not reach the next test."""

from __future__ import annotations

from pathlib import Path

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


def test_torch_globals_do_not_leak_into_the_next_test(pytester):
    """The same two tests run twice in one session: under this conftest, then without it, where the leak shows
    (so the check in the second test is live)."""
    pytester.mkdir("a_with_conftest").joinpath("conftest.py").write_text(
        Path(__file__).with_name("conftest.py").read_text())
    pytester.path.joinpath("a_with_conftest", "test_guarded.py").write_text(INNER)
    pytester.mkdir("b_without").joinpath("test_bare.py").write_text(INNER)
    # named on the command line, so the conftest is an initial one (its --runslow option gets registered);
    # a subprocess, because in-process re-imports break torch
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "a_with_conftest", "b_without")
    result.assert_outcomes(passed=3, failed=1)
    assert [line.split()[1] for line in result.outlines if line.startswith("FAILED")] == [
        "b_without/test_bare.py::test_next_test_sees_the_defaults"]
