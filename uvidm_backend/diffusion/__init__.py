"""Diffusion schedules and the DDIM sampler of the official UV-IDM latent diffusion model.

Pure functions over tensors (k-diffusion style): `linear_schedule` → `ddim_schedule` →
`sample_ddim(model, x_T, context, ddim, noise=..., callback=...)`, and DPM-Solver++ (2M) beside it
(`dpmpp_schedule` → `sample_dpmpp_2m`), which needs fewer steps.
"""

from .ddim import DDIMStep, EpsModel, NoiseSource, SamplerUpdate, ddim_step, ddim_update, gaussian_noise, sample_ddim
from .dpmsolver import DPMSolverSchedule, dpmpp_2m_update, dpmpp_schedule, dpmpp_timesteps, sample_dpmpp_2m
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
    "DPMSolverSchedule",
    "DiffusionSchedule",
    "EpsModel",
    "NoiseSource",
    "SamplerUpdate",
    "ddim_schedule",
    "ddim_step",
    "ddim_update",
    "ddim_timesteps",
    "dpmpp_2m_update",
    "dpmpp_schedule",
    "dpmpp_timesteps",
    "gaussian_noise",
    "linear_schedule",
    "sample_ddim",
    "sample_dpmpp_2m",
]
