"""DPM-Solver++(2M) (Lu et al., "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic
Models", 2022, Algorithm 2), for the eps-parameterised discrete-time linear schedule of UV-IDM.

Not part of the official UV-IDM inference (which runs DDIM, see `ddim.py`): a faster sampler for the same
network. Pure functions like `sample_ddim`: `dpmpp_schedule` -> `sample_dpmpp_2m(model, x_T, context, schedule,
noise=..., callback=...)`. The solver works in the data-prediction (x0) form with half-log-SNR steps
h = lambda_t - lambda_s, lambda = log(alpha / sigma), alpha = sqrt(alphas_cumprod), sigma = sqrt(1 - alphas_cumprod),
evaluated at integer timesteps (the network is only trained on those). With `eta > 0` it is the SDE variant
("SDE-DPM-Solver++(2M)", midpoint form, as `k_diffusion.sampling.sample_dpmpp_2m_sde` in VP coordinates):

    x_t = sigma_t / sigma_s * exp(-eta h) * x_s + alpha_t * (1 - exp(-(1 + eta) h)) * D
          + sigma_t * sqrt(1 - exp(-2 eta h)) * noise,
    D   = x0_s + (x0_s - x0_prev) / (2 r),  r = h_prev / h   (D = x0_s for a first-order step);

eta = 0 is DPM-Solver++(2M) itself (Lu et al. eq. for the 2M update).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .ddim import DDIMStep, EpsModel, NoiseSource, SamplerUpdate, gaussian_noise, tables_on_device
from .schedule import DiffusionSchedule

SPACINGS = ("time", "logsnr")


@dataclass(frozen=True, eq=False)
class DPMSolverSchedule:
    """Sampling grid and per-step coefficients of DPM-Solver++(2M), in float64 on the CPU.

    `timesteps` holds the N + 1 grid points t_0 > ... > t_N (descending int64; the model is evaluated at
    t_0 .. t_{N-1}, the sample ends at the noise level of t_N). Step i goes from t_i to t_{i+1}:
    `x_coef[i] * x + d_coef[i] * D + noise_coef[i] * noise`; `orders[i]` is 1 or 2 and `ratios[i]` is
    h_{i-1} / h_i (unused where the order is 1).
    """

    timesteps: torch.Tensor
    alphas: torch.Tensor
    sigmas: torch.Tensor
    lambdas: torch.Tensor
    x_coef: torch.Tensor
    d_coef: torch.Tensor
    noise_coef: torch.Tensor
    ratios: torch.Tensor
    orders: tuple[int, ...]
    eta: float

    @property
    def num_steps(self) -> int:
        """Number of model evaluations."""
        return int(self.timesteps.shape[0]) - 1


def dpmpp_timesteps(steps: int, alphas_cumprod: torch.Tensor, spacing: str = "time") -> torch.Tensor:
    """The N + 1 integer grid points from T - 1 down to 0, strictly descending.

    'time': uniform in t (DPM-Solver's recommendation for latent models); 'logsnr': uniform in lambda,
    each point rounded to the nearest trained timestep, points that collide near t = 0 moved up to the next
    free timestep (one timestep there spans more lambda than a step of a long run).
    """
    num_timesteps = int(alphas_cumprod.shape[0])
    if not 0 < steps < num_timesteps:
        raise ValueError(f"steps must be in [1, {num_timesteps - 1}], got {steps}")
    if spacing == "time":
        grid = np.rint(np.linspace(num_timesteps - 1, 0, steps + 1)).astype(np.int64)
    elif spacing == "logsnr":
        lam = _lambdas(alphas_cumprod.double().numpy())  # decreasing in t
        targets = np.linspace(lam[-1], lam[0], steps + 1)
        # np.interp needs increasing x: lambda reversed is increasing, timesteps reversed with it.
        grid = np.rint(np.interp(targets, lam[::-1], np.arange(num_timesteps)[::-1])).astype(np.int64)
        # Near t = 0 one timestep spans more lambda than a step: push collided points up to the next free t.
        for i in range(steps - 1, -1, -1):
            grid[i] = max(grid[i], grid[i + 1] + 1)
    else:
        raise ValueError(f"unknown spacing {spacing!r} (expected one of {', '.join(SPACINGS)})")
    if np.any(np.diff(grid) >= 0):
        raise ValueError(f"{steps} {spacing}-spaced steps do not fit in {num_timesteps} timesteps")
    return torch.from_numpy(grid)


def _lambdas(alphas_cumprod: np.ndarray) -> np.ndarray:
    return 0.5 * (np.log(alphas_cumprod) - np.log1p(-alphas_cumprod))


@functools.lru_cache(maxsize=32)  # immutable: the samplers keep their tables per schedule object
def dpmpp_schedule(schedule: DiffusionSchedule, steps: int = 20, eta: float = 0.0, spacing: str = "time",
                   lower_order_final: bool = True) -> DPMSolverSchedule:
    """Grid and coefficients for `steps` model evaluations, from the schedule's `alphas_cumprod`.

    The first step is first order (no previous x0 yet); with `lower_order_final` and fewer than 10 steps
    the last one is too (as the reference implementation does: it stabilises very short runs).
    """
    if not 0.0 <= eta:
        raise ValueError(f"eta must be >= 0, got {eta}")
    acp = schedule.alphas_cumprod.to("cpu", torch.float64)
    ts = dpmpp_timesteps(steps, acp, spacing)
    a = acp[ts].numpy()
    alphas, sigmas = np.sqrt(a), np.sqrt(1.0 - a)
    lambdas = _lambdas(a)
    h = np.diff(lambdas)  # > 0: lambda grows as t falls
    x_coef = sigmas[1:] / sigmas[:-1] * np.exp(-eta * h)
    d_coef = -alphas[1:] * np.expm1(-(1.0 + eta) * h)
    noise_coef = sigmas[1:] * np.sqrt(-np.expm1(-2.0 * eta * h))
    ratios = np.concatenate([[math.nan], h[:-1] / h[1:]])
    orders = [1] + [2] * (steps - 1)
    if lower_order_final and steps < 10:
        orders[-1] = 1
    as_tensor = torch.from_numpy
    return DPMSolverSchedule(timesteps=ts, alphas=as_tensor(alphas), sigmas=as_tensor(sigmas),
                             lambdas=as_tensor(lambdas), x_coef=as_tensor(x_coef), d_coef=as_tensor(d_coef),
                             noise_coef=as_tensor(noise_coef), ratios=as_tensor(ratios), orders=tuple(orders),
                             eta=float(eta))


def dpmpp_2m_coefficients(schedule: DPMSolverSchedule, dtype: torch.dtype) -> torch.Tensor:
    """(steps, 8) in `dtype` (float64 for float64 latents, else float32: the precision the latent's arithmetic
    gives Python floats): per step alpha_s, sigma_s, x_coef, d_coef, noise_coef and the extrapolation weight
    0.5 / r of a second-order step (0 for a first-order one), padded to 32-byte rows."""
    steps = schedule.num_steps
    second_order = torch.tensor([order == 2 and step > 0 for step, order in enumerate(schedule.orders)])
    extrapolation = torch.where(second_order, 0.5 / schedule.ratios, torch.zeros(steps, dtype=torch.float64))
    columns = [schedule.alphas[:-1], schedule.sigmas[:-1], schedule.x_coef, schedule.d_coef, schedule.noise_coef,
               extrapolation]
    table = torch.nn.functional.pad(torch.stack(columns, dim=1), (0, 2))
    return table.to(torch.float64 if dtype == torch.float64 else torch.float32)


def dpmpp_2m_update(x: torch.Tensor, eps: torch.Tensor, noise: torch.Tensor, coefficients: torch.Tensor,
                    previous_x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One DPM-Solver++(2M) step from the model's eps (a `SamplerUpdate` given `previous_x0`; the first step
    passes any finite tensor, its extrapolation weight being 0, which leaves D = x0 exactly).
    Returns (x_next, x0)."""
    alpha, sigma, x_coef, d_coef, noise_coef, extrapolation = coefficients[:6].unbind()
    x0 = (x - sigma * eps) / alpha
    d = x0 + (x0 - previous_x0) * extrapolation
    return x_coef * x + d_coef * d + noise_coef * noise, x0


@torch.no_grad()
def sample_dpmpp_2m(model: EpsModel, x_T: torch.Tensor, context: torch.Tensor, schedule: DPMSolverSchedule,
                    noise: NoiseSource | None = None, generator: torch.Generator | None = None,
                    callback: Callable[[DDIMStep], None] | None = None,
                    update: SamplerUpdate = dpmpp_2m_update) -> torch.Tensor:
    """Runs DPM-Solver++(2M) from `x_T` (taken at t_0) to the noise level of t_N.

    Conventions of `sample_ddim`: `model(x, t, context) -> eps` with `t` an int64 (B,) tensor; `noise` is
    called once per step (default `gaussian_noise(generator)`) whatever eta is, so a seeded stream advances
    identically (it is multiplied by 0 when eta = 0); `callback` gets a `DDIMStep` after every step and may
    raise to cancel. Device and dtype follow `x_T`; the coefficients are computed in float64 and applied in
    the latent's precision (`dpmpp_2m_coefficients`). `update` is `dpmpp_2m_update` or a fused equivalent.
    """
    if noise is None:
        noise = gaussian_noise(generator)
    device = x_T.device
    timesteps = schedule.timesteps.tolist()
    timesteps_on_device, coefficients = tables_on_device(
        schedule, device, x_T.dtype,
        lambda: (schedule.timesteps.to(torch.long), dpmpp_2m_coefficients(schedule, x_T.dtype)))

    x = x_T
    # Any finite tensor other than x (an alias would compile a fused update twice): its weight is 0 at first.
    previous_x0 = torch.zeros_like(x_T)
    total = schedule.num_steps
    for step in range(total):
        eps = model(x, timesteps_on_device[step].expand(x.shape[0]), context)
        x, x0 = update(x, eps, noise(step, x), coefficients[step], previous_x0)
        previous_x0 = x0
        if callback is not None:
            callback(DDIMStep(index=step, total=total, t=timesteps[step], x=x, pred_x0=x0))
    return x
