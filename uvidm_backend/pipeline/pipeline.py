"""Photos in, textured BFM heads out: the backend's main job, one photo or a batch of them.

photo -> face (insightface or given points) -> alignment (official preprocessing) [`prepare`, CPU] ->
condition stage (BFM fit, face parsing, partial UV texture, tokens) -> sampling -> decoding [`sampling`] ->
the one `Fit` of the output heads [`fit`] -> textures (the official colour match, the mesh's albedo)
[`texture_stage`] -> mesh [`mesh`] -> preview -> files [`files`].

One `Pipeline` holds the loaded models (load once, reuse for every photo). `generate` returns one head
in memory and `generate_to_folder` writes it atomically; `generate_batch` and `generate_prepared` run
several photos through the networks at once (`GenerateOptions.batch_key` says which can share a batch),
each photo with its own seed, progress and failure.
"""

from __future__ import annotations

import dataclasses
import logging
import platform
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from uvidm_backend import __version__
from uvidm_backend.condition import Condition, ConditionStage
from uvidm_backend.devices import pick_device
from uvidm_backend.fullhead.files import full_head_folder, has_full_head_files
from uvidm_backend.fullhead.model import FullHeadModel
from uvidm_backend.geometry.align import extract_lm5_from_lm68
from uvidm_backend.geometry.bfm_files import BFMData, load_bfm
from uvidm_backend.geometry.camera import CAMERA_DISTANCE, CENTER, FOCAL
from uvidm_backend.geometry.face_model import FaceModel
from uvidm_backend.geometry.raster import get_rasterizer
from uvidm_backend.geometry.uv_tables import UVLayouts
from uvidm_backend.models.stack import LatentDiffusionConfig, load_latent_diffusion, load_recon_net
from uvidm_backend.pipeline import texture as textures
from uvidm_backend.pipeline.errors import ModelFilesMissing
from uvidm_backend.pipeline.faces import FaceDetector
from uvidm_backend.pipeline.fast_path import FastPath, choose_fast_path, compiled_fast_path
from uvidm_backend.pipeline.files import Head, write_head_folder
from uvidm_backend.pipeline.fit import Fit, fit_head
from uvidm_backend.pipeline.gil import quick_gil_handoffs
from uvidm_backend.pipeline.images import load_photo
from uvidm_backend.pipeline.mesh import head_mesh, outward_triangles
from uvidm_backend.pipeline.options import FAST_MODES, GenerateOptions
from uvidm_backend.pipeline.prepare import PreparedPhoto, align, prepare_photo
from uvidm_backend.pipeline.preview import preview_scale, render_preview
from uvidm_backend.pipeline.progress import STAGES, BatchProgress, BatchStopped, Progress
from uvidm_backend.pipeline.sampling import decode_textures, sample_latents
from uvidm_backend.pipeline.texture_stage import TextureStage
from uvidm_backend.registry import ModelPaths

