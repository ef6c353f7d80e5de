"""The full head's cost and quality:
`python benchmarks/bench_full_head.py [--ict DIR | --ict-cache ict_model.npz] [--bfm DIR] [--device cuda]`.

`--full-model [--models DIR] --request-samplers ddim:50 dpmpp:20`: the whole request (below) on the full-size
random-weight model with those samplers, as a request runs (default: the tiny model, two DDIM steps).

Prints, as JSON: one-time costs (ICT conversion, cached load, ICT<->BFM correspondence, eye textures,
cached), the first request at --texture-size (skin layout rasterised on the device) and the first one of a
new process (layout read from disk), the per-request cost of `make_head` and of its files, per part (fit,
shapes and normals, skin texture; OBJ, skin PNG, GLB), what the full head ADDS to a whole request
(`Pipeline.generate_to_folder` with head "both" against "bfm" on the random-weight model folder, its BFM
head at the real one's density, the ICT model injected), and quality numbers: landmark and surface residual
of the fit to a BFM head, the texture's seam error (colour difference of UV-seam vertices, 0..255), the
recovery of a known ICT head (identity and expression), and the counts (vertices, triangles, shape keys,
open edges of the skin).

--ict: a folder of ICT FaceKit files (FaceXModel/); its caches are deleted first and written there.
--ict-cache: the converted `ict_model.npz` alone (no sources); the caches go to a scratch folder.
Default: the synthetic fixture. --bfm: a BFM folder; default: the synthetic BFM head at about the real
one's density.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_batch import model_folder
from bench_pipeline import default_photo

from uvidm_backend.devtools.ict_fixture import write_ict_folder
from uvidm_backend.devtools.model_folder import write_model_folder
from uvidm_backend.devtools.synthetic_head import synthetic_head, write_bfm_folder
from uvidm_backend.fullhead import texture as paint
from uvidm_backend.fullhead.correspondence import build_correspondence
from uvidm_backend.fullhead.files import write_full_head_files
from uvidm_backend.fullhead.fit import FitSystem, fit_full_head
from uvidm_backend.fullhead.ict_files import CACHE_FILE, folder_key, load_ict_model, read_cache
from uvidm_backend.fullhead.model import METRES_PER_BFM_UNIT, FullHeadModel, part_normals
from uvidm_backend.geometry.bfm_files import load_bfm
from uvidm_backend.geometry.face_model import FaceModel
from uvidm_backend.pipeline import GenerateOptions
from uvidm_backend.pipeline.export import morphed_glb_bytes, write_morphed_obj
from uvidm_backend.pipeline.pipeline import Pipeline
from uvidm_backend.pipeline.png import encode_png
from uvidm_backend.registry import ModelPaths

REPOSITORY = Path(__file__).resolve().parents[1]
LANDMARKS = next((root / "shared" / "fixtures" / "landmarks.json" for root in (REPOSITORY, REPOSITORY.parent)
                  if (root / "shared" / "fixtures" / "landmarks.json").is_file()), None)


def timed(function, *args, **kwargs):
    started = time.perf_counter()
    value = function(*args, **kwargs)
    return value, time.perf_counter() - started


def seam_error(head) -> dict:
    """Colour spread (0..255) among the texture reads of each skin point that a UV seam splits."""
    part, material = head.mesh.parts[0], head.mesh.materials[0]
    texture = material.texture.astype(np.float64)
    height, width = texture.shape[:2]
    _, welded, counts = np.unique(part.vertices.round(7), axis=0, return_inverse=True, return_counts=True)
    welded = welded.reshape(-1)
    seam = np.flatnonzero(counts[welded] > 1)
    rows = np.clip((part.uv[seam, 1] * (height - 1)).round().astype(int), 0, height - 1)
    cols = np.clip((part.uv[seam, 0] * (width - 1)).round().astype(int), 0, width - 1)
    colour = texture[height - 1 - rows, cols]
    spread = np.array([np.ptp(colour[welded[seam] == group], axis=0).max() for group in np.unique(welded[seam])])
    return {"seam_points": len(spread), "seam_error_mean": round(float(spread.mean()), 2),
            "seam_error_p95": round(float(np.percentile(spread, 95)), 2),
            "seam_error_max": round(float(spread.max()), 2)}


def open_skin_edges(model: FullHeadModel) -> int:
    faces = model.parts[0].source_faces
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    return int((counts == 1).sum())


def recovery(ict, seed: int = 0) -> dict:
    """Fit to a BFM-format copy of a random ICT head's skin: how well identity and expression come back."""
    rng = np.random.default_rng(seed)
    skin = np.isin(ict.triangle_material, [ict.material_names.index(m) for m in ("M_Face", "M_BackHead")])
    correspondence = build_correspondence(ict, 0.1 * ict.neutral, ict.triangles[skin], ict.landmarks)
    system = FitSystem.build(ict, correspondence)
    identity = rng.standard_normal(len(ict.identity))
    expression = np.where(rng.random(len(ict.expressions)) < 0.15, rng.uniform(0.2, 0.8, len(ict.expressions)), 0.0)
    neutral = ict.neutral + np.einsum("k,knc->nc", identity, ict.identity)
    posed = neutral + np.einsum("e,enc->nc", expression, ict.expressions)
    fit = fit_full_head(ict, correspondence, system, 0.1 * neutral, ict.landmarks, 0.1 * posed)
    return {"identity_error_rms": round(float(np.sqrt(np.mean((fit.identity - identity) ** 2))), 4),
            "expression_error_max": round(float(np.abs(fit.expression - expression).max()), 4),
            "landmark_residual_mm": round(fit.landmark_residual * 100, 4)}


