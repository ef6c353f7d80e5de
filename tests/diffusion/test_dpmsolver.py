"""Known-answer and behaviour tests of DPM-Solver++(2M) (not an official sampler: no official vectors)."""

from __future__ import annotations

import math

import pytest
import torch
from diffusion.noise_sources import CountingNoise

from uvidm_backend.diffusion import DDIMStep, linear_schedule
from uvidm_backend.diffusion.dpmsolver import dpmpp_schedule, dpmpp_timesteps, sample_dpmpp_2m


@pytest.fixture(scope="module")
def schedule():
    return linear_schedule()


def _alpha_sigma(schedule, t: int) -> tuple[float, float]:
    a = schedule.alphas_cumprod[t].double().item()
    return math.sqrt(a), math.sqrt(1.0 - a)


class _GaussianData:
    """Exact eps-model of data x0 ~ N(mean, std^2 I): E[eps | x_t] = sigma (x - alpha mean) / (alpha^2 std^2 + sigma^2).

    std = 0 is a point mass (then every x0 prediction is exactly `mean`). Records the timesteps it is called at.
    """

    def __init__(self, schedule, mean: torch.Tensor, std: float):
        self.schedule, self.mean, self.std = schedule, mean, std
        self.timesteps: list[torch.Tensor] = []

    def __call__(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        self.timesteps.append(t)
        alpha, sigma = _alpha_sigma(self.schedule, int(t[0]))
        return sigma * (x - alpha * self.mean) / (alpha**2 * self.std**2 + sigma**2)

    def flow(self, x_T: torch.Tensor, t_start: int, t_end: int) -> torch.Tensor:
        """The probability-flow ODE solution: (x - alpha mean) / sqrt(alpha^2 std^2 + sigma^2) is constant."""
        a0, s0 = _alpha_sigma(self.schedule, t_start)
        a1, s1 = _alpha_sigma(self.schedule, t_end)
        scale = math.sqrt(a1**2 * self.std**2 + s1**2) / math.sqrt(a0**2 * self.std**2 + s0**2)
        return a1 * self.mean + scale * (x_T - a0 * self.mean)


def _latent(seed: int = 0, shape=(2, 4, 8, 8)) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _context() -> torch.Tensor:
    return torch.zeros(2, 3, 5, dtype=torch.float64)


@pytest.mark.parametrize("spacing", ["time", "logsnr"])
@pytest.mark.parametrize("steps", [1, 7, 20, 50])
def test_timesteps(schedule, steps, spacing):
    ts = dpmpp_timesteps(steps, schedule.alphas_cumprod, spacing)
    assert ts.dtype == torch.int64 and ts.shape == (steps + 1,)
    assert ts[0].item() == schedule.num_timesteps - 1 and ts[-1].item() == 0
    assert torch.all(ts.diff() < 0)


def test_timesteps_validation(schedule):
    with pytest.raises(ValueError):
        dpmpp_timesteps(0, schedule.alphas_cumprod)
    with pytest.raises(ValueError):
        dpmpp_timesteps(schedule.num_timesteps, schedule.alphas_cumprod)
    with pytest.raises(ValueError):
        dpmpp_timesteps(10, schedule.alphas_cumprod, "karras")
    with pytest.raises(ValueError):
        dpmpp_schedule(schedule, 10, eta=-1.0)


def test_orders(schedule):
    assert dpmpp_schedule(schedule, 20).orders == (1,) + (2,) * 19
    assert dpmpp_schedule(schedule, 5).orders == (1, 2, 2, 2, 1)  # lower order final below 10 steps
    assert dpmpp_schedule(schedule, 5, lower_order_final=False).orders == (1, 2, 2, 2, 2)
    assert dpmpp_schedule(schedule, 1).orders == (1,)


@pytest.mark.parametrize("steps", [1, 5, 20])
def test_point_mass_is_solved_exactly(schedule, steps):
    """With the x0 prediction constant, every DPM-Solver++ step is the exact solution of the ODE."""
    model = _GaussianData(schedule, _latent(1), std=0.0)
    x_T = _latent(2)
    x = sample_dpmpp_2m(model, x_T, _context(), dpmpp_schedule(schedule, steps), noise=lambda i, like: like * 0)
    ts = dpmpp_timesteps(steps, schedule.alphas_cumprod)
    torch.testing.assert_close(x, model.flow(x_T, int(ts[0]), int(ts[-1])), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("spacing, tol_20", [("logsnr", 3e-2), ("time", 0.35)])
def test_gaussian_data_second_order(schedule, spacing, tol_20):
    """On Gaussian data the error against the exact flow falls towards 4x per doubling of the steps (order 2).

    Uniform-in-time grids end with one long lambda step (t = 50 -> 0 at 20 steps), which dominates
    their error at small step counts; log-SNR grids converge from the start.
    """
    model = _GaussianData(schedule, _latent(1) * 0.3, std=1.0)
    x_T = _latent(2)
    exact = model.flow(x_T, schedule.num_timesteps - 1, 0)
    errors = {}
    for steps in (10, 20, 40, 160, 320):
        dpm = dpmpp_schedule(schedule, steps, spacing=spacing)
        errors[steps] = (sample_dpmpp_2m(model, x_T, _context(), dpm, noise=lambda i, like: like * 0) - exact
                         ).abs().max().item()
    assert errors[20] < tol_20
    if spacing == "logsnr":
        assert errors[10] / errors[20] > 2.8 and errors[20] / errors[40] > 2.8
    else:
        assert errors[160] / errors[320] > 2.8


def test_sde_keeps_the_marginal(schedule):
    """eta = 1 on a point mass: x_t - alpha_t x0 stays N(0, sigma_t^2) whatever the step sizes."""
    mean = torch.full((1, 4, 8, 8), 0.7, dtype=torch.float64)
    model = _GaussianData(schedule, mean, std=0.0)
    x_T = _latent(3, (4096, 4, 8, 8)) * _alpha_sigma(schedule, schedule.num_timesteps - 1)[1]
    x_T = x_T + _alpha_sigma(schedule, schedule.num_timesteps - 1)[0] * mean
    x = sample_dpmpp_2m(model, x_T, _context(), dpmpp_schedule(schedule, 8, eta=1.0),
                        generator=torch.Generator().manual_seed(0))
    alpha, sigma = _alpha_sigma(schedule, 0)
    residual = x - alpha * mean
    assert abs(residual.mean().item()) < 3e-3 * sigma * 10
    assert residual.std().item() == pytest.approx(sigma, rel=1e-2)


def test_noise_drawn_every_step_and_ignored_at_eta0(schedule):
    counting = CountingNoise()

    model = _GaussianData(schedule, _latent(1), std=0.5)
    dpm = dpmpp_schedule(schedule, 12)
    small = sample_dpmpp_2m(model, _latent(2), _context(), dpm, noise=counting(1.0))
    assert counting.drawn == list(range(12))
    large = sample_dpmpp_2m(model, _latent(2), _context(), dpm, noise=counting(1e6))
    assert torch.equal(small, large)
    noisy = dpmpp_schedule(schedule, 12, eta=1.0)
    assert not torch.equal(sample_dpmpp_2m(model, _latent(2), _context(), noisy, noise=counting(1.0)),
                           sample_dpmpp_2m(model, _latent(2), _context(), noisy, noise=counting(2.0)))


def test_model_calls_and_callback(schedule):
    model = _GaussianData(schedule, _latent(1), std=0.5)
    dpm = dpmpp_schedule(schedule, 20)
    seen: list[DDIMStep] = []
    x = sample_dpmpp_2m(model, _latent(2), _context(), dpm, callback=seen.append)
    expected_t = dpm.timesteps[:-1].tolist()
    assert [t.tolist() for t in model.timesteps] == [[t, t] for t in expected_t]
    assert all(t.dtype == torch.int64 for t in model.timesteps)
    assert [s.index for s in seen] == list(range(20)) and all(s.total == 20 for s in seen)
    assert [s.t for s in seen] == expected_t and seen[-1].x is x


def test_callback_can_cancel(schedule):
    class Cancelled(Exception):
        pass

    def stop(step: DDIMStep) -> None:
        if step.index == 2:
            raise Cancelled

    model = _GaussianData(schedule, _latent(1), std=0.5)
    with pytest.raises(Cancelled):
        sample_dpmpp_2m(model, _latent(2), _context(), dpmpp_schedule(schedule, 10), callback=stop)
    assert len(model.timesteps) == 3


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_follows_latent(schedule, dtype):
    model = _GaussianData(schedule, _latent(1).to(dtype), std=0.5)
    x = sample_dpmpp_2m(model, _latent(2).to(dtype), _context().to(dtype), dpmpp_schedule(schedule, 5, eta=1.0),
                        generator=torch.Generator().manual_seed(0))
    assert x.dtype == dtype and torch.isfinite(x).all()
