"""DDIM sampling (Song et al., "Denoising Diffusion Implicit Models", ICLR 2021), as pure functions.

Reproduces `ldm.models.diffusion.ddim.DDIMSampler.ddim_sampling` / `p_sample_ddim` as UV-IDM's
`scripts/visualize.py` runs them: conditional branch only (no classifier-free guidance: the
official `--scale` is parsed but never used), no clipping of pred_x0, temperature 1, and a noise
tensor drawn at EVERY step, also for eta = 0 and at the last step, so that a seeded noise stream
advances identically whatever eta is.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .schedule import DDIMSchedule

#: `model(x, t, context) -> eps`, with `t` an int64 tensor of shape (B,).
EpsModel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
#: `noise(step_index, like) -> Tensor` shaped like `like`; step_index 0 is the first (highest-t) step.
NoiseSource = Callable[[int, torch.Tensor], torch.Tensor]
#: `update(x, eps, noise, coefficients, *state) -> (x_next, pred_x0)`: a sampler's arithmetic after the model
#: call, its scalars in one small tensor (a row of the sampler's per-run table), so that a compiled update
#: (`uvidm_backend.acceleration.fused_update`) is one graph, and one kernel, for every step.
SamplerUpdate = Callable[..., tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class DDIMStep:
    """What the callback sees after each step.

    `index` counts the steps done so far minus one (0 = first, highest-t step), out of `total`;
    `t` is the DDPM timestep the model was evaluated at; `x` the new latent x_{t-1}; `pred_x0`
    the model's prediction of x_0 at that step.
    """

    index: int
    total: int
    t: int
    x: torch.Tensor
    pred_x0: torch.Tensor


def ddim_step(x: torch.Tensor, eps: torch.Tensor, alpha: torch.Tensor, alpha_prev: torch.Tensor,
              sigma: torch.Tensor, sqrt_one_minus_alpha: torch.Tensor,
              noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One DDIM update, DDIM eq. 12 (`p_sample_ddim`); alphas are the cumulative products.

        pred_x0 = (x_t - sqrt(1 - a_t) * eps) / sqrt(a_t)
        x_prev  = sqrt(a_prev) * pred_x0 + sqrt(1 - a_prev - sigma^2) * eps + sigma * noise

    The scalars are tensors (the official code uses float32 ones) and `sqrt(1 - a_t)` is passed in
    rather than recomputed, because the official schedule rounds it separately.
    Returns (x_prev, pred_x0).
    """
    pred_x0 = (x - sqrt_one_minus_alpha * eps) / alpha.sqrt()
    dir_xt = (1.0 - alpha_prev - sigma**2).sqrt() * eps
    x_prev = alpha_prev.sqrt() * pred_x0 + dir_xt + sigma * noise
    return x_prev, pred_x0


def ddim_update(x: torch.Tensor, eps: torch.Tensor, noise: torch.Tensor,
                coefficients: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`ddim_step` with its scalars in one row (alpha, alpha_prev, sigma, sqrt(1 - alpha), ...) of
    `ddim_coefficients`: a `SamplerUpdate`."""
    alpha, alpha_prev, sigma, sqrt_one_minus_alpha = coefficients[:4].unbind()
    return ddim_step(x, eps, alpha, alpha_prev, sigma, sqrt_one_minus_alpha, noise)


def ddim_coefficients(ddim: DDIMSchedule) -> torch.Tensor:
    """(steps, 8) float32: per step alpha, alpha_prev, sigma, sqrt(1 - alpha) (the official float32 values),
    padded to 32-byte rows so that every row is as aligned as the table."""
    columns = [ddim.alphas, ddim.alphas_prev, ddim.sigmas, ddim.sqrt_one_minus_alphas]
    table = torch.stack([c.to(torch.float32) for c in columns], dim=1)
    return torch.nn.functional.pad(table, (0, 4))


_TABLES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def tables_on_device(schedule: object, device: torch.device, dtype: torch.dtype,
                     build: Callable[[], tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """`build()` -> (timesteps, coefficients) moved to `device`, once per schedule object, device and dtype.

    A sampling run then starts without host-to-device copies: from pageable memory each one waits for the
    GPU's queue to drain, which would leave the GPU idle while the host prepares the first step.
    (`ddim_schedule` and `dpmpp_schedule` return the same object for the same arguments.)
    """
    per_schedule = _TABLES.setdefault(schedule, {})
    key = (torch.device(device), dtype)
    if key not in per_schedule:
        per_schedule[key] = tuple(table.to(device) for table in build())
    return per_schedule[key]


def gaussian_noise(generator: torch.Generator | None = None) -> NoiseSource:
    """The default noise source: `torch.randn` shaped like x, optionally from a seeded generator.

    The generator must live on the device of the latent (a CPU generator for CPU latents).
    """

    def draw(step_index: int, like: torch.Tensor) -> torch.Tensor:
        return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)

    return draw


@torch.no_grad()
def sample_ddim(model: EpsModel, x_T: torch.Tensor, context: torch.Tensor, ddim: DDIMSchedule,
                noise: NoiseSource | None = None, generator: torch.Generator | None = None,
                callback: Callable[[DDIMStep], None] | None = None,
                update: SamplerUpdate = ddim_update) -> torch.Tensor:
    """Runs the DDIM reverse process from `x_T` (`DDIMSampler.sample(..., x_T=x_T)`).

    Steps run over `ddim.timesteps` from the largest down to the smallest (t = 1 for the uniform
    schedule, not 0). `noise` is called once per step (default: `gaussian_noise(generator)`),
    whatever eta is; replaying the noises of an official run reproduces it. `callback` is
    called after every step with a `DDIMStep`; to cancel sampling, raise from it (the exception
    propagates unchanged out of `sample_ddim`). Device and dtype follow `x_T`; the step scalars are
    float32 as in the official `torch.full` (for float32 latents the arithmetic is the official one).
    `update` computes the step from the model's eps (default `ddim_update`; the fast path passes a fused one).
    Returns the final latent x_0 (not divided by the first-stage scale factor).
    """
    if noise is None:
        noise = gaussian_noise(generator)
    device = x_T.device
    # Official per-step scalars: torch.full(..., value) makes float32 copies on the model device.
    timesteps_on_device, coefficients = tables_on_device(
        ddim, device, torch.float32, lambda: (ddim.timesteps.to(torch.long), ddim_coefficients(ddim)))
    timesteps = ddim.timesteps.tolist()  # host ints for the callback: no device sync

    x = x_T
    total = len(timesteps)
    for step in range(total):
        index = total - 1 - step
        t = timesteps_on_device[index].expand(x.shape[0])
        eps = model(x, t, context)
        x, pred_x0 = update(x, eps, noise(step, x), coefficients[index])
        if callback is not None:
            callback(DDIMStep(index=step, total=total, t=timesteps[index], x=x, pred_x0=pred_x0))
    return x
