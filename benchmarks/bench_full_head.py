"""The full head's cost and quality: `python benchmarks/bench_full_head.py [--ict DIR] [--bfm DIR]`.

Prints, as JSON: one-time costs (ICT conversion, cached load, ICT<->BFM correspondence, cached), the
per-request cost of the full head (fit, textures, files) at --texture-size, and quality numbers:
landmark and surface residual of the fit to a BFM head, the texture's seam error (colour difference of
UV-seam vertices, 0..255), the recovery of a known ICT head (identity and expression), and the counts
(vertices, triangles, shape keys, open edges of the skin).

--ict: a folder of ICT FaceKit files (FaceXModel/); default: the synthetic fixture. --bfm: a BFM folder;
default: the synthetic BFM head at about the real one's density. The cache files are written into --ict.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from uvidm_backend.devtools.ict_fixture import write_ict_folder
from uvidm_backend.devtools.synthetic_head import synthetic_head, write_bfm_folder
from uvidm_backend.fullhead.correspondence import CACHE_FILE as CORRESPONDENCE_FILE
from uvidm_backend.fullhead.correspondence import build_correspondence
from uvidm_backend.fullhead.files import write_full_head_files
from uvidm_backend.fullhead.fit import FitSystem, fit_full_head
from uvidm_backend.fullhead.ict_files import CACHE_FILE, load_ict_model
from uvidm_backend.fullhead.model import FullHeadModel
from uvidm_backend.geometry.bfm_files import load_bfm
from uvidm_backend.geometry.face_model import FaceModel


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ict", type=Path, help="ICT FaceKit files (FaceXModel/); default: the synthetic fixture")
    parser.add_argument("--bfm", type=Path, help="BFM folder; default: the synthetic head at about real density")
    parser.add_argument("--texture-size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (the target machine has 2 cores)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    scratch = Path(tempfile.mkdtemp(prefix="uvidm-bench-full-"))
    ict_dir = args.ict or write_ict_folder(scratch / "ict")
    bfm_dir = args.bfm or write_bfm_folder(scratch / "BFM", synthetic_head(0, 1.25))
    for stale in (CACHE_FILE, CORRESPONDENCE_FILE):
        (ict_dir / stale).unlink(missing_ok=True)
    report: dict = {"ict": str(ict_dir), "bfm": str(bfm_dir), "texture_size": args.texture_size,
                    "threads": args.threads, "device": args.device}
    ict, report["ict_convert_s"] = timed(load_ict_model, ict_dir)
    _, report["ict_cached_load_s"] = timed(load_ict_model, ict_dir)
    bfm = load_bfm(bfm_dir)
    face_model = FaceModel.whole_head(bfm, dtype=torch.float64)
    mean = face_model.mean_shape.reshape(-1, 3).numpy()
    _, report["model_first_load_s"] = timed(FullHeadModel.load, ict_dir, bfm, mean)  # builds the correspondence
    model, report["model_cached_load_s"] = timed(FullHeadModel.load, ict_dir, bfm, mean)
    generator = torch.Generator().manual_seed(0)
    id_coeff = torch.randn(1, face_model.id_dims, generator=generator, dtype=torch.float64)
    exp_coeff = torch.randn(1, face_model.exp_dims, generator=generator, dtype=torch.float64)
    shape, identity_shape = face_model.compute_shape(id_coeff, exp_coeff)
    texels = args.texture_size
    u, v = torch.meshgrid(torch.linspace(0, 1, texels), torch.linspace(0, 1, texels), indexing="xy")
    albedo = torch.stack([0.6 + 0.2 * u, 0.45 + 0.1 * v, 0.4 + 0.0 * u])[None].float().to(args.device)
    _, report["first_request_s"] = timed(model.make_head, identity_shape[0].numpy(), shape[0].numpy(), albedo,
                                         args.texture_size)  # rasterises the UV layouts at this size
    times, write_times = [], []
    for _ in range(args.repeats):
        head, seconds = timed(model.make_head, identity_shape[0].numpy(), shape[0].numpy(), albedo, args.texture_size)
        times.append(seconds)
        out = scratch / "out"
        out.mkdir(exist_ok=True)
        write_times.append(timed(write_full_head_files, head, out)[1])
    report["request_s_median"] = round(float(np.median(times)), 4)
    report["files_s_median"] = round(float(np.median(write_times)), 4)
    report["request_plus_files_s"] = round(report["request_s_median"] + report["files_s_median"], 4)
    report.update({key: head.info[key] for key in ("vertices", "triangles", "ict_vertices", "shape_keys",
                                                    "landmark_residual_mm", "surface_residual_mm")})
    report["matched_skin_vertices"] = int((model.correspondence.texture_weight > 0).sum())
    report["fitted_vertices"] = int(len(model.correspondence.fit_vertices))
    report["open_skin_edges"] = open_skin_edges(model)
    report["glb_bytes"] = (scratch / "out" / "head_full.glb").stat().st_size
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
