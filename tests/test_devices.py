"""The device `auto` picks, and the warning for a GPU that torch cannot use (found with a real
`nvidia-smi` on the PATH: a script standing in for the driver's, as this machine has no GPU)."""

import os
import subprocess
import sys

import pytest
import torch

from uvidm_backend.devices import gpu_warning, pick_device


@pytest.fixture
def nvidia_smi(tmp_path, monkeypatch):
    script = tmp_path / "nvidia-smi"
    script.write_text("#!/bin/sh\necho 'NVIDIA-SMI 570.86.15  Driver Version: 570.86.15  CUDA Version: 12.8'\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    return tmp_path


def test_auto_takes_cuda_then_mps_then_cpu():
    expected = "cuda" if torch.cuda.is_available() else (
        "mps" if torch.backends.mps.is_available() else "cpu")
    assert pick_device("auto").type == expected
    assert pick_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="torch can use the GPU here")
def test_an_nvidia_gpu_that_torch_cannot_use_is_named(nvidia_smi):
    warning = gpu_warning("cpu")
    assert "NVIDIA GPU is present" in warning
    assert ("CPU-only build" in warning) == (torch.version.cuda is None)
    assert gpu_warning("cuda") is None
    doctor = subprocess.run([sys.executable, "-m", "uvidm_backend.cli", "doctor"], capture_output=True, text=True,
                            timeout=300, env=os.environ.copy())
    line = next(row for row in doctor.stdout.splitlines() if "device:" in row)
    assert line.startswith("[!!] device: cpu; an NVIDIA GPU is present"), doctor.stdout


def test_no_gpu_no_warning(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi anywhere
    if sys.platform != "darwin":
        assert gpu_warning("cpu") is None
