"""Noise schedules of the official UV-IDM latent diffusion model, as pure functions.

`linear_schedule` reproduces `ldm.models.diffusion.ddpm.DDPM.register_schedule` (DDPM: Ho et al.,
"Denoising Diffusion Probabilistic Models", 2020) and `ddim_schedule` reproduces
`ldm.models.diffusion.ddim.DDIMSampler.make_schedule` (DDIM: Song et al., "Denoising Diffusion
Implicit Models", ICLR 2021, eq. 12 and 16), bit for bit, including the precision quirks of the
official code: the DDPM buffers are computed in float64 NumPy and rounded to float32 once, while
the DDIM parameters mix float32 tensors and float64 arrays (see `ddim_schedule`).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, fields

import numpy as np
import torch

# Official yaml (configs/latent-diffusion/uvffhq-ldm-kl-4.yaml) schedule parameters.
LINEAR_START = 0.0015
LINEAR_END = 0.0155
NUM_TIMESTEPS = 1000

#: Names of the persistent buffers of `DDPM.register_schedule`, i.e. the top-level schedule keys of
#: `ldm.ckpt` (`lvlb_weights` is a non-persistent buffer and is not stored).
PERSISTENT_BUFFERS: tuple[str, ...] = (
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
)


@dataclass(frozen=True, eq=False)
class DiffusionSchedule:
    """The buffers of `DDPM.register_schedule` (eps parameterisation, `v_posterior = 0`).

    Every field is a (T,) float32 CPU tensor named exactly as the official buffer, so
    `buffers()` maps one-to-one onto the top-level schedule keys of an official checkpoint.
    """

    betas: torch.Tensor
    alphas_cumprod: torch.Tensor
    alphas_cumprod_prev: torch.Tensor
    sqrt_alphas_cumprod: torch.Tensor
    sqrt_one_minus_alphas_cumprod: torch.Tensor
    log_one_minus_alphas_cumprod: torch.Tensor
    sqrt_recip_alphas_cumprod: torch.Tensor
    sqrt_recipm1_alphas_cumprod: torch.Tensor
    posterior_variance: torch.Tensor
    posterior_log_variance_clipped: torch.Tensor
    posterior_mean_coef1: torch.Tensor
    posterior_mean_coef2: torch.Tensor
    lvlb_weights: torch.Tensor

    @property
    def num_timesteps(self) -> int:
        return int(self.betas.shape[0])

    def buffers(self) -> dict[str, torch.Tensor]:
        """The 12 persistent buffers, keyed by their checkpoint names."""
        return {name: getattr(self, name) for name in PERSISTENT_BUFFERS}

    @classmethod
    def from_buffers(cls, buffers: Mapping[str, torch.Tensor]) -> DiffusionSchedule:
        """Builds the schedule from checkpoint buffers (e.g. the top-level keys of `ldm.ckpt`).

        Missing names raise KeyError. `lvlb_weights` (not stored) is recomputed as the official
        code does, but from float32 betas, so a few entries may differ by one float32 ulp.
        """
        values = {name: torch.as_tensor(buffers[name]).detach().to("cpu", torch.float32)
                  for name in PERSISTENT_BUFFERS}
        alphas = (1.0 - values["betas"].double()).float()
        return cls(**values, lvlb_weights=_lvlb_weights(values, alphas))


def _lvlb_weights(buffers: Mapping[str, torch.Tensor], alphas: torch.Tensor) -> torch.Tensor:
    # register_schedule computes these in float32 torch from the already rounded buffers;
    # lvlb[0] is inf (posterior variance 0) and is replaced by lvlb[1].
    lvlb = buffers["betas"] ** 2 / (
        2 * buffers["posterior_variance"] * alphas * (1 - buffers["alphas_cumprod"]))
    lvlb[0] = lvlb[1]
    return lvlb


def linear_schedule(linear_start: float = LINEAR_START, linear_end: float = LINEAR_END,
                    timesteps: int = NUM_TIMESTEPS) -> DiffusionSchedule:
    """`register_schedule(beta_schedule='linear', ...)`: betas linear in sqrt space.

    All quantities are derived in float64 and rounded to float32 once, as the official code does.
    """
    # make_beta_schedule uses torch.linspace in float64, then .numpy().
    betas = torch.linspace(linear_start**0.5, linear_end**0.5, timesteps, dtype=torch.float64).numpy() ** 2
    alphas = 1.0 - betas
    alphas_cumprod = np.cumprod(alphas, axis=0)
    alphas_cumprod_prev = np.append(1.0, alphas_cumprod[:-1])
    # v_posterior = 0: the posterior variance of q(x_{t-1} | x_t, x_0) (DDPM eq. 7).
    posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
    values64 = {
        "betas": betas,
        "alphas_cumprod": alphas_cumprod,
        "alphas_cumprod_prev": alphas_cumprod_prev,
        "sqrt_alphas_cumprod": np.sqrt(alphas_cumprod),
        "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - alphas_cumprod),
        "log_one_minus_alphas_cumprod": np.log(1.0 - alphas_cumprod),
        "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / alphas_cumprod),
        "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / alphas_cumprod - 1),
        "posterior_variance": posterior_variance,
        # The posterior variance is 0 at t = 0, hence the clipping before the log.
        "posterior_log_variance_clipped": np.log(np.maximum(posterior_variance, 1e-20)),
        "posterior_mean_coef1": betas * np.sqrt(alphas_cumprod_prev) / (1.0 - alphas_cumprod),
        "posterior_mean_coef2": (1.0 - alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - alphas_cumprod),
    }
    buffers = {name: torch.tensor(value, dtype=torch.float32) for name, value in values64.items()}
    lvlb = _lvlb_weights(buffers, torch.tensor(alphas, dtype=torch.float32))
    return DiffusionSchedule(**buffers, lvlb_weights=lvlb)


@dataclass(frozen=True, eq=False)
class DDIMSchedule:
    """The sampling parameters of `DDIMSampler.make_schedule`, index i = i-th DDIM timestep (ascending).

    Dtypes are those of the official code (it samples with float32 copies of each scalar):
    `timesteps` int64, `alphas` float32, `alphas_prev` float64 holding float32 values (a NumPy
    array there), `sigmas` float64, `sqrt_one_minus_alphas` float32,
    `sigmas_for_original_num_steps` (T,) float32 (only used by the official `use_original_steps`).
    """

    timesteps: torch.Tensor
    alphas: torch.Tensor
    alphas_prev: torch.Tensor
    sigmas: torch.Tensor
    sqrt_one_minus_alphas: torch.Tensor
    sigmas_for_original_num_steps: torch.Tensor
    eta: float

    @property
    def num_steps(self) -> int:
        """Number of UNet evaluations; can exceed the requested step count (see `ddim_timesteps`)."""
        return int(self.timesteps.shape[0])

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, torch.Tensor) and field.name != "sigmas_for_original_num_steps":
                if value.shape != (self.timesteps.shape[0],):
                    raise ValueError(f"{field.name} has shape {tuple(value.shape)}, "
                                     f"expected ({self.timesteps.shape[0]},)")


def ddim_timesteps(steps: int, num_timesteps: int = NUM_TIMESTEPS, discretize: str = "uniform") -> torch.Tensor:
    """`make_ddim_timesteps` (ldm/modules/diffusionmodules/util.py), ascending, int64.

    'uniform' is `range(0, T, T // steps) + 1`: it yields MORE than `steps` timesteps when `steps`
    does not divide T (30 → 31, 7 → 8), and its smallest timestep is 1, not 0.
    """
    if not 0 < steps <= num_timesteps:
        raise ValueError(f"steps must be in [1, {num_timesteps}], got {steps}")
    if discretize == "uniform":
        ts = np.arange(0, num_timesteps, num_timesteps // steps, dtype=np.int64)
    elif discretize == "quad":
        ts = (np.linspace(0, np.sqrt(num_timesteps * 0.8), steps) ** 2).astype(np.int64)
    else:
        raise ValueError(f"unknown DDIM discretisation {discretize!r} (expected 'uniform' or 'quad')")
    ts = ts + 1
    if ts[-1] >= num_timesteps:
        # e.g. steps > T / 2 with 'uniform': the official code fails with an IndexError there too.
        raise ValueError(f"{steps} {discretize} DDIM steps reach t = {ts[-1]} >= T = {num_timesteps}")
    return torch.from_numpy(ts)


@functools.lru_cache(maxsize=32)  # schedules are immutable; the samplers keep their tables per schedule object
def ddim_schedule(schedule: DiffusionSchedule, steps: int = 50, eta: float = 1.0,
                  discretize: str = "uniform") -> DDIMSchedule:
    """`DDIMSampler.make_schedule(steps, discretize, eta)` with its mixed precision, bit for bit.

    sigma_i = eta * sqrt((1 - a_prev) / (1 - a) * (1 - a / a_prev)) (DDIM eq. 16). In the official
    `make_ddim_sampling_parameters`, `a` is a float32 tensor and `a_prev` a float64 NumPy array, so
    `ndarray / tensor` runs `Tensor.__rdiv__` = `(1 - a).reciprocal() * (1 - a_prev)`: the
    reciprocal is rounded to float32 before the float64 arithmetic, and the square roots are
    NumPy's (correctly rounded; torch's vectorised CPU sqrt is not always). Reproduced here.
    """
    ac = schedule.alphas_cumprod.to("cpu", torch.float32)
    ts = ddim_timesteps(steps, ac.shape[0], discretize)
    alphas = ac[ts].numpy()
    # alphas_prev[0] is alphas_cumprod[0] (0.9985 for the yaml schedule), not 1.
    alphas_prev = np.concatenate([ac[:1].numpy(), alphas[:-1]]).astype(np.float64)
    # float64 division then rounding to float32 equals the correctly rounded float32 reciprocal.
    recip_one_minus_a = (1.0 / (1.0 - alphas).astype(np.float64)).astype(np.float32).astype(np.float64)
    sigmas = eta * np.sqrt(recip_one_minus_a * (1.0 - alphas_prev) * (1.0 - alphas.astype(np.float64) / alphas_prev))
    sqrt_one_minus_alphas = np.sqrt(1.0 - alphas)  # float32, as np.sqrt(1. - ddim_alphas)
    # Computed with torch float32 ops in the official code (only used with use_original_steps).
    acp = schedule.alphas_cumprod_prev.to("cpu", torch.float32)
    sigmas_original = eta * torch.sqrt((1 - acp) / (1 - ac) * (1 - ac / acp))
    return DDIMSchedule(timesteps=ts, alphas=torch.from_numpy(alphas.copy()),
                        alphas_prev=torch.from_numpy(alphas_prev), sigmas=torch.from_numpy(sigmas),
                        sqrt_one_minus_alphas=torch.from_numpy(sqrt_one_minus_alphas),
                        sigmas_for_original_num_steps=sigmas_original, eta=float(eta))
