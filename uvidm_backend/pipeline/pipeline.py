"""Photos in, textured BFM heads out: the backend's main job, one photo or a batch of them.

photo -> face (insightface or given points) -> alignment (official preprocessing) [`prepare`, CPU] ->
condition stage (BFM fit, face parsing, partial UV texture, tokens) and the one `Fit` of the output heads
[`fit`; full heads' geometry starts on a CPU thread] -> sampling -> decoding [`sampling`] -> textures (the
official colour match, the mesh's albedo) [`texture_stage`] -> meshes, full heads, previews, result.json
[`finish`] -> files [`files`].

One `Pipeline` holds the loaded models (load once, reuse for every photo). `generate` returns one head
in memory and `generate_to_folder` writes it atomically; `generate_batch` and `generate_prepared` run
several photos through the networks at once (`GenerateOptions.batch_key` says which can share a batch),
each photo with its own seed, progress and failure; `run_networks` and `finish`, its two halves, let a
folder run finish one batch while the next one's networks run.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from uvidm_backend.condition import ConditionStage
from uvidm_backend.devices import pick_device
from uvidm_backend.fullhead.files import full_head_folder, has_full_head_files
from uvidm_backend.fullhead.model import FullHeadModel
from uvidm_backend.geometry.align import extract_lm5_from_lm68
from uvidm_backend.geometry.bfm_files import BFMData, load_bfm
from uvidm_backend.geometry.face_model import FaceModel
from uvidm_backend.geometry.raster import get_rasterizer
from uvidm_backend.geometry.uv_tables import UVLayouts
from uvidm_backend.models.stack import LatentDiffusionConfig, load_latent_diffusion, load_recon_net
from uvidm_backend.pipeline import texture as textures
from uvidm_backend.pipeline.errors import ModelFilesMissing
from uvidm_backend.pipeline.faces import FaceDetector
from uvidm_backend.pipeline.fast_path import FastPath, choose_fast_path, compiled_fast_path
from uvidm_backend.pipeline.files import Head, write_head_folder
from uvidm_backend.pipeline.finish import BatchInFlight, FinishStage, NetworkOutput
from uvidm_backend.pipeline.fit import Fit, fit_head
from uvidm_backend.pipeline.gil import quick_gil_handoffs
from uvidm_backend.pipeline.images import load_photo
from uvidm_backend.pipeline.mesh import outward_triangles
from uvidm_backend.pipeline.options import FAST_MODES, GenerateOptions
from uvidm_backend.pipeline.prepare import PreparedPhoto, align, crops_m11, photos_m11, prepare_photo
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
        self._full_head_lock = threading.Lock()
        # Full heads' geometry (CPU) is fitted here while the GPU samples their textures.
        self._shaper = ThreadPoolExecutor(1, thread_name_prefix="uvidm-full-head")
        self.finish_stage = FinishStage(device, self.head_model, self.triangles, self.uv, self.export_triangles,
                                        self.export_uv, self.rasterizer, self.full_head_model,
                                        {"front_mask": self.front_mask_source, "uv_tables": self.uv_tables_source})

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
        with self._full_head_lock:
            return self._load_full_head()

    def _load_full_head(self) -> FullHeadModel:
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
        (`tracker`, `indices`: `generate_batch`'s progress, and which of its photos `items` are.)
        The same as `finish(run_networks(...))`, which a folder run calls on two threads."""
        return self.finish(self.run_networks(items, progress, run_batch, tracker, indices))

    def run_networks(self, items: Sequence[PreparedPhoto], progress: Sequence[Progress | None] | None = None,
                     run_batch: int | None = None, tracker: BatchProgress | None = None,
                     indices: Sequence[int] | None = None) -> BatchInFlight:
        """The first half of `generate_prepared`: the networks' stages of a batch, one batch at a time. Its
        heads are made by `finish`, which may run on another thread beside the next batch's networks."""
        if tracker is None:
            tracker = BatchProgress(list(progress) if progress is not None else [None] * len(items), self.device)
            indices = range(len(items))
        indices = list(indices)
        output = None
        if items:
            with self._gpu:
                try:
                    output = self._run_networks(items, tracker, run_batch)
                except BatchStopped:
                    pass
                except Exception as error:  # noqa: BLE001 - a failed batch fails each of its photos
                    for index in tracker.alive():
                        tracker.failed.setdefault(index, error)
        return BatchInFlight(items, indices, tracker, output)

    def finish(self, batch: BatchInFlight) -> list[Head | Exception]:
        """The second half of `generate_prepared`: the heads of a batch whose networks have run
        (`run_networks`), one result per item, its head or the exception that failed it alone."""
        heads = {}
        if batch.output is not None and batch.tracker.alive():
            try:
                heads = self.finish_stage(batch)
            except BatchStopped:
                pass
            except Exception as error:  # noqa: BLE001 - a failed batch fails each of its photos
                for index in batch.tracker.alive():
                    batch.tracker.failed.setdefault(index, error)
        return [heads[index] if index in heads else batch.tracker.failed[index] for index in batch.indices]

    @torch.inference_mode()
    def _run_networks(self, items: Sequence[PreparedPhoto], tracker: BatchProgress,
                      run_batch: int | None) -> NetworkOutput:
        options = items[0].options
        device = self.device
        fast_path = self.fast_path  # under the generation lock: a background swap comes before or after
        run_batch = fast_path.batch_to_run(max(len(items), run_batch or 0))

        tracker.start("condition")
        crop = crops_m11(items, device)
        photos = photos_m11(items, device)
        trans_params = torch.cat([item.trans_params() for item in items]).to(device)
        condition = self.condition_stage(crop, photos, trans_params)
        fit = fit_head(self.recon_net, self.head_model, (crop + 1) * 0.5, trans_params)
        full_head_shapes = self._shape_full_heads(fit, items)

        tracker.start("diffusion")
        latent = sample_latents(fast_path.eps_model, condition.tokens, [item.options.seed for item in items],
                                options, self.networks, fast_path.sampler_updates, run_batch,
                                callback=lambda step: tracker.report((step.index + 1) / step.total))

        tracker.start("decode")
        generated = decode_textures(fast_path.decode, latent, run_batch)

        tracker.start("texture")
        made = self.texture_stage(fit, generated, condition, options)
        # Laid out as images on the device; `finish` copies each kind from it once for the batch.
        output = NetworkOutput(fit=fit, made=made, condition=condition,
                               albedo=textures.uint8_images(made.albedo), model=textures.uint8_images(generated),
                               matched=textures.official_uint8(made.matched), precision=fast_path.precision(),
                               run_batch=run_batch, done=_recorded_event(device), full_head_shapes=full_head_shapes)
        tracker.finish()
        return output

    def _shape_full_heads(self, fit: Fit, items: Sequence[PreparedPhoto]) -> dict[int, Future]:
        """Starts the geometry of the full heads the batch asks for (`FullHeadModel.shape_head`) on a CPU thread,
        by position in the batch; the finishing stage paints them once the textures are there."""
        wanted = [k for k, item in enumerate(items) if item.options.head != "bfm"]
        if not wanted:
            return {}
        try:
            model = self.full_head_model()
        except Exception as error:  # noqa: BLE001 - those photos fail alone, in the finishing stage
            failed: Future = Future()
            failed.set_exception(error)
            return dict.fromkeys(wanted, failed)
        identity = fit.id_shape[wanted].double().cpu().numpy()  # one copy from the device for the batch
        with_expression = [k for k in wanted if items[k].options.expression == "photo"]
        posed = (dict(zip(with_expression, fit.shape[with_expression].double().cpu().numpy(), strict=True))
                 if with_expression else {})
        return {k: self._shaper.submit(model.shape_head, identity[i], posed.get(k)) for i, k in enumerate(wanted)}

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


def _recorded_event(device: torch.device) -> torch.cuda.Event | None:
    """An event recorded on the device's current CUDA stream (None off CUDA): where another stream may start
    reading what was computed before it."""
    if device.type != "cuda":
        return None
    event = torch.cuda.Event()
    event.record(torch.cuda.current_stream(device))
    return event
