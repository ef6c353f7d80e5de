"""The finishing stage: a batch's heads once its networks have run (meshes, full heads, previews, result.json).

Its work is per photo and mostly on the CPU: copies from the device, the preview drawn at each photo's size,
result.json's numbers. It runs on a CUDA stream of its own and waits only for that stream, so that a folder
run (`folder_run`) finishes one batch on a second thread while the next batch's networks run; a single
request finishes right after its networks.
"""

from __future__ import annotations

import platform
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from uvidm_backend import __version__
from uvidm_backend.condition import Condition
from uvidm_backend.geometry.camera import CAMERA_DISTANCE, CENTER, FOCAL
from uvidm_backend.geometry.face_model import FaceModel
from uvidm_backend.photo_groups import PhotoGroups
from uvidm_backend.pipeline import texture as textures
from uvidm_backend.pipeline.files import Head
from uvidm_backend.pipeline.fit import Fit
from uvidm_backend.pipeline.mesh import head_meshes
from uvidm_backend.pipeline.prepare import PreparedPhoto
from uvidm_backend.pipeline.preview import preview_scale, render_preview
from uvidm_backend.pipeline.progress import BatchProgress


@dataclass(frozen=True, eq=False)
class NetworkOutput:
    """What the networks' stages made for a batch of B photos, on the device."""

    fit: Fit
    made: textures.Textures
    condition: Condition
    albedo: Tensor  # (B, S, S, 3) uint8, the meshes' textures (`texture.uint8_images`)
    model: Tensor  # (B, M, M, 3) uint8, the model's raw textures
    matched: Tensor  # (B, M, M, 3) uint8, the official colour-matched textures (truncated as visualize.py)
    precision: dict[str, str]
    run_batch: int
    done: torch.cuda.Event | None  # recorded after the last of the networks' work (CUDA)
    full_head_shapes: dict[int, Future] = field(default_factory=dict)  # `ShapedHead`s, by position in the batch


@dataclass(frozen=True, eq=False)
class BatchInFlight:
    """A batch between the networks and the finishing stage: its photos, their progress and failures so far,
    and the networks' output (None when the whole batch failed or stopped)."""

    items: Sequence[PreparedPhoto]
    indices: list[int]  # each item's photo in `tracker`
    tracker: BatchProgress
    output: NetworkOutput | None


