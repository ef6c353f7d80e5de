"""Replaying a function of tensors from CUDA graphs: one capture per input signature, static buffers."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

log = logging.getLogger(__name__)


@dataclass
class _Captured:
    graph: torch.cuda.CUDAGraph
    inputs: tuple[Tensor, ...]
    output: Tensor
    sources: dict[int, Tensor | None]  # the tensor last copied into each constant input


class CudaGraphed:
    """`fn(*tensors) -> tensor` replayed from one CUDA graph per input signature (shapes, dtypes, device).

    The first call with a new signature warms `fn` up on a side stream (where `torch.compile` compiles)
    and captures it; later calls copy the inputs into the static buffers and replay. The output is a
    clone (the static one is overwritten by the next call). Inputs off CUDA call `fn` directly. Each
    graph keeps its own memory pool, so graphs of different shapes never share buffers.
    Inputs at the positions in `constant_inputs` are copied only when another tensor object is passed
    there (for large per-generation constants; they must not be modified in place between calls).
    """

    def __init__(self, fn: Callable[..., Tensor], warmup: int = 2, constant_inputs: tuple[int, ...] = ()):
        self.fn = fn
        self.warmup = warmup
        self.constant_inputs = frozenset(constant_inputs)
        self._graphs: dict[tuple, _Captured] = {}

    def __call__(self, *args: Tensor) -> Tensor:
        if not args[0].is_cuda:
            return self.fn(*args)
        key = tuple((tuple(a.shape), a.dtype, a.device) for a in args)
        # Static buffers are inference tensors: every copy into them happens in inference mode.
        with torch.inference_mode():
            entry = self._graphs.get(key)
            if entry is None:
                entry = self._graphs[key] = self._capture(args)
            for i, (static, value) in enumerate(zip(entry.inputs, args, strict=True)):
                if i in self.constant_inputs and entry.sources[i] is value:
                    continue
                static.copy_(value)
                if i in self.constant_inputs:
                    entry.sources[i] = value
            entry.graph.replay()
        with torch.no_grad():
            return entry.output.clone()

    @property
    def captured_shapes(self) -> list[tuple]:
        return [tuple(shape for shape, _, _ in key) for key in self._graphs]

    def _capture(self, args: tuple[Tensor, ...]) -> _Captured:
        device = args[0].device
        inputs = tuple(a.detach().clone() for a in args)
        with torch.cuda.device(device):
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(self.warmup):
                    self.fn(*inputs)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                output = self.fn(*inputs)
        log.debug("captured a CUDA graph for input shapes %s", [tuple(a.shape) for a in args])
        return _Captured(graph, inputs, output, dict.fromkeys(range(len(args))))
