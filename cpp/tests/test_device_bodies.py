"""The bodies the CUDA kernels run, driven from CPU threads: cpp/tests/device_bodies/*.cc are
built with the host compiler against libcu++ (CCCL) and run here, so the device algorithms are
tested on machines without a GPU. Skipped, and reported, where no CCCL headers are found."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).parent
INCLUDE = HERE.parent / "include"


def cccl_dir() -> Path | None:
    """libcu++'s headers: $RECIS_CCCL_DIR, beside nvcc, or the usual CUDA install."""
    nvcc = shutil.which("nvcc")
    candidates = [os.environ.get("RECIS_CCCL_DIR", "")]
    if nvcc:
        candidates += [str(Path(nvcc).resolve().parent.parent / "include" / "cccl")]
    candidates += ["/usr/local/cuda/include/cccl"]
    return next((Path(c) for c in candidates if c and (Path(c) / "cuda" / "atomic").is_file()), None)


@pytest.mark.skipif(cccl_dir() is None, reason="needs libcu++ headers (CCCL: a CUDA toolkit or nvidia-cuda-cccl)")
@pytest.mark.parametrize("source", sorted(p.name for p in (HERE / "device_bodies").glob("*.cc")))
def test_device_bodies_on_cpu_threads(source, tmp_path):
    binary = tmp_path / "bodies"
    cxx = os.environ.get("CXX", "g++")
    flags = ["-std=c++17", "-O1", "-Wall", "-Wextra", "-Werror", "-pthread", f"-I{INCLUDE}", f"-I{cccl_dir()}"]
    subprocess.run(
        [cxx, *flags, str(HERE / "device_bodies" / source), "-o", str(binary)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    run = subprocess.run([str(binary)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.startswith("ok "), run.stdout + run.stderr
