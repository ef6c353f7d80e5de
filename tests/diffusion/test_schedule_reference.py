"""Case `schedule`: DDPM.register_schedule buffers and DDIMSampler.make_schedule parameters.

Every `out_*` array of schedule.npz is checked: `out_<buffer>` against `linear_schedule(...)`,
`out_ddim_<field>_eta<k>` against `ddim_schedule(..., eta=k)`. These are deterministic
computations; the implementation reproduces them bit for bit here. The tolerance (elementwise,
1e-6 relative, i.e. a few float32 ulps, no absolute slack) only leaves room for torch's vectorised
float32 sqrt, which the official code also uses and which is not correctly rounded on every CPU.
Integer arrays and dtypes must match exactly.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import refdata
import torch

from uvidm_backend.diffusion import PERSISTENT_BUFFERS, DiffusionSchedule, ddim_schedule, linear_schedule

pytestmark = pytest.mark.reference

CASE = "schedule"
RTOL = 1e-6
_DDIM_KEY = re.compile(r"^out_ddim_(?P<field>.+)_eta(?P<eta>[0-9][0-9p.]*)$")


def _schedule_kwargs(meta: dict) -> dict:
    """linear_schedule arguments named in the case's `call` text (defaults where absent)."""
    kwargs = {}
    for name, cast in (("linear_start", float), ("linear_end", float), ("timesteps", int)):
        match = re.search(rf"\b{name}\s*=\s*([0-9.eE+-]+)", meta.get("call", ""))
        if match:
            kwargs[name] = cast(match.group(1))
    return kwargs


def _eta(text: str) -> float:
    return float(text.replace("p", "."))


def _ddim_steps(meta: dict, arrays: dict) -> int:
    if "ddim_steps" in meta:
        return int(meta["ddim_steps"])
    timesteps = [v for k, v in arrays.items() if k.startswith("out_ddim_timesteps_")]
    return len(timesteps[0])


def _check(actual: torch.Tensor, expected: np.ndarray, what: str) -> None:
    actual_np = actual.detach().cpu().numpy()
    assert actual_np.dtype == expected.dtype, f"{what}: dtype {actual_np.dtype} != {expected.dtype}"
    assert actual_np.shape == expected.shape, f"{what}: shape {actual_np.shape} != {expected.shape}"
    if np.issubdtype(expected.dtype, np.integer):
        np.testing.assert_array_equal(actual_np, expected, err_msg=what)
    else:
        np.testing.assert_allclose(actual_np, expected, rtol=RTOL, atol=0, err_msg=what)


@pytest.fixture(scope="module")
def case():
    meta = refdata.case_meta(CASE)
    return meta, refdata.case_arrays(CASE), linear_schedule(**_schedule_kwargs(meta))


def test_every_output_is_covered(case):
    _, arrays, schedule = case
    for key in arrays:
        if not key.startswith("out_"):
            continue
        match = _DDIM_KEY.match(key)
        name = match.group("field") if match else key[len("out_"):]
        owner = "DDIMSchedule" if match else "DiffusionSchedule"
        fields = ddim_schedule(schedule, 2).__dataclass_fields__ if match else schedule.__dataclass_fields__
        assert name in fields, f"{key}: no {owner} field {name!r}"


def test_ddpm_buffers(case):
    _, arrays, schedule = case
    keys = [k for k in arrays if k.startswith("out_") and not _DDIM_KEY.match(k)]
    assert keys
    for key in keys:
        _check(getattr(schedule, key[len("out_"):]), arrays[key], key)


def test_ddim_parameters(case):
    meta, arrays, schedule = case
    steps = _ddim_steps(meta, arrays)
    by_eta: dict[str, list[str]] = {}
    for key in arrays:
        match = _DDIM_KEY.match(key)
        if match:
            by_eta.setdefault(match.group("eta"), []).append(key)
    assert by_eta
    for eta_text, keys in by_eta.items():
        ddim = ddim_schedule(schedule, steps, eta=_eta(eta_text))
        for key in keys:
            _check(getattr(ddim, _DDIM_KEY.match(key).group("field")), arrays[key], key)


def test_persistent_buffer_names(case):
    meta, _, schedule = case
    if "persistent_buffers" in meta:
        assert list(schedule.buffers()) == list(meta["persistent_buffers"])
    for name in meta.get("non_persistent", []):
        assert name not in schedule.buffers() and hasattr(schedule, name)


def test_buffers_match_checkpoint_layout(case):
    """The schedule buffers are exactly the top-level float32 (T,) keys of ldm.ckpt (bar scale_factor)."""
    _, _, schedule = case
    entries = refdata.read_json("ldm_checkpoint_manifest.json")["entries"]
    top = {e["key"]: e for e in entries if "." not in e["key"] and e["key"] in PERSISTENT_BUFFERS}
    assert set(top) == set(PERSISTENT_BUFFERS)
    for name, tensor in schedule.buffers().items():
        assert list(tensor.shape) == top[name]["shape"], name
        assert str(tensor.dtype).removeprefix("torch.") == top[name]["dtype"], name


def test_from_buffers_roundtrip(case):
    """Rebuilding from checkpoint buffers keeps them; lvlb_weights (unused at inference) then come
    from float32 betas instead of float64 ones, which moves a few entries by one float32 ulp."""
    _, arrays, schedule = case
    rebuilt = DiffusionSchedule.from_buffers(schedule.buffers())
    for name in PERSISTENT_BUFFERS:
        assert torch.equal(getattr(rebuilt, name), getattr(schedule, name)), name
    if "out_lvlb_weights" in arrays:
        _check(rebuilt.lvlb_weights, arrays["out_lvlb_weights"], "lvlb_weights from buffers")
