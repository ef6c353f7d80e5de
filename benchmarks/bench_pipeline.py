"""Per-stage timings of the backend, printed as a table.

    python benchmarks/bench_pipeline.py [--device cuda] [--runs 3] [--steps 50] [--batch 1 16 32]
        [--fast bf16 bf16/compile fp16] [--sampler ddim dpmpp] [--check] [--json out.json]

Two measurements:
1. generation: the released (full-size) UV-IDM configuration with random weights: condition
   fuser + sampling + decoding. Without `--fast`, float32 eager DDIM (eta 1) as the official inference
   runs it. `--fast SPEC ...` adds rows for the fast path (`uvidm_backend.acceleration`): SPEC is a dtype
   (fp32, bf16, fp16) followed by '/'-separated flags: `compile` (torch.compile, default mode, inside our
   CUDA graph), `autotune` (mode max-autotune-no-cudagraphs), `freeze` (Inductor weight freezing), `nocl`
   (UNet not channels-last), `deccl` (decoder channels-last), `nograph` (no CUDA graph), `dec32` (decoder in
   float32), `deccompile` (decoder through torch.compile too), `nohoist` (the UNet without `HoistedUNet`:
   cross-attention keys/values and time projections recomputed at every step), `cudnnbench`
   (torch.backends.cudnn.benchmark, global from then on), Inductor options `c1x1` (conv_1x1_as_mm), `cdt`
   (coordinate_descent_tuning), `noepilogue` (epilogue_fusion off), `mmtune` (max_autotune_gemm: Triton GEMM
   templates with fused epilogues where they win), `nosplit` (split_reductions off: one kernel per
   normalisation's statistics), `combo` (combo_kernels), `aggressive` (aggressive_fusion), `nogemm` (every
   convolution on cuDNN; by default those of at most 64 output pixels run as GEMMs, `GemmConv2d`), `gemm<N>`
   (those of at most N, e.g. gemm16), `pw<N>` (1 x 1 ones of at most N), `noflash` (every attention on
   PyTorch's choice, cuDNN; by default the small ones run without it, see `HoistedUNet`), `notable` (time
   projections computed at every step instead of looked up in the table of the 1000 trained timesteps),
   `nofuse` (the sampler update as separate eager kernels instead of one compiled kernel, `fused_update`),
   `condgraph` (the float32 condition fuser replayed from a CUDA graph), `nativegn` / `upcastgn` (GroupNorm32 in bf16,
   `native_group_norms`, or upcast to float32; by default native without torch.compile, upcast with it);
   plain `fp32` is the eager float32 reference.
   `--sampler dpmpp` adds DPM-Solver++(2M) rows (`--dpm-steps`, default 20, eta 0). `--check` compares
   each fast row with the float32 eager one on the same inputs and replayed noise (relative error
   max|fast - ref| / max|ref| of the final latent and of the decoded texture). "total ms" sums the three
   stages (condition fuser, sampler, decoder), each timed on its own between synchronisations;
   "end-to-end ms" runs them back to back as the pipeline does, synchronising once at the end (the host's
   preparation of a stage then overlaps the GPU's work on the previous one); heads/s is batch / end-to-end.
2. pipeline: photo -> files on the tiny random-weight model folder (uvidm_backend.devtools),
   per stage, with t1.jpg and its fixture landmarks (the numbers show the fixed costs of every
   stage around the networks: alignment, parsing, UV sampling, texture, preview, export).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from uvidm_backend.acceleration import EAGER_UPDATES, CudaGraphed, FastDecoder, FastUNet, fused_update, parse_dtype
from uvidm_backend.diffusion import ddim_schedule, sample_ddim
from uvidm_backend.diffusion.dpmsolver import dpmpp_schedule, sample_dpmpp_2m
from uvidm_backend.diffusion.schedule import NUM_TIMESTEPS
from uvidm_backend.models.stack import LatentDiffusionNetworks

log = logging.getLogger("bench")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, runs: int, warm: bool = True) -> tuple[float, object]:
    if warm:
        fn()
    times, result = [], None
    for _ in range(runs):
        synchronize(device)
        start = time.perf_counter()
        result = fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


#: Variant flags that set one `torch._inductor.config` option.
INDUCTOR_FLAGS = {"c1x1": ("conv_1x1_as_mm", True), "cdt": ("coordinate_descent_tuning", True),
                  "noepilogue": ("epilogue_fusion", False), "mmtune": ("max_autotune_gemm", True),
                  "nosplit": ("split_reductions", False), "combo": ("combo_kernels", True),
                  "aggressive": ("aggressive_fusion", True)}


#: Variant flags that set one field of `Variant` to a value.
FLAGS = {"compile": ("compile_mode", "default"), "autotune": ("compile_mode", "max-autotune-no-cudagraphs"),
         "nocl": ("channels_last", False), "nograph": ("cuda_graph", False), "dec32": ("decoder_dtype", torch.float32),
         "freeze": ("freeze", True), "deccl": ("decoder_channels_last", True), "nohoist": ("hoist", False),
         "deccompile": ("decoder_compile", True), "nogemm": ("gemm_conv_pixels", 0),
         "noflash": ("flash_small_attention", False), "condgraph": ("condition_graph", True),
         "notable": ("timestep_table", 0), "nofuse": ("fused_update", False), "cudnnbench": ("cudnn_benchmark", True),
         "nativegn": ("native_group_norm", True),
         "upcastgn": ("native_group_norm", False)}
#: Variant flags made of a prefix and a number, e.g. gemm16: the field the number goes to.
NUMBER_FLAGS = {"gemm": "gemm_conv_pixels", "pw": "gemm_pointwise_pixels"}


@dataclass(frozen=True)
class Variant:
    spec: str
    dtype: torch.dtype
    compile_mode: str | None = None
    channels_last: bool = True
    cuda_graph: bool = True
    decoder_dtype: torch.dtype | None = None
    freeze: bool = False
    decoder_channels_last: bool = False
    cudnn_benchmark: bool = False
    hoist: bool = True
    decoder_compile: bool = False
    inductor_options: tuple[tuple[str, object], ...] = ()
    gemm_conv_pixels: int = 64
    flash_small_attention: bool = True
    timestep_table: int = NUM_TIMESTEPS
    fused_update: bool = True
    gemm_pointwise_pixels: int | None = None
    condition_graph: bool = False
    native_group_norm: bool | None = None

    @property
    def reference(self) -> bool:
        return self.spec == "fp32"

    @classmethod
    def parse(cls, spec: str) -> Variant:
        dtype, *flags = spec.split("/")
        fields: dict[str, object] = {"dtype": parse_dtype(dtype)}
        for flag in flags:
            number = next((prefix for prefix in NUMBER_FLAGS if flag.startswith(prefix)
                           and flag[len(prefix):].isdigit()), None)
            if flag in FLAGS:
                name, value = FLAGS[flag]
                fields[name] = value
            elif flag in INDUCTOR_FLAGS:
                fields["inductor_options"] = (*fields.get("inductor_options", ()), INDUCTOR_FLAGS[flag])
            elif number is not None:
                fields[NUMBER_FLAGS[number]] = int(flag[len(number):])
            else:
                raise ValueError(f"unknown flag {flag!r} in {spec!r}")
        return cls(spec=spec, **fields)

    @property
    def unet_options(self) -> dict[str, object]:
        """`FastUNet`'s keyword arguments (hashable values: the Inductor options as pairs)."""
        return {"dtype": self.dtype, "compile_mode": self.compile_mode, "cuda_graph": self.cuda_graph,
                "channels_last": self.channels_last, "freeze": self.freeze, "hoist": self.hoist,
                "inductor_options": self.inductor_options, "gemm_conv_pixels": self.gemm_conv_pixels,
                "flash_small_attention": self.flash_small_attention, "timestep_table": self.timestep_table,
                "gemm_pointwise_pixels": self.gemm_pointwise_pixels, "native_group_norm": self.native_group_norm}

    def build(self, networks: LatentDiffusionNetworks, unets: dict[tuple, FastUNet]):
        """(eps model, decoder, condition fuser); variants that differ only in the decoder or the condition
        fuser share one FastUNet from `unets`."""
        if self.reference:
            return networks.unet, networks.decode_latent, networks.condition_fuser
        if self.cudnn_benchmark:  # global: also applies to every variant built after this one
            torch.backends.cudnn.benchmark = True
        options = self.unet_options
        key = tuple(options.items())
        if key not in unets:
            unets[key] = FastUNet(networks.unet, **{**options, "inductor_options": dict(self.inductor_options)})
        unet = unets[key]
        decoder = FastDecoder(networks, self.decoder_dtype or self.dtype, "default" if self.decoder_compile else None,
                              self.cuda_graph, self.decoder_channels_last)
        fuser = CudaGraphed(networks.condition_fuser) if self.condition_graph else networks.condition_fuser
        return unet, decoder, fuser


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual.float() - expected.float()).abs().max() / expected.float().abs().max()).item()