def synchronised(device: torch.device, function, *args):
    """`timed`, with the device's queued work finished before and counted after."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    sync()
    started = time.perf_counter()
    value = function(*args)
    sync()
    return value, time.perf_counter() - started


def median_ms(function, repeats: int) -> float:
    return round(1000 * statistics.median(timed(function)[1] for _ in range(repeats)), 2)


def part_timings(model: FullHeadModel, head, identity_shape: np.ndarray, shape: np.ndarray, albedo: torch.Tensor,
                 size: int, out: Path, repeats: int) -> dict:
    """Milliseconds (median) of the pieces of `make_head` and of `write_full_head_files`, each on its own."""
    ict, system = model.ict, model.system
    fit = fit_full_head(ict, model.correspondence, system, identity_shape, model.keypoints, shape)

    def shapes_and_normals():
        identity = ict.neutral + np.einsum("k,knc->nc", fit.identity.astype(np.float32), ict.identity)
        placed = fit.place(identity.astype(np.float64)) * METRES_PER_BFM_UNIT
        expression = np.einsum("e,enc->nc", fit.expression, ict.expressions)
        posed = placed + fit.place_offsets(expression) * METRES_PER_BFM_UNIT
        return [part_normals(posed, part, sums) for part, sums in zip(model.parts, model.normal_sums, strict=True)]

    to_metres = fit.scale * METRES_PER_BFM_UNIT * fit.rotation.T
    grid, share = model.skin_tensors(size, albedo)
    tone = paint.skin_tone(albedo, model.bfm_uv_of_vertex[model.tone_vertices])
    skin = head.mesh.materials[0].texture
    pngs = {**head.pngs, 0: encode_png(skin)}
    return {
        "fit": median_ms(lambda: fit_full_head(ict, model.correspondence, system, identity_shape, model.keypoints,
                                               shape), repeats),
        "shapes_and_normals": median_ms(shapes_and_normals, repeats),
        "morph_targets": median_ms(lambda: [t.transformed(to_metres) for t in model.targets_cm], repeats),
        "skin_tone": median_ms(lambda: paint.skin_tone(albedo, model.bfm_uv_of_vertex[model.tone_vertices]),
                               repeats),
        "skin_texture": median_ms(lambda: paint.skin_texture(albedo, grid, share, tone), repeats),
        "file_obj": median_ms(lambda: write_morphed_obj(head.mesh, out / "part.obj", "part.mtl",
                                                        write_textures=False), repeats),
        "file_skin_png": median_ms(lambda: encode_png(skin), repeats),
        "file_glb_bytes": median_ms(lambda: morphed_glb_bytes(head.mesh, pngs), repeats),
    }


def whole_request(model: FullHeadModel | None, ict_key: str, size: int, device: str, repeats: int, root: Path,
                  photo: Path, landmarks_file: Path, sampler: str = "ddim", steps: int = 2,
                  paths: ModelPaths | None = None) -> dict:
    """What the full head adds to `Pipeline.generate_to_folder`: head "both" against "bfm" (alternating), with
    `sampler` and `steps`, on the model folder `paths` (default: the tiny random-weight one with a BFM head of
    the real one's density) and t1.jpg with its fixture landmarks; `model` (the real ICT model, built for that
    BFM head) replaces the folder's synthetic one. (The full head's geometry is made while the texture is
    sampled: with the tiny model's two steps, nothing hides it.)"""
    root.mkdir(parents=True, exist_ok=True)  # also where the ICT model's caches go
    paths = paths or write_model_folder(root / "models", head_grid_step_deg=1.25, full_head=True)
    pipeline = Pipeline.load(paths, device=device)
    if model is not None:
        mean = pipeline.head_model.mean_shape.reshape(-1, 3).cpu().double().numpy()
        pipeline._full_head = FullHeadModel.from_ict(model.ict, ict_key, root, pipeline.bfm, mean)
    landmarks = json.loads(landmarks_file.read_text())[photo.name]["faces"][0]["lm5"]
    timings: dict[str, list[dict]] = {"bfm": [], "both": []}
    for run in range(repeats + 1):  # the first of each: warm-up (the skin layout at this size, graph capture)
        for head in ("bfm", "both") if run % 2 else ("both", "bfm"):  # either first as often
            options = GenerateOptions(landmarks=landmarks, sampler=sampler, steps=steps, texture_size=size,
                                      head=head)
            out = pipeline.generate_to_folder(photo, root / f"{head}-{run}", options)
            if run:
                timings[head].append(json.loads((out / "result.json").read_text())["timings"])

    def median(head: str, stage: str) -> float:
        return statistics.median(t.get(stage, 0.0) for t in timings[head])

    return {"sampler": f"{sampler}:{steps}", "request_bfm_s": round(median("bfm", "total"), 4),
            "request_both_s": round(median("both", "total"), 4),
            "adds_s": round(median("both", "total") - median("bfm", "total"), 4),
            "full_head_stage_s": round(median("both", "full_head"), 4),
            "files_bfm_s": round(median("bfm", "files"), 4), "files_both_s": round(median("both", "files"), 4),
            "adds_by_stages_s": round(median("both", "full_head") + median("both", "files") - median("bfm", "files"),
                                      4)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--ict", type=Path, help="ICT FaceKit files (FaceXModel/); default: the synthetic fixture")
    source.add_argument("--ict-cache", type=Path, help="a converted ict_model.npz, without the OBJ files")
    parser.add_argument("--bfm", type=Path, help="BFM folder; default: the synthetic head at about real density")
    parser.add_argument("--texture-size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (the target machine has 2 cores)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-request", action="store_true", help="skip the whole-request measurement")
    parser.add_argument("--photo", type=Path,
                        help="the whole request's photo, one of --landmarks (default: insightface's t1.jpg)")
    parser.add_argument("--landmarks", type=Path, default=LANDMARKS, help="landmarks.json of the shared fixtures")
    parser.add_argument("--request-samplers", nargs="+", default=["ddim:2"], metavar="SAMPLER:STEPS",
                        help="the whole request's samplers (ddim:50 is a request's default)")
    parser.add_argument("--full-model", action="store_true",
                        help="the whole request on the full-size random-weight model (as bench_batch.py)")
    parser.add_argument("--models", type=Path, help="with --full-model: keep that model folder here, reuse it")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    scratch = Path(tempfile.mkdtemp(prefix="uvidm-bench-full-"))
    bfm_dir = args.bfm or write_bfm_folder(scratch / "BFM", synthetic_head(0, 1.25))
    report: dict = {"texture_size": args.texture_size, "threads": args.threads, "device": args.device}
    if args.ict_cache is not None:
        cache_dir = scratch / "ict"
        cache_dir.mkdir()
        ict, report["ict_cached_load_s"] = timed(read_cache, args.ict_cache)
        with np.load(args.ict_cache, allow_pickle=False) as data:
            ict_key = str(data["key"])
        report["ict"] = str(args.ict_cache)
    else:
        cache_dir = args.ict or write_ict_folder(scratch / "ict")
        for stale in [CACHE_FILE, "bfm_correspondence.npz", *(p.name for p in cache_dir.glob("fullhead_*.npz"))]:
            (cache_dir / stale).unlink(missing_ok=True)
        _, report["ict_convert_s"] = timed(load_ict_model, cache_dir)
        ict, report["ict_cached_load_s"] = timed(load_ict_model, cache_dir)
        ict_key = folder_key(cache_dir)
        report["ict"] = str(cache_dir)
    report["bfm"] = str(bfm_dir)
    bfm = load_bfm(bfm_dir)
    face_model = FaceModel.whole_head(bfm, dtype=torch.float64)
    mean = face_model.mean_shape.reshape(-1, 3).numpy()
    # the first load builds the correspondence and the eye textures, the second reads both from disk
    _, report["model_first_load_s"] = timed(FullHeadModel.from_ict, ict, ict_key, cache_dir, bfm, mean)
    model, report["model_cached_load_s"] = timed(FullHeadModel.from_ict, ict, ict_key, cache_dir, bfm, mean)
    generator = torch.Generator().manual_seed(0)
    id_coeff = torch.randn(1, face_model.id_dims, generator=generator, dtype=torch.float64)
    exp_coeff = torch.randn(1, face_model.exp_dims, generator=generator, dtype=torch.float64)
    shape, identity_shape = (value[0].numpy() for value in face_model.compute_shape(id_coeff, exp_coeff))
    texels = args.texture_size
    u, v = torch.meshgrid(torch.linspace(0, 1, texels), torch.linspace(0, 1, texels), indexing="xy")
    albedo = torch.stack([0.6 + 0.2 * u, 0.45 + 0.1 * v, 0.4 + 0.0 * u])[None].float().to(device)
    # rasterises the skin layout at this size on the device and keeps it on disk
    _, report["first_request_s"] = synchronised(device, model.make_head, identity_shape, shape, albedo, texels)
    fresh = FullHeadModel.from_ict(ict, ict_key, cache_dir, bfm, mean)  # as a new process: the layout from disk
    _, report["first_request_new_process_s"] = synchronised(device, fresh.make_head, identity_shape, shape, albedo,
                                                            texels)
    times, write_times = [], []
    out = scratch / "out"
    out.mkdir()
    for _ in range(args.repeats):
        head, seconds = synchronised(device, model.make_head, identity_shape, shape, albedo, texels)
        times.append(seconds)
        write_times.append(timed(write_full_head_files, head, out)[1])
    report["request_s_median"] = round(float(np.median(times)), 4)
    report["files_s_median"] = round(float(np.median(write_times)), 4)
    report["request_plus_files_s"] = round(report["request_s_median"] + report["files_s_median"], 4)
    report["parts_ms"] = part_timings(model, head, identity_shape, shape, albedo, texels, out, args.repeats)
    photo = args.photo or default_photo()
    if args.no_request:
        pass
    elif not (photo.is_file() and args.landmarks and args.landmarks.is_file()):
        report["whole_request"] = f"skipped: no photo ({photo}) or landmarks ({args.landmarks})"
    else:
        paths = model_folder(scratch, True, args.models) if args.full_model else None
        report["request_model"] = "full-size, random weights" if args.full_model else "tiny, random weights"
        for name, steps in (entry.split(":") for entry in args.request_samplers):
            key = "whole_request" if len(args.request_samplers) == 1 else f"whole_request_{name}{steps}"
            report[key] = whole_request(model if args.ict or args.ict_cache else None, ict_key, texels, args.device,
                                        args.repeats, scratch / f"request-{name}{steps}", photo, args.landmarks,
                                        name, int(steps), paths)
    report.update({key: head.info[key] for key in ("vertices", "triangles", "ict_vertices", "shape_keys",
                                                    "landmark_residual_mm", "surface_residual_mm")})
    report["matched_skin_vertices"] = int((model.correspondence.texture_weight > 0).sum())
    report["fitted_vertices"] = int(len(model.correspondence.fit_vertices))
    report["open_skin_edges"] = open_skin_edges(model)
    report["glb_bytes"] = (out / "head_full.glb").stat().st_size
    report.update(seam_error(head))
    report["recovery"] = recovery(ict)
    for key, value in report.items():
        if isinstance(value, float):
            report[key] = round(value, 4)
    json.dump(report, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
