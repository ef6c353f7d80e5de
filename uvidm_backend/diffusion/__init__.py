"""Diffusion schedules and the DDIM sampler of the official UV-IDM latent diffusion model.

Pure functions over tensors (k-diffusion style): `linear_schedule` → `ddim_schedule` →
`sample_ddim(model, x_T, context, ddim, noise=..., callback=...)`.
"""

from .ddim import DDIMStep, EpsModel, NoiseSource, ddim_step, gaussian_noise, sample_ddim
from .schedule import (
    PERSISTENT_BUFFERS,
    DDIMSchedule,
    DiffusionSchedule,
    ddim_schedule,
    ddim_timesteps,
    linear_schedule,
)

__all__ = [
    "PERSISTENT_BUFFERS",
    "DDIMSchedule",
    "DDIMStep",
    "DiffusionSchedule",
    "EpsModel",
    "NoiseSource",
    "ddim_schedule",
    "ddim_step",
    "ddim_timesteps",
    "gaussian_noise",
    "linear_schedule",
    "sample_ddim",
]
