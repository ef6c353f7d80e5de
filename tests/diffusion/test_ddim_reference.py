"""Case `ddim_tiny`: the official DDIM loop (LatentDiffusion.sample_log + decode_first_stage) replayed.

The tiny UNet and VAE are built from `ddim_tiny_config.json`, filled with protocol weights from the
manifest that matches their state_dict and the seeds named in `ddim_tiny.json`; the official run's
noises (`in_noises_<k>`, one per step) are replayed through `sample_ddim`'s noise source, and every
UNet call (timestep, input latent, eps), the last pred_x0, the samples and the decoded image are
compared.
"""

from __future__ import annotations

import re

import pytest
import refdata
import torch

from uvidm_backend.diffusion import DDIMStep, ddim_schedule, linear_schedule, sample_ddim
from uvidm_backend.models.autoencoder import AutoencoderConfig, AutoencoderKL
from uvidm_backend.models.unet import UNetConfig, UNetModel

pytestmark = pytest.mark.reference

CASE = "ddim_tiny"
NOISE_PREFIX = "in_noises_"


def _seed(meta: dict, pattern: str) -> int:
    keys = [k for k in meta if k.endswith("weight_seed") and re.search(pattern, k)]
    assert len(keys) == 1, f"expected one weight seed matching {pattern!r} in {CASE}.json, got {keys}"
    return int(meta[keys[0]])


def _load_protocol_weights(model: torch.nn.Module, seed: int) -> None:
    """Loads the weights of the reference manifest whose entries are exactly this model's state_dict."""
    layout = [[name, list(t.shape), str(t.dtype).removeprefix("torch.")]
              for name, t in sorted(model.state_dict().items())]
    for path in sorted(refdata.reference_dir().glob("*_manifest.json")):
        manifest = refdata.read_json(path.name)
        if isinstance(manifest, list) and [list(e) for e in manifest] == layout:
            model.load_state_dict(refdata.make_weights(manifest, seed), strict=True)
            model.eval()
            return
    pytest.fail(f"no manifest in {refdata.reference_dir()} matches {type(model).__name__}'s state_dict")


def _schedule_kwargs(config: dict) -> dict:
    names = ("linear_start", "linear_end", "timesteps")
    return {name: config[name] for name in names if name in config}


@pytest.fixture(scope="module")
def case():
    meta = refdata.case_meta(CASE)
    config = refdata.read_json(f"{CASE}_config.json")
    assert config.get("beta_schedule", "linear") == "linear"
    unet = UNetModel(UNetConfig(**config["unet_config"]["params"]))
    _load_protocol_weights(unet, _seed(meta, "unet"))
    vae = AutoencoderKL(AutoencoderConfig.from_dict(config["first_stage_config"]["params"]))
    _load_protocol_weights(vae, _seed(meta, "vae|first_stage"))
    return meta, refdata.case_arrays(CASE), linear_schedule(**_schedule_kwargs(config)), unet, vae


def _runs(arrays: dict) -> list[str]:
    suffixes = [key[len(NOISE_PREFIX):] for key in arrays if key.startswith(NOISE_PREFIX)]
    assert suffixes, f"{CASE} has no {NOISE_PREFIX}* inputs"
    return suffixes


def _eta(suffix: str) -> float:
    match = re.fullmatch(r"eta([0-9][0-9p.]*)", suffix)
    assert match, f"cannot read eta from {suffix!r}"
    return float(match.group(1).replace("p", "."))


def _replay(eps_model, arrays: dict, suffix: str, ddim):
    """Runs sample_ddim on the case inputs with the official noises of run `suffix`, recording
    every model call as (t, x_in, eps) and every callback step."""
    noises = torch.from_numpy(arrays[NOISE_PREFIX + suffix])
    calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    steps: list[DDIMStep] = []

    def model(x, t, c):
        eps = eps_model(x, t, c, len(calls))
        calls.append((t.clone(), x.clone(), eps.clone()))
        return eps

    samples = sample_ddim(model, torch.from_numpy(arrays["in_x_T"]), torch.from_numpy(arrays["in_context"]),
                          ddim, noise=lambda i, like: noises[i].to(like), callback=steps.append)
    assert len(calls) == len(steps) == len(noises) == ddim.num_steps
    return calls, steps, samples


def test_ddim_tiny(case):
    meta, arrays, schedule, unet, vae = case
    # decode_first_stage: z = 1. / scale_factor * z, with scale_factor a float32 buffer.
    inv_scale = 1.0 / torch.tensor(meta["scale_factor"], dtype=torch.float32)
    for suffix in _runs(arrays):
        ddim = ddim_schedule(schedule, int(meta["steps"]), eta=_eta(suffix))
        calls, steps, samples = _replay(lambda x, t, c, k: unet(x, t, c), arrays, suffix, ddim)
        decoded = vae.decode(inv_scale * samples)

        if "n_ddim_timesteps" in meta:
            assert ddim.num_steps == meta["n_ddim_timesteps"]
        timesteps = torch.stack([t for t, _, _ in calls])
        expected_t = torch.from_numpy(arrays[f"out_step_timesteps_{suffix}"])
        assert timesteps.dtype == torch.int64
        assert torch.equal(timesteps, expected_t[:, None].expand_as(timesteps)), f"timesteps {suffix}"
        assert [s.t for s in steps] == expected_t.tolist()
        for i, (_, x_in, eps) in enumerate(calls):
            refdata.assert_close(x_in, arrays[f"out_step_x_in_{suffix}"][i], what=f"x_in {suffix} step {i}")
            refdata.assert_close(eps, arrays[f"out_step_eps_{suffix}"][i], what=f"eps {suffix} step {i}")
        refdata.assert_close(steps[-1].pred_x0, arrays[f"out_pred_x0_last_{suffix}"], what=f"pred_x0 {suffix}")
        refdata.assert_close(samples, arrays[f"out_samples_{suffix}"], what=f"samples {suffix}")
        refdata.assert_close(decoded, arrays[f"out_decoded_{suffix}"], what=f"decoded {suffix}")


def test_ddim_arithmetic_with_recorded_eps():
    """The sampler alone: fed the official eps of every step, it must retrace the official latents.

    This isolates the DDIM update (and its float32 scalars) from the UNet's rounding; it is bit
    exact on CPU, the 1e-6 bound only leaves room for a different float32 sqrt implementation.
    """
    meta = refdata.case_meta(CASE)
    arrays = refdata.case_arrays(CASE)
    schedule = linear_schedule(**_schedule_kwargs(refdata.read_json(f"{CASE}_config.json")))
    for suffix in _runs(arrays):
        ddim = ddim_schedule(schedule, int(meta["steps"]), eta=_eta(suffix))
        recorded = torch.from_numpy(arrays[f"out_step_eps_{suffix}"])
        calls, steps, samples = _replay(lambda x, t, c, k, eps=recorded: eps[k], arrays, suffix, ddim)
        for i, (_, x, _) in enumerate(calls):
            refdata.assert_close(x, arrays[f"out_step_x_in_{suffix}"][i], rtol=1e-6, what=f"x_in {suffix} step {i}")
        refdata.assert_close(steps[-1].pred_x0, arrays[f"out_pred_x0_last_{suffix}"], rtol=1e-6,
                             what=f"pred_x0 {suffix}")
        refdata.assert_close(samples, arrays[f"out_samples_{suffix}"], rtol=1e-6, what=f"samples {suffix}")
