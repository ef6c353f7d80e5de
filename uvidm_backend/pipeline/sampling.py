"""The sampling and decoding stages: each photo's seeded noise, the sampler over the batch, the decoder.

Every photo draws its starting latent and its per-step noises from its own generator, seeded with its
own seed, exactly as a batch of one draws them: a photo's head does not depend on the batch it ran in
(up to the floating-point differences of the networks at another batch size).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

from uvidm_backend.diffusion import ddim_schedule, dpmpp_schedule, sample_ddim, sample_dpmpp_2m
from uvidm_backend.diffusion.ddim import DDIMStep, EpsModel, NoiseSource, SamplerUpdate
from uvidm_backend.pipeline.options import GenerateOptions


def seeded_noise(seeds: Sequence[int], shape: tuple[int, ...], device: torch.device) -> tuple[Tensor, NoiseSource]:
    """(x_T of shape (len(seeds), *shape), the sampler's noise source): row i from generator seeded seeds[i]."""
    generators = [torch.Generator(device=device).manual_seed(int(seed)) for seed in seeds]

    def draw(like_shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> Tensor:
        return torch.cat([torch.randn((1, *like_shape), generator=g, device=device, dtype=dtype)
                          for g in generators])

    def noise(step_index: int, like: Tensor) -> Tensor:
        return draw(tuple(like.shape[1:]), like.dtype)

    return draw(tuple(shape)), noise


def _no_noise(step_index: int, like: Tensor) -> Tensor:
    return torch.zeros_like(like)


def sample_latents(eps_model: EpsModel, tokens: Tensor, seeds: Sequence[int], options: GenerateOptions,
                   networks, updates: Mapping[str, SamplerUpdate], run_batch: int | None = None,
                   callback: Callable[[DDIMStep], None] | None = None) -> Tensor:
    """(B, C, h, w) latents of the B photos whose condition `tokens` (B, L, D) and `seeds` are given, with
    `options`' sampler. `run_batch` > B pads the batch (copies of the last photo, dropped after) so that the
    UNet runs at a size it was compiled for."""
    count = tokens.shape[0]
    run_batch = max(count, run_batch or count)
    if run_batch > count:
        tokens = torch.cat([tokens, tokens[-1:].expand(run_batch - count, -1, -1)])
        seeds = [*seeds, *[seeds[-1]] * (run_batch - count)]
    config = networks.config
    x_T, noise = seeded_noise(seeds, (config.channels, config.image_size, config.image_size), tokens.device)
    if options.sampler == "dpmpp":
        sampler, schedule = sample_dpmpp_2m, dpmpp_schedule(networks.schedule, options.steps)
        if not bool((schedule.noise_coef != 0).any()):
            noise = _no_noise  # eta 0: every noise is multiplied by 0; drawing it per photo and step costs time
    else:
        sampler, schedule = sample_ddim, ddim_schedule(networks.schedule, options.steps, options.eta)
    latent = sampler(eps_model, x_T, tokens, schedule, noise=noise, callback=callback,
                     update=updates[options.sampler])
    return latent[:count]


def decode_textures(decode: Callable[[Tensor], Tensor], latent: Tensor, run_batch: int | None = None) -> Tensor:
    """(B, 3, S, S) the model's textures in [0, 1] from the latents (padded to `run_batch` like `sample_latents`)."""
    count = latent.shape[0]
    if run_batch is not None and run_batch > count:
        latent = torch.cat([latent, latent[-1:].expand(run_batch - count, -1, -1, -1)])
    return ((decode(latent) + 1) * 0.5).clamp(0, 1)[:count]
