"""Shared test setup: slow tests run only with --runslow or VITKIT_SLOW=1; a fixed seed; torch's process-wide
settings restored after every test; vitkit's cache (ONNX exports) in a temporary folder, not the user's."""

from __future__ import annotations

import os

import pytest
import torch

pytest_plugins = ("pytester",)  # tests/test_ci_isolation.py runs this conftest in an inner session


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", help="run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not torch.cuda.is_available():
        no_gpu = pytest.mark.skip(reason="cuda: no CUDA GPU here")
        for item in items:
            if "cuda" in item.keywords:
                item.add_marker(no_gpu)
    if config.getoption("--runslow") or os.environ.get("VITKIT_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow or VITKIT_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True, scope="session")
def _vitkit_cache(tmp_path_factory):
    """``VITKIT_CACHE`` in a temporary folder for the whole session (module fixtures export into it too)."""
    before = os.environ.get("VITKIT_CACHE")
    os.environ["VITKIT_CACHE"] = str(tmp_path_factory.mktemp("vitkit_cache"))
    yield
    if before is None:
        os.environ.pop("VITKIT_CACHE", None)
    else:
        os.environ["VITKIT_CACHE"] = before


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _restore_torch_globals():
    """Put back torch's thread count, deterministic-algorithms switch and default dtype after each test.

    In-process training sets one thread for small models (`vitkit.engine.run.set_cpu_threads`); left in place,
    it would slow down, and change the numerics of, every later test in the session.
    """
    threads, dtype = torch.get_num_threads(), torch.get_default_dtype()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
    torch.set_default_dtype(dtype)
