"""Which torch device runs the pipeline, and whether a GPU sits unused.

`auto` takes an NVIDIA GPU (CUDA), then the Apple GPU (MPS), then the CPU. `gpu_warning` says when
the machine has a GPU that this torch build cannot use (a CPU-only wheel on a machine with an NVIDIA
driver, the usual reason for slow heads), found without torch: `nvidia-smi` on the PATH.
"""

from __future__ import annotations

import platform
import shutil

import torch


def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if mps_available() else "cpu")
    return torch.device(device)


def gpu_warning(device: str | torch.device) -> str | None:
    """Words for a GPU that is present but unused by the device in use (None when there is none)."""
    if torch.device(device).type != "cpu":
        return None
    if shutil.which("nvidia-smi") is not None:
        if torch.version.cuda is None:
            return (f"an NVIDIA GPU is present but this torch ({torch.__version__}) is a CPU-only build: install a "
                    "CUDA build of torch (the add-on's Set Up Environment picks one) for heads in a fraction of "
                    "the time")
        if not torch.cuda.is_available():
            return (f"an NVIDIA GPU is present but torch (CUDA {torch.version.cuda}) cannot use it: update the "
                    "NVIDIA driver or install a torch build for the driver's CUDA version")
        return "the NVIDIA GPU is usable but the CPU was chosen (--device cpu)"
    if platform.system() == "Darwin" and platform.machine() == "arm64":
        if mps_available():
            return "the Apple GPU is usable but the CPU was chosen (--device cpu)"
        return f"this Mac has an Apple GPU but torch {torch.__version__} cannot use it: reinstall torch"
    return None