def unet_step_ms(unet, x, t, context, device, runs: int) -> float:
    unet(x, t, context)
    if device.type != "cuda":
        return timed(lambda: unet(x, t, context), device, runs, warm=False)[0] * 1000
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(runs):
        unet(x, t, context)
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / runs


def profile_steps(unet: FastUNet, x, t, context, steps: int = 1):
    """(profiler, its kernel events) of `steps` steps launched without our graph, after warm-up calls."""
    from torch.profiler import ProfilerActivity, profile

    for _ in range(3):
        unet.without_graph(x, t, context)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            unet.without_graph(x, t, context)
        torch.cuda.synchronize()
    return prof, [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]


def kernels_per_step(unet: FastUNet, x, t, context) -> tuple[int, int]:
    """(kernels, of which memsets) that one step launches, counted by the profiler without our graph."""
    _, kernels = profile_steps(unet, x, t, context)
    return len(kernels), sum("memset" in e.name.lower() for e in kernels)


def measure_sampler(sample, unet, decode, x_T, tokens, schedule, generator, device, runs: int):
    """(latent, texture) of a run with a fixed seed (also the warm-up), then median sampler and decode times."""
    latent = sample(unet, x_T, tokens, schedule, generator=torch.Generator(device=device).manual_seed(1234))
    image = decode(latent)
    # A new tokens tensor per run: per-generation work of the fast UNet (cross-attention keys and values)
    # is timed, not cached from the previous run.
    sampler_s, _ = timed(lambda: sample(unet, x_T, tokens.clone(), schedule, generator=generator), device, runs,
                         warm=False)
    decode_s, _ = timed(lambda: decode(latent), device, runs)
    return latent, image, sampler_s, decode_s


