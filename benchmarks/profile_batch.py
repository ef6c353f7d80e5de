"""Where a batch's time goes: the networks' stages alone, their parts, the files alone, and the whole run.

    PYTHONPATH=. python benchmarks/profile_batch.py [--device cuda] [--full-model] [--photos 64] [--batch 32]
        [--sampler dpmpp:20] [--texture-size 1024] [--photo t1.jpg] [--landmarks landmarks.json] [--models DIR]

Prints, for one batch size: (1) on photos prepared beforehand: `Pipeline.run_networks` alone, then
`generate_prepared` (the networks, then the finishing on the same thread), then the two overlapped on two
threads as `run_jobs` runs them (heads/s and each stage's median seconds a batch); (2) the same with the GPU
synchronised around the parts of the stages (seconds a batch per part: where the per-photo loops cost);
(3) the main thread's hottest functions (cProfile) over one batch; (4) the files alone, by `run_jobs`'s
writers, and (4b) each file of one folder on one thread; (5) the whole `run_jobs` as `uvidm generate DIR
--batch-size N` runs it.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_batch import NETWORK_STAGES, model_folder, photo_jobs  # noqa: E402
from bench_pipeline import default_photo  # noqa: E402

from uvidm_backend.pipeline import GenerateOptions  # noqa: E402
from uvidm_backend.pipeline.folder_run import run_jobs  # noqa: E402
from uvidm_backend.pipeline.pipeline import Pipeline  # noqa: E402


class PartTimer:
    """Wraps callables so that each call is timed between GPU synchronisations, summed per name."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._undo: list = []

    def wrap(self, owner, attribute: str, name: str) -> None:
        original = getattr(owner, attribute)

        def timed(*args, **kwargs):
            if self.cuda:
                torch.cuda.synchronize()
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                if self.cuda:
                    torch.cuda.synchronize()
                self.seconds[name] += time.perf_counter() - started
                self.calls[name] += 1

        setattr(owner, attribute, timed)
        self._undo.append((owner, attribute, original))

    def restore(self) -> None:
        for owner, attribute, original in reversed(self._undo):
            setattr(owner, attribute, original)
        self._undo.clear()


