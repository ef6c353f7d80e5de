"""`uvidm doctor`: what works on this machine, and what to do about what does not."""

from __future__ import annotations

import argparse
import importlib
import platform

from uvidm_backend.commands.common import add_model_folder_options, model_paths
from uvidm_backend.geometry.bfm_files import BARYCENTRIC_WEIGHT_FILE, FRONT_MASK_FILE, TRIANGLE_BUFFER_FILE
from uvidm_backend.registry import INSIGHTFACE_MODEL, ModelPaths


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("doctor", help="check torch, CUDA, nvdiffrast, insightface and the model files")
    add_model_folder_options(parser)
    parser.set_defaults(run=run_doctor)


def _module_version(name: str) -> str | None:
    try:
        module = importlib.import_module(name)
    except Exception:  # a broken install raises anything, not only ImportError
        return None
    return getattr(module, "__version__", "installed")


def checks(args: argparse.Namespace) -> list[tuple[bool, str, str]]:
    """(ok, what, advice) rows; ok=False rows are problems, advice says what to do."""
    import torch

    from uvidm_backend.devices import gpu_warning, pick_device

    rows = [(True, f"python {platform.python_version()}, torch {torch.__version__}", "")]
    device = pick_device("auto")
    warning = gpu_warning(device)
    if device.type == "cuda":
        rows.append((True, f"device: cuda, {torch.cuda.get_device_name(0)} (torch CUDA {torch.version.cuda})", ""))
    elif device.type == "mps":
        rows.append((True, "device: mps, the Apple GPU", ""))
    else:
        rows.append((warning is None, "device: cpu" + (f"; {warning}" if warning else
                                                       ", no GPU found (20-40 s a head on 2 cores, 0.3 s on an H200)"),
                     "install a CUDA build of torch: https://pytorch.org/get-started/locally/" if warning else ""))
    nvdiffrast = _module_version("nvdiffrast.torch")
    rows.append((nvdiffrast is not None,
                 "nvdiffrast: " + ("installed, used on CUDA" if nvdiffrast else "not installed; the PyTorch "
                                   "rasterizer is used instead (slower, same results)"),
                 "" if nvdiffrast else "pip install --no-build-isolation git+https://github.com/NVlabs/nvdiffrast"))
    insightface = _module_version("insightface")
    onnxruntime = _module_version("onnxruntime")
    detector_ok = insightface is not None and onnxruntime is not None
    rows.append((detector_ok,
                 f"face detection: insightface {insightface or 'missing'}, onnxruntime {onnxruntime or 'missing'}",
                 "" if detector_ok else "pip install insightface onnxruntime (or give five points with --landmarks)"))
    paths = model_paths(args)
    missing = paths.missing()
    rows.append((not missing,
                 "model files: " + ("all found" if not missing else "missing " + ", ".join(f.name for f in missing)),
                 "" if not missing else f"uvidm weights download --weights {paths.weights} --bfm {paths.bfm} "
                                       "(or --from DIR: an official release folder you have)"))
    rows += official_texture_files(paths)
    from uvidm_backend.pipeline.faces import LANDMARK_MODEL_FILE

    detector_dir = paths.insightface_root / "models" / INSIGHTFACE_MODEL
    rows.append((detector_dir.is_dir(), f"face detector {INSIGHTFACE_MODEL}: "
                 + ("found" if detector_dir.is_dir() else f"not in {detector_dir}"),
                 "" if detector_dir.is_dir() else "uvidm weights download (it puts buffalo_l in the model folder)"))
    if detector_dir.is_dir() and not (detector_dir / LANDMARK_MODEL_FILE).is_file():
        rows.append((False, f"68 landmarks: {LANDMARK_MODEL_FILE} is not in {detector_dir}; faces are aligned by "
                            "the detector's five points, not as the official preprocessing does",
                     f"delete {detector_dir} and run uvidm weights download"))
    return rows


def official_texture_files(paths: ModelPaths) -> list[tuple[bool, str, str]]:
    """Whether the official UV tables and front mask are there; without them the head still comes, but
    its condition (rebuilt tables) and its colours (footprint mask) differ from the official code's."""
    download = f"uvidm weights download --weights {paths.weights} --bfm {paths.bfm}"
    tables = all(paths.path(name).is_file() for name in (TRIANGLE_BUFFER_FILE, BARYCENTRIC_WEIGHT_FILE))
    mask = paths.path(FRONT_MASK_FILE).is_file()
    return [(tables, "UV tables: " + ("official (triangle_buffer.npy, barycentric_weight.npy)" if tables else
                                      "not in the BFM folder; rebuilt, which changes the condition and so the "
                                      "whole texture (result.json: texture.uv_tables = \"rebuilt\")"),
             "" if tables else download),
            (mask, "front mask: " + ("official (front_mask.png)" if mask else
                                     "front_mask.png not in the BFM folder; the colour match uses the front model's "
                                     "UV footprint (result.json: texture.front_mask = \"footprint\")"),
             "" if mask else download)]


def run_doctor(args: argparse.Namespace) -> int:
    rows = checks(args)
    for ok, what, advice in rows:
        print(f"[{'ok' if ok else '!!'}] {what}")
        if advice:
            print(f"     -> {advice}")
    # Only missing model files stop the pipeline; every other row has a fallback.
    return 1 if model_paths(args).missing() else 0
