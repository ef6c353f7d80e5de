"""Known-answer and behaviour tests of the DDIM schedule and sampler (no reference vectors needed)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from diffusion.noise_sources import CountingNoise

from uvidm_backend.diffusion import (
    DDIMStep,
    ddim_schedule,
    ddim_step,
    ddim_timesteps,
    gaussian_noise,
    linear_schedule,
    sample_ddim,
)
from uvidm_backend.diffusion.ddim import ddim_coefficients, tables_on_device


@pytest.fixture(scope="module")
def schedule():
    return linear_schedule()


class _ToyEps:
    """A cheap deterministic eps-model that records its calls."""

    def __init__(self):
        self.timesteps: list[torch.Tensor] = []

    def __call__(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        self.timesteps.append(t)
        return 0.5 * x + 1e-3 * t.to(x.dtype)[:, None, None, None] + context.mean()


def _latent(seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("steps, expected", [(50, 50), (30, 31), (7, 8), (500, 500)])
def test_step_count_trap(schedule, steps, expected):
    """range(0, 1000, 1000 // S) + 1: more than S steps when S does not divide 1000, last t = 1."""
    ddim = ddim_schedule(schedule, steps, eta=1.0)
    assert ddim.num_steps == expected
    assert ddim.timesteps.dtype == torch.int64
    assert ddim.timesteps[0].item() == 1
    assert torch.all(ddim.timesteps.diff() == 1000 // steps)
    # The first (i.e. last sampled) step goes to alphas_cumprod[0], not 1.
    assert ddim.alphas_prev[0].item() == schedule.alphas_cumprod[0].item() < 1.0
    model = _ToyEps()
    sample_ddim(model, _latent(), torch.zeros(2, 3, 5), ddim, generator=torch.Generator().manual_seed(0))
    called = [t.tolist() for t in model.timesteps]
    assert called == [[t, t] for t in reversed(ddim.timesteps.tolist())]
    assert called[-1] == [1, 1] and all(t.dtype == torch.int64 for t in model.timesteps)


def test_timesteps_validation():
    with pytest.raises(ValueError):
        ddim_timesteps(0)
    with pytest.raises(ValueError):
        ddim_timesteps(501)  # step 1: t would run up to T (an IndexError in the official code)
    with pytest.raises(ValueError):
        ddim_timesteps(10, discretize="nope")
    assert len(ddim_timesteps(10, discretize="quad")) == 10


def test_ddim_step_known_answer(schedule):
    """With eta = 0 and the true noise as eps, DDIM recovers x0 and moves x_t onto x_{t_prev} exactly."""
    ddim = ddim_schedule(schedule, 10, eta=0.0)
    x0, eps = _latent(1, torch.float64), _latent(2, torch.float64)
    i = 5
    a, a_prev = ddim.alphas[i].double(), ddim.alphas_prev[i].double()
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
    x_prev, pred_x0 = ddim_step(x_t, eps, a, a_prev, torch.zeros((), dtype=torch.float64), (1 - a).sqrt(),
                                noise=torch.full_like(x0, 123.0))
    torch.testing.assert_close(pred_x0, x0, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(x_prev, a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps, rtol=1e-12, atol=1e-12)


def test_seeded_generator_is_deterministic(schedule):
    ddim = ddim_schedule(schedule, 10, eta=1.0)
    context = torch.ones(2, 3, 5)

    def run(seed: int) -> torch.Tensor:
        return sample_ddim(_ToyEps(), _latent(), context, ddim, generator=torch.Generator().manual_seed(seed))

    first, again, other = run(7), run(7), run(8)
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)
    # The default source is gaussian_noise(generator): an explicit one replays the same stream.
    explicit = sample_ddim(_ToyEps(), _latent(), context, ddim,
                           noise=gaussian_noise(torch.Generator().manual_seed(7)))
    assert torch.equal(first, explicit)


def test_noise_drawn_every_step_and_ignored_at_eta0(schedule):
    """The official sampler draws a noise at every step even when eta = 0 (it is multiplied by 0)."""
    ddim = ddim_schedule(schedule, 10, eta=0.0)
    assert torch.all(ddim.sigmas == 0)
    context = torch.zeros(2, 3, 5)
    counting = CountingNoise()

    small = sample_ddim(_ToyEps(), _latent(), context, ddim, noise=counting(1.0))
    assert counting.drawn == list(range(ddim.num_steps))
    large = sample_ddim(_ToyEps(), _latent(), context, ddim, noise=counting(1e6))
    seeded = sample_ddim(_ToyEps(), _latent(), context, ddim, generator=torch.Generator().manual_seed(3))
    assert torch.equal(small, large) and torch.equal(small, seeded)
    # With eta = 1 the noise matters.
    noisy = ddim_schedule(schedule, 10, eta=1.0)
    assert not torch.equal(sample_ddim(_ToyEps(), _latent(), context, noisy, noise=counting(1.0)),
                           sample_ddim(_ToyEps(), _latent(), context, noisy, noise=counting(2.0)))


def test_callback_once_per_step(schedule):
    ddim = ddim_schedule(schedule, 30, eta=1.0)
    seen: list[DDIMStep] = []
    x = sample_ddim(_ToyEps(), _latent(), torch.zeros(2, 3, 5), ddim, callback=seen.append,
                    generator=torch.Generator().manual_seed(0))
    assert [s.index for s in seen] == list(range(ddim.num_steps))
    assert all(s.total == ddim.num_steps for s in seen)
    assert [s.t for s in seen] == list(reversed(ddim.timesteps.tolist()))
    assert seen[-1].x is x
    assert all(s.pred_x0.shape == x.shape for s in seen)


def test_callback_can_cancel(schedule):
    class Cancelled(Exception):
        pass

    def stop_after_three(step: DDIMStep) -> None:
        if step.index == 2:
            raise Cancelled

    model = _ToyEps()
    ddim = ddim_schedule(schedule, 10, eta=1.0)
    with pytest.raises(Cancelled):
        sample_ddim(model, _latent(), torch.zeros(2, 3, 5), ddim, callback=stop_after_three)
    assert len(model.timesteps) == 3


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_follows_latent(schedule, dtype):
    ddim = ddim_schedule(schedule, 5, eta=1.0)
    x = sample_ddim(_ToyEps(), _latent(dtype=dtype), torch.zeros(2, 3, 5, dtype=dtype), ddim,
                    generator=torch.Generator().manual_seed(0))
    assert x.dtype == dtype and torch.isfinite(x).all()


def test_sampler_tables_are_made_once_per_schedule_and_dtype(schedule):
    # A schedule object no other test has sampled with (ddim_schedule returns one object per arguments).
    ddim = dataclasses.replace(ddim_schedule(schedule, 5, eta=1.0))
    builds = []

    def build():
        builds.append(1)
        return ddim.timesteps, ddim_coefficients(ddim)

    first = tables_on_device(ddim, torch.device("cpu"), torch.float32, build)
    assert tables_on_device(ddim, torch.device("cpu"), torch.float32, build) is first and len(builds) == 1
    tables_on_device(ddim, torch.device("cpu"), torch.float64, build)
    assert len(builds) == 2
    timesteps, coefficients = first
    assert coefficients.shape == (5, 8) and torch.equal(coefficients[:, 0], ddim.alphas.float())
    assert torch.equal(coefficients[:, 4:], torch.zeros(5, 4))


def test_schedules_are_made_once_per_arguments(schedule):
    assert ddim_schedule(schedule, 7, eta=0.5) is ddim_schedule(schedule, 7, eta=0.5)
    assert ddim_schedule(schedule, 7, eta=0.5) is not ddim_schedule(schedule, 7, eta=1.0)