def measure_end_to_end(condition_fuser, partial, sample, unet, decode, x_T, schedule, generator, device,
                       runs: int) -> float:
    """Median seconds of the generation stage as the pipeline runs it: condition fuser, sampling and decoding
    back to back, one synchronisation at the end."""
    seconds, _ = timed(lambda: decode(sample(unet, x_T, condition_fuser(partial), schedule, generator=generator)),
                       device, runs, warm=False)
    return seconds


@torch.inference_mode()
def bench_fast(device: torch.device, batches: list[int], specs: list[str], samplers: list[str], steps: int,
               dpm_steps: int, runs: int, ref_runs: int, check: bool, budget: float) -> list[dict]:
    """One row per (batch, variant, sampler): stage times, heads/s, setup time and accuracy."""
    started = time.perf_counter()
    torch.manual_seed(0)
    with device:
        networks = LatentDiffusionNetworks().eval()
    variants = [Variant.parse(spec) for spec in specs]
    built: dict[str, tuple] = {}
    unets: dict[tuple, FastUNet] = {}
    schedules = {"ddim": ddim_schedule(networks.schedule, steps, 1.0), "dpmpp": dpmpp_schedule(networks.schedule,
                                                                                                dpm_steps)}
    samplers_fn = {"ddim": sample_ddim, "dpmpp": sample_dpmpp_2m}
    rows = []
    for batch in batches:
        generator = torch.Generator(device=device).manual_seed(batch)
        partial = torch.rand(batch, 3, 256, 256, device=device, generator=generator) * 2 - 1
        x_T = torch.randn(batch, 4, 32, 32, device=device, generator=generator)
        tokens = networks.condition_fuser(partial)
        t_probe = torch.full((batch,), 500, dtype=torch.long, device=device)
        eps_ref = networks.unet(x_T, t_probe, tokens)
        references: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for variant in variants:
            elapsed = time.perf_counter() - started
            if elapsed > budget and not variant.reference:
                log.warning("budget spent (%.0f s): skipping %s at batch %d", elapsed, variant.spec, batch)
                rows.append({"batch": batch, "variant": variant.spec, "skipped": True})
                continue
            setup = time.perf_counter()
            if variant.spec not in built:
                built[variant.spec] = variant.build(networks, unets)
            unet, decode, condition_fuser = built[variant.spec]
            eps = unet(x_T, t_probe, tokens)
            image = decode(x_T)
            synchronize(device)
            setup_s = time.perf_counter() - setup
            condition_s, _ = timed(functools.partial(condition_fuser, partial), device, runs)
            step_ms = unet_step_ms(unet, x_T, t_probe, tokens, device, 3 if variant.reference else 20)
            kernels = kernels_per_step(unet, x_T, t_probe, tokens) if device.type == "cuda" and not variant.reference \
                else ("", "")
            n_runs = ref_runs if variant.reference and batch > 1 else runs
            for sampler in samplers:
                schedule, sample = schedules[sampler], samplers_fn[sampler]
                if variant.fused_update and not variant.reference:
                    sample = functools.partial(sample, update=fused_update(EAGER_UPDATES[sampler]))
                row = {"batch": batch, "variant": variant.spec, "sampler": sampler,
                       "steps": steps if sampler == "ddim" else dpm_steps, "setup s": setup_s,
                       "UNet step ms": step_ms, "kernels": kernels[0], "memsets": kernels[1],
                       "eps rel err": relative_error(eps, eps_ref)}

                # The first (seeded) run warms up and gives the checked latent.
                latent, image, sampler_s, decode_s = measure_sampler(sample, unet, decode, x_T, tokens, schedule,
                                                                     generator, device, n_runs)
                if variant.reference:
                    references[sampler] = (latent, image)
                elif check and sampler in references:
                    ref_latent, ref_image = references[sampler]
                    row["latent rel err"] = relative_error(latent, ref_latent)
                    row["texture rel err"] = relative_error(image, ref_image)
                    row["texture rel err [0,1]"] = relative_error(((image + 1) / 2).clamp(0, 1),
                                                                  ((ref_image + 1) / 2).clamp(0, 1))
                total = condition_s + sampler_s + decode_s
                end_to_end_s = measure_end_to_end(condition_fuser, partial, sample, unet, decode, x_T,
                                                  schedule, generator, device, n_runs)
                row.update({"condition ms": condition_s * 1e3, "sampler ms": sampler_s * 1e3,
                            "decode ms": decode_s * 1e3, "total ms": total * 1e3,
                            "end-to-end ms": end_to_end_s * 1e3, "heads/s": batch / end_to_end_s})
                rows.append(row)
                log.info("%s", {k: round(v, 5) if isinstance(v, float) else v for k, v in row.items()})
            del eps, image
        if device.type == "cuda":
            log.info("batch %d done at %.0f s, max memory %.1f GiB", batch, time.perf_counter() - started,
                     torch.cuda.max_memory_allocated(device) / 2**30)
    return rows