def stage_medians(heads) -> dict[str, float]:
    timings = [head.info["timings"] for head in heads if not isinstance(head, BaseException)]
    return {stage: statistics.median(t.get(stage, 0.0) for t in timings) for stage in NETWORK_STAGES}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--fast", default="auto")
    parser.add_argument("--full-model", action="store_true")
    parser.add_argument("--photos", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--sampler", default="dpmpp:20", help="sampler:steps")
    parser.add_argument("--texture-size", type=int, default=1024)
    parser.add_argument("--photo", type=Path)
    parser.add_argument("--models", type=Path, help="keep the random model folder here, reuse it if there")
    parser.add_argument("--landmarks", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared"
                        / "fixtures" / "landmarks.json")
    parser.add_argument("--skip-run", action="store_true", help="leave out the whole run_jobs (5)")
    args = parser.parse_args()
    photo = args.photo or default_photo()
    faces = json.loads(args.landmarks.read_text())[photo.name]["faces"]
    sampler, steps = args.sampler.split(":")
    options = GenerateOptions(sampler=sampler, steps=int(steps), texture_size=args.texture_size)
    with tempfile.TemporaryDirectory() as root:
        root = Path(root)
        paths = model_folder(root, args.full_model, args.models)
        pipeline = Pipeline.load(paths, device=args.device, fast=args.fast)
        print(f"{'full-size' if args.full_model else 'tiny'} model on {pipeline.device}, fast={pipeline.fast}, "
              f"torch {torch.__version__}, {args.photos} photos, batch {args.batch}, {args.sampler}, "
              f"{args.texture_size} textures", flush=True)
        jobs = photo_jobs(photo, faces, args.photos, root / "run", options)
        with ThreadPoolExecutor(8) as pool:
            prepared = list(pool.map(lambda job: pipeline.prepare(job.photo, job.options), jobs))
        batches = [prepared[i:i + args.batch] for i in range(0, len(prepared), args.batch)]
        pipeline.generate_prepared(batches[0], run_batch=args.batch)  # warm-up: graphs captured at this size

        # (1) the networks alone, then one thread after the other, then the two overlapped as run_jobs does
        started = time.perf_counter()
        for batch in batches:
            pipeline.run_networks(batch, run_batch=args.batch)
        seconds = time.perf_counter() - started
        print(f"(1a) run_networks alone: {len(prepared) / seconds:.2f} heads/s", flush=True)
        started = time.perf_counter()
        heads = [head for batch in batches for head in pipeline.generate_prepared(batch, run_batch=args.batch)]
        seconds = time.perf_counter() - started
        print(f"(1b) generate_prepared (networks, then finish): {len(heads) / seconds:.2f} heads/s; stage medians "
              "(s a batch): " + ", ".join(f"{k} {v:.3f}" for k, v in stage_medians(heads).items()), flush=True)
        started = time.perf_counter()
        with ThreadPoolExecutor(1) as finisher:
            finished = [finisher.submit(pipeline.finish, pipeline.run_networks(batch, run_batch=args.batch))
                        for batch in batches]
            overlapped = [head for future in finished for head in future.result()]
        seconds = time.perf_counter() - started
        print(f"(1c) networks and finish overlapped: {len(overlapped) / seconds:.2f} heads/s; stage medians: "
              + ", ".join(f"{k} {v:.3f}" for k, v in stage_medians(overlapped).items()), flush=True)
        del overlapped, finished

        # (2) parts
        import uvidm_backend.condition as condition_module
        import uvidm_backend.pipeline.finish as finish_module
        import uvidm_backend.pipeline.pipeline as pipeline_module
        import uvidm_backend.pipeline.texture_stage as texture_stage_module

        timer = PartTimer(pipeline.device)
        stage = pipeline.condition_stage
        timer.wrap(pipeline_module, "photos_m11", "photos_m11 (upload, by size)")
        timer.wrap(pipeline_module, "crops_m11", "crops_m11 (upload)")
        if stage.fuse_tokens is not None:
            timer.wrap(stage, "fuse_tokens", "condition: fuser")
        else:
            timer.wrap(stage.condition_fuser, "forward", "condition: fuser")
        timer.wrap(stage.recon_net, "forward", "condition: recon_net")
        timer.wrap(stage, "parse_skin", "condition: parse_skin")
        timer.wrap(condition_module, "remap_texture_from_image", "condition: remap (per size)")
        timer.wrap(texture_stage_module, "remap_texture_from_image", "texture: remap (per size)")
        timer.wrap(texture_stage_module, "depth_visible_vertices", "texture: depth_visible_vertices")
        timer.wrap(texture_stage_module.textures, "blend_photo", "texture: blend_photo")
        timer.wrap(texture_stage_module.textures, "match_to_baseline", "texture: match_to_baseline")
        timer.wrap(pipeline_module, "fit_head", "fit_head")
        timer.wrap(pipeline_module.textures, "uint8_images", "texture: uint8_images (per image kind)")
        timer.wrap(pipeline_module.textures, "official_uint8", "texture: official_uint8")
        timer.wrap(finish_module, "head_meshes", "finish: head_meshes")
        timer.wrap(finish_module.textures, "read_only_images", "finish: read_only_images (per image kind)")
        timer.wrap(pipeline.finish_stage, "_previews", "finish: previews (per size)")
        timer.wrap(pipeline.finish_stage, "_result_info", "finish: result_info (per photo)")
        for batch in batches:
            pipeline.generate_prepared(batch, run_batch=args.batch)
        timer.restore()
        print("(2) parts, seconds a batch (calls a batch):")
        for name, total in sorted(timer.seconds.items(), key=lambda item: -item[1]):
            print(f"    {name:40s} {total / len(batches):.4f} ({timer.calls[name] / len(batches):.0f})")

        # (3) cProfile of the main thread over one batch
        profile = cProfile.Profile()
        profile.enable()
        pipeline.generate_prepared(batches[0], run_batch=args.batch)
        profile.disable()
        text = io.StringIO()
        pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(25)
        print("(3) main thread, one batch, by own time:\n" + "\n".join(text.getvalue().splitlines()[:45]))

        # (4) files alone, by the writers run_jobs uses
        from uvidm_backend.pipeline.writers import FolderWriters, default_write_processes

        processes = default_write_processes(pipeline.device.type)
        with FolderWriters(processes) as writers:
            writers.submit(heads[0], root / "files" / "warm").result()  # the processes started
            started = time.perf_counter()
            for future in [writers.submit(head, root / "files" / str(i)) for i, head in enumerate(heads)]:
                future.result()
            seconds = time.perf_counter() - started
        print(f"(4) files alone ({processes or 'no'} writer processes): {len(heads) / seconds:.2f} heads/s",
              flush=True)

        # (4b) one folder's files one after another on this thread, each PNG in one band (as a writer process)
        from uvidm_backend.pipeline import png as png_module
        from uvidm_backend.pipeline.export import write_glb, write_obj
        from uvidm_backend.pipeline.output_folder import write_bytes, write_png

        head, parts = heads[0], root / "parts"
        parts.mkdir()
        png_module.limit_threads(1)
        albedo_png = png_module.encode_png(head.albedo)
        files = {"albedo.png": lambda: write_png(head.albedo, parts / "albedo.png"),
                 "albedo_model.png": lambda: write_png(head.albedo_model, parts / "model.png"),
                 "albedo_model_matched.png": lambda: write_png(head.albedo_model_matched, parts / "matched.png"),
                 "preview.png": lambda: write_png(head.preview, parts / "preview.png"),
                 "head.obj": lambda: write_obj(head.mesh, parts / "head.obj", "head.mtl", "albedo.png"),
                 "head.glb": lambda: write_glb(head.mesh, parts / "head.glb", albedo_png),
                 "3 MB written and synced": lambda: write_bytes(bytes(3 << 20), parts / "bytes")}
        costs = {}
        for name, write in files.items():
            times = []
            for _ in range(3):
                started = time.perf_counter()
                write()
                times.append(time.perf_counter() - started)
            costs[name] = statistics.median(times)
        png_module.limit_threads(None)
        print("(4b) one folder's files on one thread (ms): "
              + ", ".join(f"{name} {seconds * 1000:.1f}" for name, seconds in costs.items()), flush=True)

        # (5) the whole run
        if not args.skip_run:
            summary = run_jobs(pipeline, jobs, args.batch, overwrite=True)
            print(f"(5) run_jobs: {len(jobs) / summary.seconds:.2f} heads/s ({len(summary.failures)} failed)")


if __name__ == "__main__":
    main()