__all__ = ["STAGES", "Head", "Pipeline", "Progress", "Request", "pick_device"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Request:
    """One photo of a batch: where it comes from, its options, and its own progress callback."""

    photo: bytes | str | Path
    options: GenerateOptions = dataclasses.field(default_factory=GenerateOptions)
    progress: Progress | None = None


class Pipeline:
    """The loaded models and the stages from photos to textured heads."""

    def __init__(self, paths: ModelPaths, device: torch.device, networks, recon_net, bfm: BFMData,
                 detector: FaceDetector, corrected_ear_mask: bool = False, fast: str = "off", freeze: bool = True):
        self.paths = paths
        self.device = device
        self.networks = networks.to(device)
        self.recon_net = recon_net.to(device)
        self.bfm = bfm
        self.detector = detector
        self.rasterizer = get_rasterizer(device)
        self.head_model = FaceModel.whole_head(bfm, device=device)
        self.front_model = FaceModel.front_face(bfm, device=device)
        self.triangles = torch.from_numpy(bfm.full_triangles).to(device)
        self.uv = torch.from_numpy(bfm.uv.astype(np.float32)).to(device)
        self.front_idx = torch.from_numpy(bfm.front_idx).to(device)
        self.lm3d_5 = extract_lm5_from_lm68(bfm.lm3d)
        self.model_size = networks.config.texture_size
        # The official tables and mask when the BFM folder has them, else stand-ins; result.json and
        # `uvidm doctor` say which (they change the condition and the colours).
        official_tables = None
        if bfm.triangle_buffer is not None:
            if bfm.triangle_buffer.shape[0] == self.model_size:
                official_tables = (bfm.triangle_buffer, bfm.barycentric_weight)
            else:
                log.warning("the UV tables in %s are %d px, the model's texture %d px: rebuilt at %d px",
                            paths.bfm, bfm.triangle_buffer.shape[0], self.model_size, self.model_size)
        self.layouts = UVLayouts(self.uv, self.triangles, device, official_tables)
        self.uv_tables_source = "official" if official_tables is not None else "rebuilt"
        model_layout = self.layouts.at(self.model_size)
        # The fast path is chosen here, once; a background compilation may later replace it whole.
        self.freeze = freeze
        self.fast_path: FastPath = choose_fast_path(self.networks, fast, device, freeze)
        self.condition_stage = ConditionStage(
            self.networks.recon_net, self.networks.seg_model, self.networks.condition_fuser, self.head_model,
            model_layout.vertex_index, model_layout.barycentric_weight, corrected_ear_mask,
            fuse_tokens=self.fast_path.fuse_tokens).to(device)
        if bfm.front_mask is not None:
            front_mask = textures.official_front_mask(bfm.front_mask, self.model_size).to(device)
            self.front_mask_source = "official"
        else:
            front_mask = textures.front_region_mask(self.triangles, model_layout.triangle_buffer,
                                                    model_layout.barycentric_weight, self.front_idx)
            self.front_mask_source = "footprint"
        self.front_mask = front_mask
        self.texture_stage = TextureStage(self.head_model, self.front_model, self.front_idx, self.triangles,
                                          self.layouts, front_mask, self.rasterizer, self.model_size)
        mean_shape = self.head_model.mean_shape.reshape(-1, 3).cpu().numpy()
        # Shared by every head's mesh (read-only: not copied per head).
        self.export_triangles = np.ascontiguousarray(outward_triangles(mean_shape, bfm.full_triangles), np.int64)
        self.export_uv = np.ascontiguousarray(bfm.uv, np.float32)
        for shared in (self.export_triangles, self.export_uv):
            shared.setflags(write=False)
        # One generation at a time on the models; swapping in a UNet compiled in the background waits for it.
        self._gpu = threading.Lock()
        self._compiling: threading.Thread | None = None
        self._full_head: FullHeadModel | None = None

    @property
    def fast(self) -> str:
        """The fast path's mode now: "off", "graph" or "compile"."""
        return self.fast_path.mode

    def compile_in_background(self) -> threading.Thread | None:
        """Starts compiling the UNet (and the sampler updates) in a background thread; graph mode serves
        meanwhile and the compiled UNet takes over between two generations, the "compile" mode's speed
        without its start-up. Returns the thread, or None outside graph mode. A failure only logs a warning.
        """
        if self.fast != "graph" or self._compiling is not None:
            return None
        log.info("compiling the UNet in the background")
        self._compiling = threading.Thread(target=self._compile_and_swap, name="uvidm-compile", daemon=True)
        self._compiling.start()
        return self._compiling

    def _compile_and_swap(self) -> None:
        started = time.perf_counter()
        # The compiler holds the GIL for a minute or more: generations meanwhile get it back quickly.
        with quick_gil_handoffs():
            try:
                # Compiled off the lock, its kernels on a stream of their own: generations go on (slower while the
                # compiler shares the CPU with them).
                with torch.inference_mode(), torch.cuda.device(self.device), torch.cuda.stream(torch.cuda.Stream()):
                    compiled, inputs = compiled_fast_path(self.fast_path, self.networks, self.device, self.freeze)
                    torch.cuda.current_stream().synchronize()
                with self._gpu, torch.inference_mode():
                    compiled.eps_model(*inputs)  # its CUDA graph: captured while no generation runs
                    self.fast_path = compiled
                log.info("the compiled UNet took over after %.1f s", time.perf_counter() - started)
            except Exception:  # noqa: BLE001 - graph mode goes on serving; say why it stays
                log.warning("compiling the UNet in the background failed; graph mode stays", exc_info=True)

    def wait_compiled(self, timeout: float | None = None) -> bool:
        """Waits for a background compilation (`compile_in_background`); True once the compiled UNet runs."""
        if self._compiling is not None:
            self._compiling.join(timeout)
        return self.fast == "compile"

    @classmethod
    def load(cls, paths: ModelPaths | None = None, device: str = "auto", use_ema: bool = False,
             trust_pickle: bool = False, corrected_ear_mask: bool = False, fast: str = "auto",
             freeze: bool = True, background_compile: bool = False) -> Pipeline:
        """Loads every model file (raises `ModelFilesMissing` naming what to download).

        `fast`: "off" (float32, the reference numbers), "graph" (bf16 UNet in a CUDA graph),
        "compile" (also torch.compile: fastest, minutes of compilation at start-up), "auto" (graph
        on CUDA, off on the CPU). `freeze` (compile only): Inductor's weight freezing, a faster step
        but no warm-cache start-up (its AOTAutograd cache skips frozen graphs; docs/PERFORMANCE.md).
        `background_compile` (graph mode, "auto" on CUDA included): starts `compile_in_background`, for a
        service: graph mode's start-up, then compile mode's speed.
        """
        if fast not in FAST_MODES:
            raise ValueError(f"fast must be one of {', '.join(FAST_MODES)} (got {fast!r})")
        paths = paths or ModelPaths.resolve()
        missing = paths.missing()
        if missing:
            command = f"uvidm weights download --weights {paths.weights} --bfm {paths.bfm}"
            raise ModelFilesMissing([file.name for file in missing], command)
        config_file = paths.path("ldm_config.json")
        config = LatentDiffusionConfig.from_file(config_file) if config_file.is_file() else None
        started = time.perf_counter()
        networks = load_latent_diffusion(paths.locate("ldm.ckpt"), config, use_ema, trust_pickle)
        recon_net = load_recon_net(paths.locate("epoch_20.pth"), trust_pickle)
        # Face parsing: ldm.ckpt's copy (as in visualize.py, whose checkpoint load overrides the one
        # read from 79999_iter.pth), so the stand-alone file is not read here.
        bfm = load_bfm(paths.bfm)
        device = pick_device(device)
        if fast == "auto":
            fast = "graph" if device.type == "cuda" else "off"
        pipeline = cls(paths, device, networks, recon_net, bfm, FaceDetector(paths.insightface_root),
                       corrected_ear_mask, fast, freeze)
        log.info("models loaded in %.1f s on %s", time.perf_counter() - started, pipeline.device)
        if background_compile:
            pipeline.compile_in_background()
        return pipeline

    def describe(self) -> dict[str, Any]:
        return {"device": str(self.device), "dtype": "float32" if self.fast == "off" else "bfloat16",
                "fast": self.fast, "compiling": self._compiling is not None and self._compiling.is_alive(),
                "rasterizer": type(self.rasterizer).__name__,
                "texture_size_model": self.model_size,
                "models": ["ldm", "recon_net", "face_parsing", "bfm"]}

    def precision(self) -> dict[str, str]:
        """The arithmetic each network runs in now (result.json's `precision`): the UNet's changes when
        `compile_in_background` swaps in the compiled one, between two generations."""
        return self.fast_path.precision()

    def full_head_model(self) -> FullHeadModel:
        """The ICT full head's model, loaded on first use (raises `ModelFilesMissing` without its files)."""
        if self._full_head is None:
            folder = full_head_folder(self.paths)
            if not has_full_head_files(folder):
                raise ModelFilesMissing([f"{folder.name}/generic_neutral_mesh.obj"],
                                        f"uvidm weights download --full-head --weights {self.paths.weights}")
            mean_shape = self.head_model.mean_shape.reshape(-1, 3).cpu().double().numpy()
            self._full_head = FullHeadModel.load(folder, self.bfm, mean_shape)
        return self._full_head

    # -- the jobs --------------------------------------------------------------------------

    def prepare(self, photo_source: bytes | str | Path, options: GenerateOptions) -> PreparedPhoto:
        """The CPU stages of one photo (decoding, face, alignment); safe to call from several threads."""
        return prepare_photo(photo_source, options, self.detector, self.lm3d_5)

    def generate(self, photo_source: bytes | str | Path, options: GenerateOptions | None = None,
                 progress: Progress | None = None) -> Head:
        """The head of `photo_source` in memory (see `generate_to_folder` for the files): a batch of one."""
        (result,) = self.generate_batch([Request(photo_source, options or GenerateOptions(), progress)])
        if isinstance(result, BaseException):
            raise result
        return result

    def generate_batch(self, requests: Sequence[Request], run_batch: int | None = None) -> list[Head | Exception]:
        """The heads of `requests`, whose options share one `batch_key`: one result per request, the head or
        the exception that failed that photo alone (a bad photo, a cancel raised from its progress callback).
        `run_batch`: the batch size the networks run at (see `generate_prepared`)."""
        keys = {request.options.batch_key() for request in requests}
        if len(keys) > 1:
            raise ValueError("the requests of one batch must share their options' batch_key()")
        tracker = BatchProgress([request.progress for request in requests], self.device)
        photos: dict[int, Any] = {}
        prepared: dict[int, PreparedPhoto] = {}
        try:
            tracker.start("photo")
            for i in tracker.alive():
                try:
                    started = time.perf_counter()
                    photos[i] = (load_photo(requests[i].photo), time.perf_counter() - started)
                except Exception as error:  # noqa: BLE001 - this photo fails alone
                    tracker.fail(i, error)
            tracker.start("face")
            for i in tracker.alive():
                try:
                    prepared[i] = align(photos[i][0], requests[i].options, self.detector, self.lm3d_5, photos[i][1])
                except Exception as error:  # noqa: BLE001
                    tracker.fail(i, error)
        except BatchStopped:
            return [tracker.failed[i] for i in range(len(requests))]
        alive = tracker.alive()
        heads = self.generate_prepared([prepared[i] for i in alive], run_batch=run_batch, tracker=tracker,
                                       indices=alive) if alive else []
        results: list[Head | Exception] = [tracker.failed.get(i) for i in range(len(requests))]
        for i, head in zip(alive, heads, strict=True):
            results[i] = head
        return results

    def generate_prepared(self, items: Sequence[PreparedPhoto], progress: Sequence[Progress | None] | None = None,
                          run_batch: int | None = None, tracker: BatchProgress | None = None,
                          indices: Sequence[int] | None = None) -> list[Head | Exception]:
        """The networks' stages and the heads of prepared photos (`prepare`) sharing one `batch_key`, as a
        batch: one result per item, its head or the exception that failed it alone. `run_batch` pads the
        networks' batch to that size (a size already captured or compiled); by default the fast path's.
        (`tracker`, `indices`: `generate_batch`'s progress, and which of its photos `items` are.)"""
        if not items:
            return []
        if tracker is None:
            tracker = BatchProgress(list(progress) if progress is not None else [None] * len(items), self.device)
            indices = range(len(items))
        indices = list(indices)
        with self._gpu:
            try:
                heads = self._generate(items, tracker, indices, run_batch)
            except BatchStopped:
                heads = {}
            except Exception as error:  # noqa: BLE001 - a failed batch fails each of its photos
                heads = {}
                for index in tracker.alive():
                    tracker.failed.setdefault(index, error)
        return [heads[index] if index in heads else tracker.failed[index] for index in indices]

    @torch.inference_mode()
    def _generate(self, items: Sequence[PreparedPhoto], tracker: BatchProgress, indices: list[int],
                  run_batch: int | None) -> dict[int, Head]:
        options = items[0].options
        device = self.device
        fast_path = self.fast_path  # under the generation lock: a background swap comes before or after
        run_batch = fast_path.batch_to_run(max(len(items), run_batch or 0))

        tracker.start("condition")
        crop = torch.cat([item.crop_m11() for item in items]).to(device)
        photos_m11 = [item.photo_m11(device) for item in items]
        trans_params = torch.cat([item.trans_params() for item in items]).to(device)
        condition = self.condition_stage(crop, photos_m11, trans_params)

        tracker.start("diffusion")
        latent = sample_latents(fast_path.eps_model, condition.tokens, [item.options.seed for item in items],
                                options, self.networks, fast_path.sampler_updates, run_batch,
                                callback=lambda step: tracker.report((step.index + 1) / step.total))

        tracker.start("decode")
        generated = decode_textures(fast_path.decode, latent, run_batch)

        tracker.start("texture")
        photos01 = [(photo + 1) * 0.5 for photo in photos_m11]
        fit = fit_head(self.recon_net, self.head_model, (crop + 1) * 0.5, trans_params)
        made = self.texture_stage(fit, generated, condition, photos01, options)
        # Each image kind copied from the device once for the whole batch.
        albedo_images = textures.to_uint8_images(made.albedo)
        model_images = textures.to_uint8_images(generated)
        matched_images = textures.official_uint8_images(made.matched)

        positions = dict(zip(indices, range(len(items)), strict=True))

        def each(stage_fn: Callable[[int, int], Any], wanted: Callable[[PreparedPhoto], bool] = lambda _: True):
            done = {}
            for index in tracker.alive():
                k = positions[index]
                if wanted(items[k]):
                    try:
                        done[index] = stage_fn(index, k)
                    except Exception as error:  # noqa: BLE001 - this photo fails alone
                        tracker.fail(index, error)
            return done

        tracker.start("mesh")
        meshes = each(lambda _, k: head_mesh(
            fit, k, self.head_model, self.export_triangles, self.export_uv, albedo_images[k],
            neutral=items[k].options.expression != "photo",
            name=Path(items[k].photo.name).stem if items[k].photo.name else "head"))
        full_heads = {}
        if any(item.options.head != "bfm" for item in items):
            tracker.start("full_head")
            full_heads = each(lambda _, k: self._full_head_of(fit, k, made, items[k].options),
                              wanted=lambda item: item.options.head != "bfm")
        tracker.start("preview")
        previews = each(lambda _, k: self._preview(photos01[k], fit, k, made))
        tracker.finish()

        precision = fast_path.precision()
        heads = {}
        for index in tracker.alive():
            k = positions[index]
            item = items[k]
            timings = {**item.timings, **tracker.timings}
            info = self._result_info(item, fit, k, timings)
            info["texture"] = {"albedo": options.texture, "front_mask": self.front_mask_source,
                               "uv_tables": self.uv_tables_source}
            info["precision"] = precision
            info["batch"] = {"size": len(items), "run_at": run_batch}
            full_head = full_heads.get(index)
            if full_head is not None:
                info["full_head"] = full_head.info
            debug_maps = self._debug_maps(made, condition, k) if item.options.debug_maps else {}
            heads[index] = Head(mesh=meshes[index], albedo=albedo_images[k],
                                albedo_model=model_images[k], albedo_model_matched=matched_images[k],
                                preview=previews[index], info=info, full=full_head,
                                bfm_head=item.options.head != "full", debug_maps=debug_maps)
        return heads

    def _full_head_of(self, fit: Fit, k: int, made: textures.Textures, options: GenerateOptions):
        return self.full_head_model().make_head(
            fit.id_shape[k].cpu().double().numpy(),
            fit.shape[k].cpu().double().numpy() if options.expression == "photo" else None,
            made.albedo[k:k + 1].float(), options.texture_size)

    def _preview(self, photo01: torch.Tensor, fit: Fit, k: int, made: textures.Textures) -> np.ndarray:
        """preview.png: the head drawn over its photo, at most `MAX_PREVIEW_SIDE` pixels wide or high."""
        height, width = photo01.shape[-2:]
        scale = preview_scale(width, height)
        small = photo01 if scale == 1.0 else torch.nn.functional.interpolate(
            photo01, scale_factor=scale, mode="area", recompute_scale_factor=False)
        preview = render_preview(self.rasterizer, small, fit.projected[k:k + 1] * scale,
                                 fit.vertices_camera[k:k + 1, :, 2], self.triangles, self.uv, made.albedo[k:k + 1],
                                 made.shading[k:k + 1])
        return textures.to_uint8_image(preview)

    @staticmethod
    def _debug_maps(made: textures.Textures, condition: Condition, k: int) -> dict[str, np.ndarray]:
        """--debug-maps, at the model's size and written as visualize.py writes images: the partial texture
        the model is conditioned on, its mask, and the official `face_color_map` clipped to [0, 1]."""
        return {"condition.png": textures.official_uint8_image(condition.partial_texture[k:k + 1]),
                "condition_mask.png": textures.official_uint8_image(condition.mask[k:k + 1])[..., 0],
                "baseline.png": textures.official_uint8_image(made.baseline[k:k + 1])}

    def generate_to_folder(self, photo_source: bytes | str | Path, out_dir: str | Path,
                           options: GenerateOptions | None = None, progress: Progress | None = None,
                           overwrite: bool = False) -> Path:
        """Writes head.glb, head.obj/.mtl, albedo.png, albedo_model.png, albedo_model_matched.png, preview.png,
        result.json (and the debug maps) into `out_dir`, atomically: on any failure (or cancel) nothing is
        left behind."""
        started = time.perf_counter()
        head = self.generate(photo_source, options, progress)
        if progress is not None:
            progress("files", 1.0 - STAGES["files"])
        write_head_folder(head, Path(out_dir), overwrite, started)
        if progress is not None:
            progress("files", 1.0)
        return Path(out_dir)

    def _result_info(self, item: PreparedPhoto, fit: Fit, k: int, timings: dict[str, float]) -> dict[str, Any]:
        def as_list(tensor: torch.Tensor) -> list:
            return tensor[k].detach().cpu().double().numpy().round(7).tolist()

        photo, face, options, coefficients = item.photo, item.face, item.options, fit.coefficients
        return {
            "version": __version__,
            "photo": {"name": photo.name, "size": [photo.width, photo.height], "sha256": photo.sha256},
            "face": {"index": item.face_index, "box": [round(float(v), 2) for v in face.box],
                     "landmarks": np.asarray(face.points, dtype=float).round(2).tolist(),
                     "source": "given" if options.landmarks is not None else "detected",
                     "landmarks_source": face.landmarks_source},
            "coefficients": {name: as_list(value) for name, value in coefficients.as_dict().items()},
            "pose": {"angles_radians": as_list(coefficients.angle), "translation": as_list(coefficients.trans)},
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
