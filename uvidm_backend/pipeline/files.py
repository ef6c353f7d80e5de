"""The files stage: a finished head into its folder, atomically (nothing is left of a folder that failed)."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from uvidm_backend.fullhead.files import full_head_file_names, write_full_head_files
from uvidm_backend.fullhead.model import FullHead
from uvidm_backend.pipeline.export import TexturedMesh, write_glb, write_obj
from uvidm_backend.pipeline.output_folder import OutputFolder, write_bytes, write_json, write_png
from uvidm_backend.pipeline.png import encode_png

RESULT_FILE = "result.json"
#: Threads writing one folder's files side by side.
FOLDER_THREADS = 6


@dataclass(frozen=True, eq=False)
class Head:
    """A finished head, before it is written to files."""

    mesh: TexturedMesh
    albedo: np.ndarray  # (S, S, 3) uint8, the texture of the mesh
    albedo_model: np.ndarray  # the diffusion model's raw texture, uint8
    albedo_model_matched: np.ndarray  # the official colour-matched texture, uint8 as visualize.py writes it
    preview: np.ndarray  # (H, W, 3) uint8
    info: dict[str, Any] = field(default_factory=dict)  # result.json
    full: FullHead | None = None  # the ICT full head (options.head "full" or "both")
    bfm_head: bool = True  # whether head.glb / head.obj are written
    debug_maps: dict[str, np.ndarray] = field(default_factory=dict)  # file name -> uint8 image (--debug-maps)


def head_file_names(head: Head) -> list[str]:
    """The files `write_head_files` writes (result.json aside)."""
    names = ["albedo.png", "albedo_model.png", "albedo_model_matched.png", "preview.png", *head.debug_maps]
    if head.bfm_head:
        names += ["head.glb", "head.obj", "head.mtl"]
    if head.full is not None:
        names += full_head_file_names(head.full)
    return names


def write_head_files(head: Head, folder: OutputFolder, threads: int = FOLDER_THREADS) -> None:
    """head.glb, head.obj/.mtl (and/or the full head's files), albedo.png, albedo_model.png,
    albedo_model_matched.png, preview.png (and the debug maps) into `folder`.

    The albedo's PNG, the slowest file, is encoded first, on every core; the other files are
    written beside it (zlib and file I/O release the GIL), and the two that hold it as soon as it is
    there. Returns, or raises the first error, only once no writer is left running (so that a failed
    folder can be removed).
    """
    with ThreadPoolExecutor(max_workers=threads) as writers:  # leaving the block waits for every writer
        albedo_png = writers.submit(encode_png, head.albedo)
        written = [writers.submit(write_png, head.preview, folder / "preview.png"),
                   writers.submit(write_png, head.albedo_model, folder / "albedo_model.png"),
                   writers.submit(write_png, head.albedo_model_matched, folder / "albedo_model_matched.png"),
                   *(writers.submit(write_png, image, folder / name) for name, image in head.debug_maps.items())]
        if head.bfm_head:
            written.append(writers.submit(write_obj, head.mesh, folder / "head.obj", "head.mtl", "albedo.png"))
        if head.full is not None:
            written.append(writers.submit(write_full_head_files, head.full, folder))
        png = albedo_png.result()  # once, for albedo.png and inside head.glb
        written.append(writers.submit(write_bytes, png, folder / "albedo.png"))
        if head.bfm_head:
            written.append(writers.submit(write_glb, head.mesh, folder / "head.glb", png))
        for future in written:
            future.result()


def write_head_folder(head: Head, out_dir: Path, overwrite: bool = False, started: float | None = None,
                      threads: int = FOLDER_THREADS) -> Path:
    """Every file of `head` and result.json (with the files' time and, from `started`, the total) into
    `out_dir`, atomically: on any failure nothing is left behind. `threads`: files written at once."""
    files_started = time.perf_counter()
    with OutputFolder(Path(out_dir), overwrite=overwrite) as folder:
        write_head_files(head, folder, threads)
        info = dict(head.info)
        timings = {**info["timings"], "files": round(time.perf_counter() - files_started, 4)}
        if started is not None:
            timings["total"] = round(time.perf_counter() - started, 4)
        info["timings"] = timings
        info["files"] = sorted([*head_file_names(head), RESULT_FILE])
        write_json(info, folder / RESULT_FILE)
    return Path(out_dir)


def folder_is_complete(folder: Path) -> bool:
    """Whether `folder` holds a finished head: its result.json and every file that lists."""
    try:
        info = json.loads((folder / RESULT_FILE).read_text())
        names = info["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return isinstance(names, list) and all(isinstance(n, str) and (folder / n).is_file() for n in names)