class FinishStage:
    """Turns a `BatchInFlight` into heads: one at a time, on its own CUDA stream."""

    def __init__(self, device: torch.device, head_model: FaceModel, triangles: Tensor, uv: Tensor,
                 export_triangles: np.ndarray, export_uv: np.ndarray, rasterizer,
                 full_head_model: Callable[[], Any], texture_info: dict[str, str]):
        self.device, self.head_model, self.rasterizer = device, head_model, rasterizer
        self.triangles, self.uv = triangles.int(), uv  # one tensor for every preview: the rasterizer checks it once
        self.export_triangles, self.export_uv = export_triangles, export_uv
        self.full_head_model = full_head_model
        self.texture_info = texture_info
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self._lock = threading.Lock()  # one batch at a time on the stream

    def __call__(self, batch: BatchInFlight) -> dict[int, Head]:
        """The heads of the batch's photos still alive, by tracker index (failures are in `batch.tracker`)."""
        stream = self.stream
        with self._lock, torch.inference_mode(), (torch.cuda.stream(stream) if stream else nullcontext()):
            try:
                if stream is not None and batch.output.done is not None:
                    stream.wait_event(batch.output.done)
                return self._heads(batch)
            finally:
                # The networks' tensors go back to their stream's memory when the batch is dropped: nothing of
                # this stream may still read them then.
                if stream is not None:
                    stream.synchronize()

    def _heads(self, batch: BatchInFlight) -> dict[int, Head]:
        items, tracker, out = batch.items, batch.tracker, batch.output
        fit, made = out.fit, out.made
        positions = dict(zip(batch.indices, range(len(items)), strict=True))

        def each(stage_fn: Callable[[int], Any], wanted: Callable[[PreparedPhoto], bool] = lambda _: True) -> dict:
            done = {}
            for index in tracker.alive():
                k = positions[index]
                if wanted(items[k]):
                    try:
                        done[index] = stage_fn(k)
                    except Exception as error:  # noqa: BLE001 - this photo fails alone
                        tracker.fail(index, error)
            return done

        tracker.start("mesh")
        # Each kind of array copied from the device once for the whole batch.
        albedo_images, model_images, matched_images = (textures.read_only_images(images)
                                                       for images in (out.albedo, out.model, out.matched))
        neutral = [item.options.expression != "photo" for item in items]
        batch_meshes = head_meshes(fit, neutral, self.head_model, self.export_triangles, self.export_uv,
                                   albedo_images,
                                   [Path(item.photo.name).stem if item.photo.name else "head" for item in items])
        meshes = each(lambda k: batch_meshes[k])
        full_heads = {}
        if any(item.options.head != "bfm" for item in items):
            tracker.start("full_head")
            full_heads = each(lambda k: self._full_head(out.full_head_shapes[k], k, made, items[k]),
                              wanted=lambda item: item.options.head != "bfm")
        tracker.start("preview")
        previews = {}
        photos01 = out.condition.photos01
        for g, members in enumerate(photos01.members):
            try:
                images = self._previews(photos01, g, fit, made)
            except Exception as error:  # noqa: BLE001 - the photos of this size fail, the others go on
                for k in members:
                    if batch.indices[k] not in tracker.failed:
                        tracker.fail(batch.indices[k], error)
                continue
            previews.update((batch.indices[k], image) for k, image in zip(members, images, strict=True))
        tracker.finish()

        coefficients = {name: value.detach().double().cpu().numpy().round(7)
                        for name, value in fit.coefficients.as_dict().items()}
        heads = {}
        for index in tracker.alive():
            k = positions[index]
            item = items[k]
            info = self._result_info(item, coefficients, k, {**item.timings, **tracker.timings})
            info["texture"] = {"albedo": item.options.texture, **self.texture_info}
            info["precision"] = out.precision
            info["batch"] = {"size": len(items), "run_at": out.run_batch}
            full_head = full_heads.get(index)
            if full_head is not None:
                info["full_head"] = full_head.info
            debug_maps = _debug_maps(made, out.condition, k) if item.options.debug_maps else {}
            heads[index] = Head(mesh=meshes[index], albedo=albedo_images[k], albedo_model=model_images[k],
                                albedo_model_matched=matched_images[k], preview=previews[index], info=info,
                                full=full_head, bfm_head=item.options.head != "full", debug_maps=debug_maps)
        return heads

    def _full_head(self, shaped: Future, k: int, made: textures.Textures, item: PreparedPhoto):
        return self.full_head_model().paint_head(shaped.result(), made.albedo[k:k + 1].float(),
                                                 item.options.texture_size)

    def _previews(self, photos01: PhotoGroups, g: int, fit: Fit, made: textures.Textures) -> list[np.ndarray]:
        """preview.png of the photos of group `g`: each head drawn over its photo, at most `MAX_PREVIEW_SIDE`
        pixels wide or high."""
        group, rows = photos01.tensors[g], lambda batched: photos01.rows(batched, g)
        height, width = group.shape[-2:]
        scale = preview_scale(width, height)
        small = group if scale == 1.0 else torch.nn.functional.interpolate(
            group, scale_factor=scale, mode="area", recompute_scale_factor=False)
        previews = render_preview(self.rasterizer, small, rows(fit.projected) * scale,
                                  rows(fit.vertices_camera[..., 2]), self.triangles, self.uv, rows(made.albedo),
                                  rows(made.shading))
        return textures.read_only_images(textures.uint8_images(previews))

    def _result_info(self, item: PreparedPhoto, coefficients: dict[str, np.ndarray], k: int,
                     timings: dict[str, float]) -> dict[str, Any]:
        photo, face, options = item.photo, item.face, item.options
        return {
            "version": __version__,
            "photo": {"name": photo.name, "size": [photo.width, photo.height], "sha256": photo.sha256},
            "face": {"index": item.face_index, "box": [round(float(v), 2) for v in face.box],
                     "landmarks": np.asarray(face.points, dtype=float).round(2).tolist(),
                     "source": "given" if options.landmarks is not None else "detected",
                     "landmarks_source": face.landmarks_source},
            "coefficients": {name: value[k].tolist() for name, value in coefficients.items()},
            "pose": {"angles_radians": coefficients["angle"][k].tolist(),
                     "translation": coefficients["trans"][k].tolist()},
            "camera": {"focal": FOCAL, "center": CENTER, "distance": CAMERA_DISTANCE, "crop": 224,
                       "trans_params": np.asarray(item.alignment.trans_params, dtype=float).round(6).tolist()},
            "mesh": {"vertices": int(self.head_model.n_vertices), "faces": int(self.triangles.shape[0]),
                     "units": "metres", "up": "+Y", "front": "+Z", "pose": "canonical",
                     "expression": options.expression},
            "options": options.to_dict(),
            "timings": timings,
            "device": str(self.device),
            "versions": {"uvidm": __version__, "torch": torch.__version__, "numpy": np.__version__,
                         "python": platform.python_version()},
        }


def _debug_maps(made: textures.Textures, condition: Condition, k: int) -> dict[str, np.ndarray]:
    """--debug-maps, at the model's size and written as visualize.py writes images: the partial texture
    the model is conditioned on, its mask, and the official `face_color_map` clipped to [0, 1]."""
    return {"condition.png": textures.official_uint8_image(condition.partial_texture[k:k + 1]),
            "condition_mask.png": textures.official_uint8_image(condition.mask[k:k + 1])[..., 0],
            "baseline.png": textures.official_uint8_image(made.baseline[k:k + 1])}
