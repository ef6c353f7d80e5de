"""The fast UNet compiled ahead of time (torch.export + AOTInductor): built once, then loaded in seconds.

`torch.compile` traces the whole UNet again at every start-up (and with weight freezing compiles it again,
its AOTAutograd cache skipping frozen graphs), which is what keeps `--fast compile` from starting within
seconds. An AOTInductor package holds the compiled kernels and their launcher; the weights are not in it
but handed over from the live module at load (`load_constants(..., user_managed=True)`), so a package
never runs stale weights and one package serves every checkpoint of the same architecture (what AOTInductor
folds from the weights alone is computed from the loaded ones at the first run; the module must not be
changed in place afterwards, which the fast path's frozen copies never are).

A package is keyed by everything its code depends on: torch version, device, the module's architecture
(its repr, including the fast path's choices), the name, shape, dtype and strides of every weight, the
input signature, and the source files of the networks and of the fast path. It is built on first use of
a signature, written under a temporary name and renamed into `<user cache>/aot/`.

On the CPU (tiny configuration, 2 cores, torch 2.13): the first start 49 s (export and build), later ones
3.4 s, outputs equal to 1e-6 (`benchmarks/bench_startup.py --tiny --aot`). On CUDA with torch 2.11.0+cu130
(H200) loading any package, even a three-layer module's with default options, kills the process in the
loader, so the pipeline does not offer this path; `uvidm serve` compiles in the background instead
(`Pipeline.compile_in_background`, docs/PERFORMANCE.md).
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import secrets
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from uvidm_backend.cache_dirs import user_cache_dir

log = logging.getLogger(__name__)

_SOURCES = [Path(__file__).parent, Path(__file__).parents[1] / "models"]
#: Weights stay out of the package, and what AOTInductor computes from them alone (transposed or broadcast
#: weights) is computed when they are loaded: folded at build time it would freeze the example's values.
_CONFIG = {"aot_inductor.package_constants_in_so": False, "aot_inductor.use_runtime_constant_folding": True}
_FOLDED = "_FOLDED_CONST_"


def default_package_dir() -> Path:
    return user_cache_dir() / "aot"


def package_key(module: nn.Module, args: tuple[Tensor, ...]) -> str:
    """A hex digest of what the compiled code of `module(*args)` depends on (not the weights' values)."""
    digest = hashlib.sha256()

    def add(*parts: object) -> None:
        digest.update(repr(parts).encode())

    device = args[0].device
    add(torch.__version__, platform.machine(), device.type,
        torch.cuda.get_device_name(device) if device.type == "cuda" else "")
    add(repr(module))
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        add(name, tuple(tensor.shape), tensor.dtype, tensor.stride(), tensor.device.type)
    for arg in args:
        add(tuple(arg.shape), arg.dtype, arg.stride())
    for folder in _SOURCES:
        for source in sorted(folder.glob("*.py")):
            digest.update(source.read_bytes())
    return digest.hexdigest()[:24]


class AOTCompiled:
    """`module(*args)` run from AOTInductor packages, one per input signature, built or loaded on first use."""

    def __init__(self, module: nn.Module, package_dir: Path | None = None):
        self.module = module
        self.package_dir = package_dir
        self._runners: dict[tuple, Callable[..., Tensor]] = {}

    def __call__(self, *args: Tensor) -> Tensor:
        signature = tuple((tuple(a.shape), a.dtype, a.device, a.stride()) for a in args)
        runner = self._runners.get(signature)
        if runner is None:
            runner = self._runners[signature] = self._load(args)
        return runner(*args)

    def package_path(self, args: tuple[Tensor, ...]) -> Path:
        return (self.package_dir or default_package_dir()) / f"unet-{package_key(self.module, args)}.pt2"

    def _load(self, args: tuple[Tensor, ...]) -> Callable[..., Tensor]:
        path = self.package_path(args)
        if not path.is_file():
            build_package(self.module, args, path)
        # Single-threaded: no locking around a run, which CUDA graph capture would trip over.
        runner = torch._inductor.aoti_load_package(str(path), run_single_threaded=True)
        constants = {**dict(self.module.named_parameters()), **dict(self.module.named_buffers())}
        needed = runner.get_constant_fqns()
        missing = [name for name in needed if name not in constants and not name.startswith(_FOLDED)]
        if missing:
            raise RuntimeError(f"{path} needs constants this module lacks ({', '.join(missing[:5])}); delete it")
        # The folded constants (weight transposes, broadcasts) are computed from these at the first run.
        runner.load_constants({name: constants[name] for name in needed if name in constants},
                              check_full_update=False, user_managed=True)
        log.info("loaded the compiled UNet from %s", path)
        return runner


def build_package(module: nn.Module, args: tuple[Tensor, ...], path: Path) -> Path:
    """Exports `module(*args)` and compiles it into an AOTInductor package at `path` (atomically)."""
    log.info("compiling the UNet ahead of time into %s (once; minutes)", path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{secrets.token_hex(4)}.pt2")  # the packager wants the suffix
    try:
        # Export traces outside inference mode, on ordinary copies of the example inputs.
        with torch.inference_mode(False), torch.no_grad():
            examples = tuple(a.clone() for a in args)
            program = torch.export.export(module, examples, strict=False)
            torch._inductor.aoti_compile_and_package(program, package_path=str(tmp), inductor_configs=_CONFIG)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
