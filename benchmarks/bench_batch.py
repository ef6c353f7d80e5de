"""Heads per second over a folder of photos, per batch size: `uvidm generate DIR --batch-size N` as it runs.

    PYTHONPATH=. python benchmarks/bench_batch.py [--device cuda] [--full-model] [--photos 256]
        [--batch 1 8 16 32] [--samplers dpmpp:20 ddim:50] [--fast auto] [--texture-size 1024]
        [--photo t1.jpg] [--landmarks landmarks.json] [--models DIR]

N copies of insightface's t1.jpg (each with one of its six faces), every file written, the model load
excluded (one warm-up batch per batch size first: CUDA graphs are captured per batch size). Prints per
sampler and batch size the heads/s of the whole run (`folder_run.run_jobs`: photos prepared and files
written on threads beside the networks), the single request's time (`generate_to_folder`, one photo), and
the slowest stage of a batch (median over the batches, from result.json's timings; the files stage is per
photo, on the writer threads). `--full-model`: the released UV-IDM configuration with random weights
(`bench_pipeline.full_size_model_folder`). `--models DIR`: the random model folder is kept there and reused by
later runs (the full-size one takes a minute to write).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pipeline import default_photo, full_size_model_folder  # noqa: E402

from uvidm_backend.devtools.model_folder import write_model_folder  # noqa: E402
from uvidm_backend.pipeline import GenerateOptions  # noqa: E402
from uvidm_backend.pipeline.folder_run import PhotoJob, run_jobs  # noqa: E402
from uvidm_backend.pipeline.pipeline import Pipeline  # noqa: E402
from uvidm_backend.registry import ModelPaths  # noqa: E402

NETWORK_STAGES = ("condition", "diffusion", "decode", "texture", "mesh", "preview")


def photo_jobs(photo: Path, faces: list, count: int, out: Path, options: GenerateOptions) -> list[PhotoJob]:
    folder = out / "photos"
    folder.mkdir(parents=True, exist_ok=True)
    data = photo.read_bytes()
    jobs = []
    for i in range(count):
        copy = folder / f"p{i:04d}{photo.suffix}"
        copy.write_bytes(data)
        face = options.__class__(**{**options.to_dict(), "landmarks": faces[i % len(faces)]["lm5"]})
        jobs.append(PhotoJob(copy, out / "heads" / copy.stem, face))
    return jobs


def model_folder(root: Path, full_model: bool, models: Path | None):
    """The random-weight model folder: written under `root`, or kept in (and reused from) `models`."""
    if models is not None and (models / "weights").is_dir():
        return ModelPaths.resolve(models / "weights", models / "BFM")
    folder = models or root / "models"
    return full_size_model_folder(folder) if full_model else write_model_folder(folder)


def bench(pipeline: Pipeline, jobs: list[PhotoJob], batch: int, writers: tuple[int, int] | None = None
          ) -> tuple[float, str]:
    """(heads/s, "stage seconds" of the slowest stage of a batch). `writers`: (processes, threads each) instead of
    the default writers of `uvidm generate`. The writers start before the timed run (as `uvidm generate` starts them
    while the models load)."""
    from uvidm_backend.pipeline.writers import FolderWriters, default_write_processes

    warm = [PhotoJob(job.photo, job.folder.with_name(job.folder.name + "-warm"), job.options) for job in jobs[:batch]]
    pool = FolderWriters(*writers) if writers else FolderWriters(default_write_processes(pipeline.device.type))
    with pool:
        run_jobs(pipeline, warm, batch, overwrite=True, writers=pool)
        summary = run_jobs(pipeline, jobs, batch, overwrite=True, writers=pool)
    if summary.failures:
        raise RuntimeError(f"{len(summary.failures)} photos failed, first: {summary.failures[0]}")
    timings = [json.loads((job.folder / "result.json").read_text())["timings"] for job in jobs]
    stages = {stage: statistics.median(t.get(stage, 0.0) for t in timings) for stage in (*NETWORK_STAGES, "files")}
    slowest = max(stages, key=stages.get)
    return len(jobs) / summary.seconds, f"{slowest} {stages[slowest]:.3f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--fast", default="auto")
    parser.add_argument("--full-model", action="store_true")
    parser.add_argument("--photos", type=int, default=256)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8, 16, 32])
    parser.add_argument("--samplers", nargs="+", default=["dpmpp:20", "ddim:50"], help="sampler:steps")
    parser.add_argument("--texture-size", type=int, default=1024)
    parser.add_argument("--photo", type=Path, help="default: insightface's t1.jpg")
    parser.add_argument("--models", type=Path, help="keep the random model folder here, reuse it if there")
    parser.add_argument("--landmarks", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared"
                        / "fixtures" / "landmarks.json")
    parser.add_argument("--writers", nargs="+", default=[], metavar="PROCESSES:THREADS",
                        help="also run with these writer pools (processes:threads each), after the default")
    args = parser.parse_args()
    photo = args.photo or default_photo()
    faces = json.loads(args.landmarks.read_text())[photo.name]["faces"]
    with tempfile.TemporaryDirectory() as root:
        root = Path(root)
        paths = model_folder(root, args.full_model, args.models)
        pipeline = Pipeline.load(paths, device=args.device, fast=args.fast)
        device = torch.cuda.get_device_name(pipeline.device) if pipeline.device.type == "cuda" else platform.processor()
        print(f"{'full-size' if args.full_model else 'tiny'} model, {pipeline.device} ({device or 'cpu'}), "
              f"fast={pipeline.fast}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
              f"{args.photos} photos, {args.texture_size} textures")
        for spec in args.samplers:
            sampler, steps = spec.split(":")
            options = GenerateOptions(sampler=sampler, steps=int(steps), texture_size=args.texture_size)
            jobs = photo_jobs(photo, faces, args.photos, root / spec.replace(":", "-"), options)
            pipeline.generate_to_folder(jobs[0].photo, root / "single-warm", jobs[0].options, overwrite=True)
            started = time.perf_counter()
            pipeline.generate_to_folder(jobs[0].photo, root / "single", jobs[0].options, overwrite=True)
            single = time.perf_counter() - started
            print(f"{sampler} {steps}: single request {single * 1000:.0f} ms")
            for batch in args.batch:
                rate, slowest = bench(pipeline, jobs, batch)
                print(f"{sampler} {steps}: batch {batch:3d}: {rate:7.2f} heads/s, slowest stage of a batch: {slowest}")
                for pool_spec in args.writers:
                    processes, threads = (int(value) for value in pool_spec.split(":"))
                    rate, slowest = bench(pipeline, jobs, batch, (processes, threads))
                    print(f"{sampler} {steps}: batch {batch:3d}, writers {processes}x{threads}: {rate:7.2f} heads/s, "
                          f"slowest stage of a batch: {slowest}", flush=True)


if __name__ == "__main__":
    main()
