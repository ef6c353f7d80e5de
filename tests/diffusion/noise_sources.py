"""A replayable noise source for sampler tests: constant noise that records the steps it served."""

from __future__ import annotations

import torch


class CountingNoise:
    """`noise=counting(scale)` for `sample_ddim` / `sample_dpmpp_2m`; `drawn` lists the steps asked."""

    def __init__(self) -> None:
        self.drawn: list[int] = []

    def __call__(self, scale: float):
        def noise(step: int, like: torch.Tensor) -> torch.Tensor:
            self.drawn.append(step)
            return torch.full_like(like, scale)

        return noise
