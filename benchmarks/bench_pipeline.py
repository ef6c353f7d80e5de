"""Per-stage timings of the backend, printed as a table.

    python benchmarks/bench_pipeline.py [--device cuda] [--runs 3] [--steps 50] [--batch 1]

Two measurements:
1. generation: the released (full-size) UV-IDM configuration with random weights: condition
   fuser + DDIM sampling (eta 1) + decoding, float32, as the official inference runs it.
2. pipeline: photo -> files on the tiny random-weight model folder (uvidm_backend.devtools),
   per stage, with t1.jpg and its fixture landmarks (the numbers show the fixed costs of every
   stage around the networks: alignment, parsing, UV sampling, texture, preview, export).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from uvidm_backend.diffusion import ddim_schedule, sample_ddim
from uvidm_backend.models.stack import LatentDiffusionNetworks


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, runs: int) -> tuple[float, object]:
    fn()  # warm-up
    times, result = [], None
    for _ in range(runs):
        synchronize(device)
        start = time.perf_counter()
        result = fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


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


def bench_pipeline(device: torch.device, steps: int, runs: int, photo: Path, landmarks_file: Path
                   ) -> dict[str, float]:
    from uvidm_backend.devtools.model_folder import write_model_folder
    from uvidm_backend.pipeline import GenerateOptions
    from uvidm_backend.pipeline.pipeline import Pipeline

    landmarks = json.loads(landmarks_file.read_text())[photo.name]["faces"][0]["lm5"]
    with tempfile.TemporaryDirectory() as root:
        pipeline = Pipeline.load(write_model_folder(Path(root) / "models"), device=str(device))
        options = GenerateOptions(landmarks=landmarks, steps=steps, texture_size=1024)
        pipeline.generate_to_folder(photo, Path(root) / "warm", options)
        totals = []
        for run in range(runs):
            out = pipeline.generate_to_folder(photo, Path(root) / f"run{run}", options)
            totals.append(json.loads((out / "result.json").read_text())["timings"])
    return {f"pipeline: {stage}": statistics.median(t[stage] for t in totals) for stage in totals[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch", type=int, nargs="+", default=[1])
    parser.add_argument("--skip-pipeline", action="store_true")
    parser.add_argument("--skip-generation", action="store_true")
    parser.add_argument("--photo", type=Path, help="photo for the pipeline run (default: insightface's t1.jpg)")
    parser.add_argument("--landmarks", type=Path,
                        default=Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "landmarks.json",
                        help="landmarks file in the fixtures layout (default: ../shared/fixtures/landmarks.json)")
    args = parser.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"device: {device} ({name}), torch {torch.__version__}, python {platform.python_version()}, "
          f"threads {torch.get_num_threads()}")
    rows: dict[str, float] = {}
    if not args.skip_generation:
        for batch in args.batch:
            rows.update({f"{key} (batch {batch})": value
                         for key, value in bench_generation(device, args.steps, batch, args.runs).items()})
    if not args.skip_pipeline:
        rows.update(bench_pipeline(device, args.steps, args.runs, args.photo or default_photo(), args.landmarks))
    width = max(map(len, rows))
    print(f"{'stage'.ljust(width)}  median ms")
    for key, seconds in rows.items():
        print(f"{key.ljust(width)}  {seconds * 1000:9.1f}")


if __name__ == "__main__":
    main()