def print_fast_rows(rows: list[dict]) -> None:
    columns = ["batch", "variant", "sampler", "steps", "UNet step ms", "kernels", "memsets", "condition ms",
               "sampler ms", "decode ms", "total ms", "end-to-end ms", "heads/s", "setup s", "eps rel err",
               "latent rel err", "texture rel err"]
    print(" | ".join(columns))
    for row in rows:
        if row.get("skipped"):
            print(f"{row['batch']} | {row['variant']} | skipped (budget)")
            continue
        cells = []
        for column in columns:
            value = row.get(column, "")
            cells.append(f"{value:.4g}" if isinstance(value, float) else str(value))
        print(" | ".join(cells))


@torch.inference_mode()
def bench_generation(device: torch.device, steps: int, batch: int, runs: int) -> dict[str, float]:
    with device:
        networks = LatentDiffusionNetworks().eval()
    generator = torch.Generator(device=device).manual_seed(0)
    partial = torch.rand(batch, 3, 256, 256, device=device, generator=generator) * 2 - 1
    x_T = torch.randn(batch, 4, 32, 32, device=device, generator=generator)
    ddim = ddim_schedule(networks.schedule, steps, 1.0)
    tokens = networks.condition_fuser(partial)
    rows = {}
    rows["condition fuser"], _ = timed(lambda: networks.condition_fuser(partial), device, runs)
    rows[f"DDIM {steps} steps"], latent = timed(
        lambda: sample_ddim(networks.unet, x_T, tokens, ddim, generator=generator), device, runs)
    rows["decode"], _ = timed(lambda: networks.decode_latent(latent), device, runs)
    rows["generation total"] = sum(rows.values())
    return rows


