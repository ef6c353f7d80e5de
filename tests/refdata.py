"""Access to the reference vectors of the official UV-IDM code ($UVIDM_REFERENCE_DIR).

Everything a reference test needs comes from the files found there (cases, configs,
manifests, seeds), so that another reference set with other seeds and tiny configs passes
unchanged. Weights are regenerated with the protocol of that folder's README.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


def reference_dir() -> Path:
    return Path(os.environ.get("UVIDM_REFERENCE_DIR", REPO_ROOT.parent / "shared" / "reference"))


def require_case(name: str) -> None:
    """Skips the calling test when the reference set lacks this case."""
    if not (reference_dir() / f"{name}.json").is_file():
        pytest.skip(f"reference case {name!r} not found in {reference_dir()} (set UVIDM_REFERENCE_DIR)")


def case_meta(name: str) -> dict:
    require_case(name)
    return json.loads((reference_dir() / f"{name}.json").read_text())


def case_arrays(name: str) -> dict[str, np.ndarray]:
    require_case(name)
    with np.load(reference_dir() / f"{name}.npz") as data:
        return {key: data[key] for key in data.files}


def read_json(file_name: str):
    path = reference_dir() / file_name
    if not path.is_file():
        pytest.skip(f"{file_name} not found in {reference_dir()}")
    return json.loads(path.read_text())


def make_weights(manifest: list, seed: int) -> dict[str, torch.Tensor]:
    """The deterministic weight protocol of the reference README, verbatim."""
    rng = np.random.default_rng(seed)
    out: dict[str, torch.Tensor] = {}
    for name, shape, dtype in manifest:
        if dtype.startswith("int"):
            value = np.zeros(shape, dtype=np.int64)
        elif name.endswith("running_var"):
            value = 1.0 + 0.1 * rng.random(shape)
        elif name.endswith("running_mean"):
            value = 0.1 * rng.standard_normal(shape)
        elif len(shape) == 1 and name.endswith("weight"):
            value = 1.0 + 0.1 * rng.standard_normal(shape)
        elif len(shape) <= 1:
            value = 0.1 * rng.standard_normal(shape)
        else:
            value = rng.standard_normal(shape) / math.sqrt(np.prod(shape[1:]))
        if not dtype.startswith("int"):
            value = value.astype(np.float32)
        out[name] = torch.from_numpy(np.array(value))  # np.array keeps 0-d shapes
    return out


def case_weights(name: str, manifest_file: str | None = None, seed_key: str = "weight_seed"):
    """Protocol weights of a case, from its manifest and the seed stored in its json."""
    manifest = read_json(manifest_file or f"{name}_manifest.json")
    return make_weights(manifest, case_meta(name)[seed_key])


def relative_error(actual, expected) -> float:
    """max |actual - expected| / max |expected|, computed in float64."""
    actual = torch.as_tensor(actual).detach().double().cpu()
    expected = torch.as_tensor(expected).double()
    assert actual.shape == expected.shape, f"shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    scale = expected.abs().max().item()
    return (actual - expected).abs().max().item() / (scale if scale > 0 else 1.0)


def assert_close(actual, expected, rtol: float = 1e-4, what: str = "") -> None:
    err = relative_error(actual, expected)
    assert err <= rtol, f"{what}: relative error {err:.3g} > {rtol:g}"
