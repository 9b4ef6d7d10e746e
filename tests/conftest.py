"""Shared fixtures and helpers of the test suite (python -m pytest -q tests).

Offline. Real-data checks run when BABI_DIR points at the bAbI `en` folder (.ci/run sets it)."""
import io
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the scripts' folder
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))                   # helpers.py

import babi_data  # noqa: E402
import memn2n  # noqa: E402
from helpers import result_of, write_task1_like  # noqa: E402


@pytest.fixture(scope="session")
def gen_dir(tmp_path_factory):
    return write_task1_like(tmp_path_factory.mktemp("babi_gen"), 300, seed=0)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """All 20 task files, each a small task-1-like set: enough for --joint and several tasks."""
    folder = tmp_path_factory.mktemp("babi_tiny")
    for t, name in babi_data.TASK_NAMES.items():
        write_task1_like(folder, 24, seed=t, name=f"qa{t}_{name}")
    return str(folder)


@pytest.fixture(scope="session")
def trained(gen_dir, tmp_path_factory):
    """A model trained in this process on the generated task 1: (its folder, its RESULT)."""
    tmp = tmp_path_factory.mktemp("trained")
    argv = ["--task", "1", "--data-dir", gen_dir, "--epochs", "15", "--ls-epochs", "5", "--seed", "3",
            "--save", str(tmp / "model"), "--logdir", str(tmp / "runs"), "--no-xla"]
    out = io.StringIO()
    real, sys.stdout = sys.stdout, out
    try:
        rc = memn2n.main(argv)
    finally:
        sys.stdout = real
    assert rc == 0
    return str(tmp / "model"), result_of(out.getvalue()), out.getvalue()