def default_photo() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("insightface")
    return Path(spec.origin).parent / "data" / "images" / "t1.jpg"


def full_size_model_folder(root: Path) -> object:
    """The fixture model folder with the released (full-size) UV-IDM configuration, random weights, and a
    synthetic head of about the real BFM head's size (29,161 vertices, 57,600 triangles)."""
    from uvidm_backend.devtools.model_folder import write_model_folder

    paths = write_model_folder(root, head_grid_step_deg=1.25)
    torch.manual_seed(0)
    networks = LatentDiffusionNetworks()
    torch.save({"state_dict": networks.official_state_dict(with_ema=False)}, paths.path("ldm.ckpt"))
    paths.path("ldm_config.json").unlink()
    return paths


def bench_pipeline(device: torch.device, samplers: dict[str, int], runs: int, photo: Path, landmarks_file: Path,
                   full_model: bool = False, fast: str = "auto", freeze: bool = True,
                   background_compile: bool = False) -> dict[str, float]:
    """Loads the pipeline once, then per sampler (name -> steps) a first request and `runs` timed ones.

    `background_compile`: graph mode compiling in the background (`Pipeline.compile_in_background`); requests
    with the first sampler run back to back until the compiled UNet takes over (their times are the "while
    compiling" rows), then the timed runs as above.
    """
    from uvidm_backend.devtools.model_folder import write_model_folder
    from uvidm_backend.pipeline import GenerateOptions
    from uvidm_backend.pipeline.pipeline import Pipeline

    landmarks = json.loads(landmarks_file.read_text())[photo.name]["faces"][0]["lm5"]
    rows = {}
    with tempfile.TemporaryDirectory() as root:
        models = Path(root) / "models"
        paths = full_size_model_folder(models) if full_model else write_model_folder(models)
        started = time.perf_counter()
        pipeline = Pipeline.load(paths, device=str(device), fast=fast, freeze=freeze,
                                 background_compile=background_compile)
        load_seconds = time.perf_counter() - started
        model = "full-size" if full_model else "tiny"
        rows[f"pipeline ({model} model, fast={pipeline.fast}): load models"] = load_seconds
        requests = {sampler: GenerateOptions(landmarks=landmarks, steps=steps, texture_size=1024, sampler=sampler)
                    for sampler, steps in samplers.items()}
        if background_compile:
            first_options = next(iter(requests.values()))
            rows.update(requests_while_compiling(pipeline, photo, Path(root) / "compiling", first_options, started,
                                                 label=f"pipeline ({model} model, background compile)"))
        mode = pipeline.fast
        if pipeline.fast == "compile" and not freeze:
            mode += " without freezing"
        for sampler, options in requests.items():
            steps = options.steps
            started = time.perf_counter()
            pipeline.generate_to_folder(photo, Path(root) / f"{sampler}-first", options)
            label = f"pipeline ({model} model, fast={mode}, {sampler} {steps})"
            rows[f"{label}: first request"] = time.perf_counter() - started
            totals = []
            for run in range(runs):
                out = pipeline.generate_to_folder(photo, Path(root) / f"{sampler}-{run}", options)
                timings = json.loads((out / "result.json").read_text())["timings"]
                timings["unaccounted"] = timings["total"] - sum(v for k, v in timings.items() if k != "total")
                totals.append(timings)
            rows.update({f"{label}: {stage}": statistics.median(t[stage] for t in totals) for stage in totals[0]})
            rows[f"{label}: slowest total"] = max(t["total"] for t in totals)
    return rows


