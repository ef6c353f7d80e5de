"""`uvidm generate ... --ray [ADDRESS]`: a folder of photos spread over every GPU of a machine or a Ray cluster.

Ray Data's `map_batches` with one actor per GPU (`HeadMaker`, each holding a loaded `Pipeline`); an actor
runs the same `run_jobs` as a run without Ray, writing each photo's folder atomically where its output path
points (a shared file system on a cluster), and returns one row per photo: done, skipped or failed with
the reason. The command then writes failures.json and the exit code as without Ray.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from uvidm_backend.pipeline.errors import UVIDMError
from uvidm_backend.pipeline.options import GenerateOptions

INSTALL = 'pip install "uvidm-blender[ray]"'


class RayMissing(UVIDMError):
    """Ray (with Ray Data) is not installed."""


class HeadMaker:
    """A Ray actor: one loaded pipeline on one device; `__call__` makes the heads of a batch of rows."""

    def __init__(self, load: dict, batch_size: int | None):
        from uvidm_backend.pipeline.folder_run import default_batch_size
        from uvidm_backend.pipeline.pipeline import Pipeline
        from uvidm_backend.pipeline.writers import FolderWriters, default_write_processes
        from uvidm_backend.registry import ModelPaths

        self.pipeline = Pipeline.load(ModelPaths.resolve(load["weights"], load["bfm"]), device=load["device"],
                                      use_ema=load["ema"], trust_pickle=load["trust_pickle"],
                                      corrected_ear_mask=load["corrected_ear_mask"], fast=load["fast"])
        self.batch_size = batch_size or default_batch_size(self.pipeline.device)
        self.overwrite = load["overwrite"]
        # One pool of writers for the actor's life (each call of the actor is one run_jobs).
        self.writers = FolderWriters(default_write_processes(self.pipeline.device.type))

    def __call__(self, rows: dict) -> dict:
        import json

        from uvidm_backend.pipeline.folder_run import PhotoJob, run_jobs

        jobs = [PhotoJob(Path(photo), Path(folder), GenerateOptions(**_options(json.loads(options))))
                for photo, folder, options in zip(rows["photo"], rows["folder"], rows["options"], strict=True)]
        states: dict[str, tuple[str, str]] = {}
        run_jobs(self.pipeline, jobs, self.batch_size, overwrite=self.overwrite, writers=self.writers,
                 on_result=lambda job, state, error: states.__setitem__(str(job.folder), (state, error or "")))
        return {"photo": [str(job.photo) for job in jobs], "folder": [str(job.folder) for job in jobs],
                "state": [states[str(job.folder)][0] for job in jobs],
                "error": [states[str(job.folder)][1] for job in jobs]}


def _options(options: dict) -> dict:
    if options.get("landmarks") is not None:
        options["landmarks"] = tuple(tuple(point) for point in options["landmarks"])
    return options


def import_ray():
    if importlib.util.find_spec("ray") is None or importlib.util.find_spec("ray.data") is None:
        raise RayMissing(f"--ray needs Ray with Ray Data: {INSTALL} (or pip install \"ray[data]>=2.9\")")
    import ray

    return ray


def run_with_ray(args: argparse.Namespace, photos: list[Path], base_options: GenerateOptions) -> int:
    """`uvidm generate` through Ray: the same folders, failures.json and exit code as without it."""
    from uvidm_backend.commands.generate import photo_jobs
    from uvidm_backend.pipeline.folder_run import Failure, output_folders, write_failures

    ray = import_ray()
    jobs, failures = photo_jobs(photos, output_folders(photos, args.output), base_options, args)
    rows = run_rows(ray, [{"photo": str(job.photo.resolve()), "folder": str(job.folder.resolve()),
                           "options": _dumps(job.options)} for job in jobs], args)
    skipped = 0
    for row in rows:
        if row["state"] == "failed":
            failures.append(Failure(row["photo"], row["folder"], row["error"]))
            print(f"{row['photo']}: {row['error']}")
        elif row["state"] == "skipped":
            skipped += 1
        else:
            print(f"{row['photo']} -> {row['folder']}")
    failures_file = write_failures(args.output, failures, len(photos))
    if skipped:
        print(f"{skipped} photo(s) skipped: their folders were already complete (--overwrite redoes them)")
    if failures:
        print(f"{len(failures)} of {len(photos)} photo(s) failed; see the messages above and {failures_file}")
    return 1 if failures else 0


def run_rows(ray, rows: list[dict], args: argparse.Namespace) -> list[dict]:
    """The rows through `HeadMaker` actors: one per GPU of the cluster (one on a cluster without GPUs)."""
    if not rows:
        return []
    if not ray.is_initialized():
        # "local": Ray's own choice (RAY_ADDRESS, else a Ray started for this run); else a cluster's address.
        ray.init(address=None if args.ray == "local" else args.ray, include_dashboard=False)
    gpus = int(ray.cluster_resources().get("GPU", 0))
    load = {"weights": args.weights, "bfm": args.bfm, "device": "cuda" if gpus else args.device, "ema": args.ema,
            "trust_pickle": args.trust_pickle, "corrected_ear_mask": args.corrected_ear_mask, "fast": args.fast,
            "overwrite": args.overwrite}
    batch_size = args.batch_size or (32 if gpus else 1)
    actors = max(1, gpus)
    # Each actor takes whole groups of rows (a few batches each), so that its pipeline runs full batches.
    dataset = ray.data.from_items(rows).repartition(max(actors, len(rows) // (4 * batch_size) or 1))
    results = dataset.map_batches(HeadMaker, fn_constructor_args=(load, args.batch_size),
                                  batch_size=4 * batch_size, concurrency=actors, num_gpus=1 if gpus else 0)
    return list(results.iter_rows())


def _dumps(options: GenerateOptions) -> str:
    import json

    return json.dumps(options.to_dict())
