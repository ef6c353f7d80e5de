"""AutoencoderKL against the official reference vectors (cases vae_tiny and vae_full)."""

from __future__ import annotations

import pytest
import refdata
import torch

from uvidm_backend.models.autoencoder import AutoencoderConfig, AutoencoderKL

pytestmark = pytest.mark.reference

CASES = [pytest.param("vae_tiny"), pytest.param("vae_full", marks=pytest.mark.slow)]


@pytest.fixture(scope="module", params=CASES)
def case(request) -> tuple[str, AutoencoderKL]:
    """The case name and its model, built from `<case>_config.json`, with protocol weights loaded."""
    name = request.param
    config = AutoencoderConfig.from_dict(refdata.read_json(f"{name}_config.json"))
    model = AutoencoderKL(config).eval()
    model.load_state_dict(refdata.case_weights(name), strict=True)
    return name, model


def test_state_dict_layout_matches_manifest(case):
    name, model = case
    manifest = refdata.read_json(f"{name}_manifest.json")
    ours = [[key, list(value.shape), str(value.dtype).removeprefix("torch.")]
            for key, value in sorted(model.state_dict().items())]
    assert ours == manifest


def test_parameter_counts(case):
    """Every `param_count[_<part>]` of the case json, `<part>` being a submodule name."""
    name, model = case
    counts = {key: value for key, value in refdata.case_meta(name).items() if key.startswith("param_count")}
    assert counts, "case json has no param_count"
    for key, expected in counts.items():
        part = key.removeprefix("param_count").removeprefix("_")
        module = getattr(model, part) if part else model
        assert sum(p.numel() for p in module.parameters()) == expected, key


def test_outputs(case):
    """Every `out_*` array: `out_decode` = decode(in_z), `out_encode_<attr>` = encode(in_x).<attr>."""
    name, model = case
    arrays = refdata.case_arrays(name)
    outputs = sorted(key for key in arrays if key.startswith("out_"))
    assert outputs, "no outputs in the archive"
    posterior = None
    failures = []
    for key in outputs:
        what = key.removeprefix("out_")
        if what == "decode":
            actual = model.decode(torch.from_numpy(arrays["in_z"]))
        elif what.startswith("encode_"):
            if posterior is None:
                posterior = model.encode(torch.from_numpy(arrays["in_x"]))
            actual = getattr(posterior, what.removeprefix("encode_"))
            actual = actual() if callable(actual) else actual
        else:
            failures.append(f"{name}/{key}: not produced by the AutoencoderKL API")
            continue
        try:
            refdata.assert_close(actual, arrays[key], what=f"{name}/{key}")
        except AssertionError as error:
            failures.append(str(error))
    assert not failures, "\n".join(failures)