def requests_while_compiling(pipeline, photo: Path, out: Path, options, started: float, label: str) -> dict[str, float]:
    """Requests back to back while `pipeline` compiles in the background: what a service's users see."""
    sampler, steps = options.sampler, options.steps
    totals = []
    while pipeline.describe()["compiling"]:
        request_started = time.perf_counter()
        pipeline.generate_to_folder(photo, out / str(len(totals)), options)
        totals.append(time.perf_counter() - request_started)
        if len(totals) == 1:
            first = time.perf_counter() - started
    compiled = pipeline.wait_compiled()
    rows = {f"{label}: load to first result": first} if totals else {}
    if len(totals) > 1:
        later = totals[1:]
        rows.update({f"{label}, {sampler} {steps}: median of {len(later)} later requests while compiling":
                     statistics.median(later),
                     f"{label}, {sampler} {steps}: slowest of them": max(later)})
    rows[f"{label}: {'compiled UNet took over' if compiled else 'compilation failed'} after load"] = \
        time.perf_counter() - started
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch", type=int, nargs="+", default=[1])
    parser.add_argument("--fast", nargs="+", metavar="SPEC",
                        help="fast-path variants, e.g. bf16 bf16/compile fp16 (the fp32 eager row is added first)")
    parser.add_argument("--sampler", nargs="+", default=["ddim"], choices=["ddim", "dpmpp"])
    parser.add_argument("--dpm-steps", type=int, default=20)
    parser.add_argument("--ref-runs", type=int, default=1, help="timed runs of the fp32 rows at batch > 1")
    parser.add_argument("--check", action="store_true", help="accuracy of each fast row against fp32 eager")
    parser.add_argument("--budget", type=float, default=float("inf"),
                        help="seconds after which remaining fast variants are skipped")
    parser.add_argument("--json", type=Path, help="also write the fast rows here")
    parser.add_argument("--skip-pipeline", action="store_true")
    parser.add_argument("--full-model", action="store_true",
                        help="pipeline run with the released configuration (random weights) and a head of the real "
                             "BFM size instead of the tiny model and head")
    parser.add_argument("--pipeline-fast", default="auto", choices=["auto", "off", "graph", "compile"])
    parser.add_argument("--pipeline-no-freeze", action="store_true",
                        help="with --pipeline-fast compile: no weight freezing (start-up from warm caches)")
    parser.add_argument("--pipeline-background-compile", action="store_true",
                        help="with --pipeline-fast graph or auto: compile in the background as `uvidm serve` does, "
                             "requests running meanwhile")
    parser.add_argument("--skip-generation", action="store_true")
    parser.add_argument("--photo", type=Path, help="photo for the pipeline run (default: insightface's t1.jpg)")
    parser.add_argument("--landmarks", type=Path,
                        default=Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "landmarks.json",
                        help="landmarks file in the fixtures layout (default: ../shared/fixtures/landmarks.json)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"device: {device} ({name}), torch {torch.__version__}, python {platform.python_version()}, "
          f"threads {torch.get_num_threads()}")
    if args.fast:
        specs = ["fp32", *[spec for spec in args.fast if spec != "fp32"]]
        fast_rows = bench_fast(device, args.batch, specs, args.sampler, args.steps, args.dpm_steps, args.runs,
                               args.ref_runs, args.check, args.budget)
        if args.json:
            args.json.write_text(json.dumps(fast_rows, indent=1))
        print_fast_rows(fast_rows)
        return
    rows: dict[str, float] = {}
    if not args.skip_generation:
        for batch in args.batch:
            rows.update({f"{key} (batch {batch})": value
                         for key, value in bench_generation(device, args.steps, batch, args.runs).items()})
    if not args.skip_pipeline:
        samplers = {sampler: args.dpm_steps if sampler == "dpmpp" else args.steps for sampler in args.sampler}
        rows.update(bench_pipeline(device, samplers, args.runs, args.photo or default_photo(), args.landmarks,
                                   args.full_model, args.pipeline_fast, not args.pipeline_no_freeze,
                                   args.pipeline_background_compile))
    width = max(map(len, rows))
    print(f"{'stage'.ljust(width)}  median ms")
    for key, seconds in rows.items():
        print(f"{key.ljust(width)}  {seconds * 1000:9.1f}")


if __name__ == "__main__":
    main()
