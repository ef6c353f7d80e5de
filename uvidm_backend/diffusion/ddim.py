"""DDIM sampling (Song et al., "Denoising Diffusion Implicit Models", ICLR 2021), as pure functions.

Reproduces `ldm.models.diffusion.ddim.DDIMSampler.ddim_sampling` / `p_sample_ddim` as UV-IDM's
`scripts/visualize.py` runs them: conditional branch only (no classifier-free guidance: the
official `--scale` is parsed but never used), no clipping of pred_x0, temperature 1, and a noise
tensor drawn at EVERY step, also for eta = 0 and at the last step, so that a seeded noise stream
advances identically whatever eta is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .schedule import DDIMSchedule

#: `model(x, t, context) -> eps`, with `t` an int64 tensor of shape (B,).
EpsModel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
#: `noise(step_index, like) -> Tensor` shaped like `like`; step_index 0 is the first (highest-t) step.
NoiseSource = Callable[[int, torch.Tensor], torch.Tensor]


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
                callback: Callable[[DDIMStep], None] | None = None) -> torch.Tensor:
    """Runs the DDIM reverse process from `x_T` (`DDIMSampler.sample(..., x_T=x_T)`).

    Steps run over `ddim.timesteps` from the largest down to the smallest (t = 1 for the uniform
    schedule, not 0). `noise` is called once per step (default: `gaussian_noise(generator)`),
    whatever eta is; replaying the noises of an official run reproduces it. `callback` is
    called after every step with a `DDIMStep`; to cancel sampling, raise from it (the exception
    propagates unchanged out of `sample_ddim`). Device and dtype follow `x_T`; the step scalars are
    float32 as in the official `torch.full` (for float32 latents the arithmetic is the official one).
    Returns the final latent x_0 (not divided by the first-stage scale factor).
    """
    if noise is None:
        noise = gaussian_noise(generator)
    device = x_T.device
    # Official per-step scalars: torch.full(..., value) makes float32 copies on the model device.
    alphas = ddim.alphas.to(device=device, dtype=torch.float32)
    alphas_prev = ddim.alphas_prev.to(device=device, dtype=torch.float32)
    sigmas = ddim.sigmas.to(device=device, dtype=torch.float32)
    sqrt_one_minus_alphas = ddim.sqrt_one_minus_alphas.to(device=device, dtype=torch.float32)
    timesteps = ddim.timesteps.tolist()  # host ints: building t costs no device sync

    x = x_T
    total = len(timesteps)
    for step in range(total):
        index = total - 1 - step
        t = torch.full((x.shape[0],), timesteps[index], dtype=torch.long, device=device)
        eps = model(x, t, context)
        x, pred_x0 = ddim_step(x, eps, alphas[index], alphas_prev[index], sigmas[index],
                               sqrt_one_minus_alphas[index], noise(step, x))
        if callback is not None:
            callback(DDIMStep(index=step, total=total, t=timesteps[index], x=x, pred_x0=pred_x0))
    return x
