"""One photo in, a textured BFM head out: the backend's main job.

photo -> face (insightface or given five points) -> alignment (official preprocessing) ->
condition stage (BFM fit, face parsing, partial UV texture, tokens) -> DDIM sampling ->
decoding -> fit of the output head -> textures (the official colour match, the mesh's albedo) ->
mesh -> files.

One `Pipeline` holds the loaded models (load once, reuse for every photo); `generate`
returns the finished head in memory, `generate_to_folder` writes it atomically.
"""

from __future__ import annotations

import logging
import platform
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from uvidm_backend import __version__
from uvidm_backend.acceleration import EAGER_UPDATES, CudaGraphed, FastDecoder, compile_unet, warmed_fused_updates
from uvidm_backend.acceleration.compile_cache import use_persistent_compile_cache
from uvidm_backend.acceleration.fast import FastUNet, example_unet_inputs
from uvidm_backend.condition import Condition, ConditionStage
from uvidm_backend.devices import pick_device
from uvidm_backend.diffusion import ddim_schedule, dpmpp_schedule, sample_ddim, sample_dpmpp_2m
from uvidm_backend.diffusion.ddim import SamplerUpdate
from uvidm_backend.fullhead.files import (
    full_head_file_names,
    full_head_folder,
    has_full_head_files,
    write_full_head_files,
)
from uvidm_backend.fullhead.model import FullHead, FullHeadModel
from uvidm_backend.geometry.align import align_face, extract_lm5_from_lm68
from uvidm_backend.geometry.bfm_files import BFMData, load_bfm
from uvidm_backend.geometry.camera import CAMERA_DISTANCE, CENTER, FOCAL
from uvidm_backend.geometry.face_model import DEFAULT_INIT_LIT, FaceModel
from uvidm_backend.geometry.raster import get_rasterizer
from uvidm_backend.geometry.uv import remap_texture_from_image, uv_vertex_index
from uvidm_backend.geometry.uv_tables import uv_lookup_tables
from uvidm_backend.geometry.visibility import depth_visible_vertices
from uvidm_backend.models.stack import LatentDiffusionConfig, load_latent_diffusion, load_recon_net
from uvidm_backend.pipeline import texture as textures
from uvidm_backend.pipeline.errors import ModelFilesMissing
from uvidm_backend.pipeline.export import TexturedMesh, write_glb, write_obj
from uvidm_backend.pipeline.faces import DetectedFace, FaceDetector, face_from_landmarks, select_face
from uvidm_backend.pipeline.fit import Fit, fit_head
from uvidm_backend.pipeline.images import Photo, load_photo
from uvidm_backend.pipeline.options import FAST_MODES, GenerateOptions
from uvidm_backend.pipeline.output_folder import OutputFolder, write_bytes, write_json, write_png
from uvidm_backend.pipeline.png import encode_png
from uvidm_backend.pipeline.preview import preview_scale, render_preview
from uvidm_backend.registry import ModelPaths

log = logging.getLogger(__name__)

Progress = Callable[[str, float], None]
#: GIL switch interval while compiling in the background: a generation waits up to this long for the GIL each
#: time it gives it up (CUDA synchronisation, file writes), and the compiler holds it for a minute or more.
COMPILING_SWITCH_INTERVAL_S = 0.0005
BFM_UNIT_METRES = 0.1  # BFM coordinates are in units of 10 cm (focal 1015 px at distance 10)

# Share of the whole job each stage stands for, in order (for one progress bar).
STAGES = {"photo": 0.02, "face": 0.04, "condition": 0.12, "diffusion": 0.6, "decode": 0.05, "texture": 0.08,
          "mesh": 0.02, "full_head": 0.0, "preview": 0.04, "files": 0.03}


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


class _ProgressTracker:
    """Turns (stage, fraction of the stage) into the fraction of the whole job; times each stage.

    On CUDA each stage boundary waits for the GPU: kernels run asynchronously, and without the
    wait a stage's GPU time would be billed to whichever later stage first reads a result.
    """

    def __init__(self, callback: Progress | None, device: torch.device | None = None):
        self.callback = callback
        self.timings: dict[str, float] = {}
        self._done = 0.0
        self._stage: str | None = None
        self._started = 0.0
        self._cuda = device is not None and device.type == "cuda"

    def start(self, stage: str) -> None:
        self.finish()
        self._stage, self._started = stage, time.perf_counter()
        self.report(0.0)

    def report(self, fraction: float) -> None:
        if self.callback is not None and self._stage is not None:
            self.callback(self._stage, min(1.0, self._done + STAGES[self._stage] * fraction))

    def finish(self) -> None:
        if self._stage is not None:
            if self._cuda:
                torch.cuda.synchronize()
            self.timings[self._stage] = round(time.perf_counter() - self._started, 4)
            self._done += STAGES[self._stage]
            self._stage = None


def outward_triangles(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Triangles wound counter-clockwise seen from outside (glTF/OBJ front faces).

    BFM's winding makes `compute_norm` point into the head; exporters need the other way.
    """
    a, b, c = (vertices[triangles[:, k]] for k in range(3))
    normals = np.cross(b - a, c - a)
    outward = (a + b + c) / 3 - vertices.mean(axis=0)
    return triangles if np.sum(normals * outward) >= 0 else triangles[:, ::-1].copy()


def head_file_names(head: Head) -> list[str]:
    """The files `write_head_files` writes (result.json aside)."""
    names = ["albedo.png", "albedo_model.png", "albedo_model_matched.png", "preview.png", *head.debug_maps]
    if head.bfm_head:
        names += ["head.glb", "head.obj", "head.mtl"]
    if head.full is not None:
        names += full_head_file_names(head.full)
    return names


def write_head_files(head: Head, folder: OutputFolder) -> None:
    """head.glb, head.obj/.mtl (and/or the full head's files), albedo.png, albedo_model.png,
    albedo_model_matched.png, preview.png (and the debug maps) into `folder`.

    The albedo's PNG, the slowest file, is encoded first, on every core; the other files are
    written beside it (zlib and file I/O release the GIL), and the two that hold it as soon as it is
    there. Returns, or raises the first error, only once no writer is left running (so that a failed
    folder can be removed).
    """
    with ThreadPoolExecutor(max_workers=6) as writers:  # leaving the block waits for every writer
        albedo_png = writers.submit(encode_png, head.albedo)
        # The preview is compressed lightly: it is looked at once.
        written = [writers.submit(write_png, head.preview, folder / "preview.png", compress_level=1),
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


class Pipeline:
    """The loaded models and the steps from a photo to a textured head."""

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
        self._uv_tables: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._uv_vertex_index: dict[int, torch.Tensor] = {}
        # The official tables and mask when the BFM folder has them, else stand-ins; result.json and
        # `uvidm doctor` say which (they change the condition and the colours).
        self.uv_tables_source = "rebuilt"
        if bfm.triangle_buffer is not None:
            if bfm.triangle_buffer.shape[0] == self.model_size:
                self._uv_tables[self.model_size] = (torch.from_numpy(bfm.triangle_buffer).to(device),
                                                    torch.from_numpy(bfm.barycentric_weight).to(device))
                self.uv_tables_source = "official"
            else:
                log.warning("the UV tables in %s are %d px, the model's texture %d px: rebuilt at %d px",
                            paths.bfm, bfm.triangle_buffer.shape[0], self.model_size, self.model_size)
        tables = self.uv_tables(self.model_size)
        self.condition_stage = ConditionStage(
            self.networks.recon_net, self.networks.seg_model, self.networks.condition_fuser, self.head_model,
            self.uv_vertices(self.model_size), tables[1], corrected_ear_mask).to(device)
        if bfm.front_mask is not None:
            self.front_mask = textures.official_front_mask(bfm.front_mask, self.model_size).to(device)
            self.front_mask_source = "official"
        else:
            self.front_mask = textures.front_region_mask(self.triangles, *tables, self.front_idx)
            self.front_mask_source = "footprint"
        mean_shape = self.head_model.mean_shape.reshape(-1, 3).cpu().numpy()
        self.export_triangles = outward_triangles(mean_shape, bfm.full_triangles)
        self.fast = fast if device.type == "cuda" else "off"
        self.freeze = freeze
        # One generation at a time on the models; swapping in a UNet compiled in the background waits for it.
        self._gpu = threading.Lock()
        self._compiling: threading.Thread | None = None
        self._full_head: FullHeadModel | None = None
        self.eps_model, self.decode = self.networks.unet, self.networks.decode_latent
        self.sampler_updates = EAGER_UPDATES
        if self.fast != "off":
            # bf16 UNet replayed from a CUDA graph (relative error of the texture ~3e-3, see
            # docs/PERFORMANCE.md); "compile" adds Inductor fusion (minutes to compile, once).
            self.eps_model = self._fast_unet(compiled=self.fast == "compile", warm=True)
            self.decode = FastDecoder(self.networks, torch.float32)
            # The float32 fuser replayed from a CUDA graph: the same function without its launch gaps.
            self.condition_stage.fuse_tokens = CudaGraphed(self.networks.condition_fuser)
            if self.fast == "compile":
                # Inductor is loaded anyway: each sampler update becomes one kernel (graph mode stays free of
                # torch.compile, whose first use costs seconds of start-up and a working Triton).
                self.sampler_updates = self._fused_updates()
            self._capture_graphs()

    def _fast_unet(self, compiled: bool, warm: bool) -> FastUNet:
        """The bf16 fast UNet, compiled or not; `warm`: compiled and captured now for a generation's shapes."""
        if compiled:
            log.info("torch.compile caches in %s", use_persistent_compile_cache())
        config = self.networks.config
        return compile_unet(self.networks.unet, torch.bfloat16, batch=1 if warm else None,
                            latent_size=config.image_size, context_len=config.context_tokens,
                            compile_mode="default" if compiled else None, freeze=self.freeze and compiled,
                            timestep_table=config.timesteps)

    def _fused_updates(self) -> dict[str, SamplerUpdate]:
        size = self.networks.config.image_size
        return warmed_fused_updates((1, self.networks.config.channels, size, size), self.device)

    @torch.inference_mode()
    def _capture_graphs(self) -> None:
        """Captures the fuser's and decoder's CUDA graphs now (the UNet's is already): a first generation
        that captures nothing, and no capture later that could collide with a background compilation."""
        size = self.model_size
        self.condition_stage.fuse_tokens(torch.zeros(1, 3, size, size, device=self.device))
        latent_size = self.networks.config.image_size
        self.decode(torch.zeros(1, self.networks.config.channels, latent_size, latent_size, device=self.device))
        torch.cuda.synchronize(self.device)

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
        interval = sys.getswitchinterval()
        sys.setswitchinterval(min(interval, COMPILING_SWITCH_INTERVAL_S))
        try:
            # Compiled off the lock, its kernels on a stream of their own: generations go on (slower while the
            # compiler shares the CPU with them).
            with torch.inference_mode(), torch.cuda.device(self.device), torch.cuda.stream(torch.cuda.Stream()):
                unet = self._fast_unet(compiled=True, warm=False)
                inputs = example_unet_inputs(unet.config, self.device, 1, self.networks.config.image_size,
                                             self.networks.config.context_tokens)
                unet.without_graph(*inputs)
                updates = self._fused_updates()
                torch.cuda.current_stream().synchronize()
            with self._gpu, torch.inference_mode():
                unet(*inputs)  # its CUDA graph: captured while no generation runs
                self.eps_model, self.sampler_updates, self.fast = unet, updates, "compile"
            log.info("the compiled UNet took over after %.1f s", time.perf_counter() - started)
        except Exception:  # noqa: BLE001 - graph mode goes on serving; say why it stays
            log.warning("compiling the UNet in the background failed; graph mode stays", exc_info=True)
        finally:
            sys.setswitchinterval(interval)

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
        unet = {"off": "float32", "graph": "bf16 graph", "compile": "bf16 compiled"}[self.fast]
        graphed = "float32" if self.fast == "off" else "float32 graph"
        return {"unet": unet, "decoder": graphed, "condition_fuser": graphed, "recon_net": "float32",
                "face_parsing": "float32",
                "sampler_update": "float32 compiled" if self.sampler_updates is not EAGER_UPDATES else "float32"}

    def uv_tables(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """UV lookup tables (triangle_buffer, barycentric_weight) at `size`, computed once per size."""
        if size not in self._uv_tables:
            buffer, weight = uv_lookup_tables(self.uv, self.triangles, size, device=self.device)
            self._uv_tables[size] = (buffer.to(self.device), weight.to(self.device))
        return self._uv_tables[size]

    def uv_vertices(self, size: int) -> torch.Tensor:
        """(S, S, 3) the vertices of each texel's triangle at `size`, computed once per size."""
        if size not in self._uv_vertex_index:
            self._uv_vertex_index[size] = uv_vertex_index(self.triangles, self.uv_tables(size)[0])
        return self._uv_vertex_index[size]

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

    # -- the job ---------------------------------------------------------------------------

    def find_face(self, photo: Photo, options: GenerateOptions) -> tuple[DetectedFace, int | None]:
        if options.landmarks is not None:
            return face_from_landmarks(np.asarray(options.landmarks, dtype=np.float32), photo), options.face_index
        faces = self.detector.detect(photo)
        face = select_face(faces, options.face_index, photo=photo)
        return face, faces.index(face)

    def generate(self, photo_source: bytes | str | Path, options: GenerateOptions | None = None,
                 progress: Progress | None = None) -> Head:
        """The head of `photo_source` in memory (see `generate_to_folder` for the files)."""
        with self._gpu:
            return self._generate(photo_source, options, progress)

    @torch.inference_mode()
    def _generate(self, photo_source: bytes | str | Path, options: GenerateOptions | None,
                  progress: Progress | None) -> Head:
        options = options or GenerateOptions()
        tracker = _ProgressTracker(progress, self.device)
        device = self.device
        precision = self.precision()  # under the generation lock: a background swap comes before or after

        tracker.start("photo")
        photo = load_photo(photo_source)
        tracker.start("face")
        face, face_index = self.find_face(photo, options)
        alignment = align_face(photo.pixels, face.official_lm5(photo.height), self.lm3d_5)

        tracker.start("condition")
        crop = torch.from_numpy(alignment.model_input()).permute(2, 0, 1)[None].to(device)
        photo_m11 = torch.from_numpy(np.array(photo.pixels)).to(device).permute(2, 0, 1)[None].float() / 127.5 - 1
        # visualize.py casts trans_params to float32 before they reach the model (trap 5).
        trans_params = torch.from_numpy(np.asarray(alignment.trans_params, dtype=np.float32))[None].to(device)
        condition = self.condition_stage(crop, photo_m11, trans_params)

        tracker.start("diffusion")
        generator = torch.Generator(device=device).manual_seed(options.seed)
        latent_size = self.networks.config.image_size
        x_T = torch.randn((1, self.networks.config.channels, latent_size, latent_size), generator=generator,
                          device=device)
        if options.sampler == "dpmpp":
            sampler, schedule = sample_dpmpp_2m, dpmpp_schedule(self.networks.schedule, options.steps)
        else:
            sampler, schedule = sample_ddim, ddim_schedule(self.networks.schedule, options.steps, options.eta)

        def on_step(step) -> None:
            tracker.report((step.index + 1) / step.total)

        latent = sampler(self.eps_model, x_T, condition.tokens, schedule, generator=generator, callback=on_step,
                         update=self.sampler_updates[options.sampler])

        tracker.start("decode")
        generated = ((self.decode(latent) + 1) * 0.5).clamp(0, 1)

        tracker.start("texture")
        photo01 = (photo_m11 + 1) * 0.5
        fit = fit_head(self.recon_net, self.head_model, (crop + 1) * 0.5, trans_params)
        made = self._textures(fit, generated, condition, photo01, options)

        tracker.start("mesh")
        mesh = self._mesh(fit, made.albedo_image, options, photo)

        full_head = None
        if options.head != "bfm":
            tracker.start("full_head")
            full_head = self.full_head_model().make_head(
                fit.id_shape[0].cpu().double().numpy(),
                fit.shape[0].cpu().double().numpy() if options.expression == "photo" else None,
                made.albedo.float(), options.texture_size)

        tracker.start("preview")
        scale = preview_scale(photo.width, photo.height)
        small = photo01 if scale == 1.0 else torch.nn.functional.interpolate(
            photo01, scale_factor=scale, mode="area", recompute_scale_factor=False)
        preview = render_preview(self.rasterizer, small, fit.projected * scale, fit.vertices_camera[..., 2],
                                 self.triangles, self.uv, made.albedo, made.shading)
        preview_image = textures.to_uint8_image(preview)
        debug_maps = self._debug_maps(made, condition) if options.debug_maps else {}
        tracker.finish()

        info = self._result_info(photo, face, face_index, fit.coefficients, alignment, options, tracker.timings)
        info["texture"] = {"albedo": options.texture, "front_mask": self.front_mask_source,
                           "uv_tables": self.uv_tables_source}
        info["precision"] = precision
        if full_head is not None:
            info["full_head"] = full_head.info
        return Head(mesh=mesh, albedo=made.albedo_image, albedo_model=textures.to_uint8_image(generated),
                    albedo_model_matched=textures.official_uint8_image(made.matched), preview=preview_image,
                    info=info, full=full_head, bfm_head=options.head != "full", debug_maps=debug_maps)

    def _textures(self, fit: Fit, generated: torch.Tensor, condition: Condition, photo01: torch.Tensor,
                  options: GenerateOptions) -> textures.Textures:
        """The official matched texture (visualize.py) and the mesh's albedo at the requested size."""
        coefficients = fit.coefficients
        front_shape, _ = self.front_model.compute_shape(coefficients.id, coefficients.exp)
        front_colors = self.front_model.compute_color(
            self.front_model.compute_texture(coefficients.tex),
            self.front_model.compute_norm(front_shape) @ fit.rotation, coefficients.gamma, DEFAULT_INIT_LIT)
        head_colors = self.head_model.compute_texture(coefficients.tex)
        head_colors[:, self.front_idx] = front_colors
        baseline = textures.baseline_color_map(head_colors, self.triangles, *self.uv_tables(self.model_size))
        matched = textures.match_to_baseline(generated, baseline, self.front_mask)

        size = options.texture_size
        buffer, weight = self.uv_tables(size)
        albedo = textures.official_texture(matched, size)
        if options.texture == "default":
            # Unlike the model's condition (kept as trained), the output texture also drops surfaces
            # hidden behind others, which the official normal test lets through.
            unoccluded = depth_visible_vertices(fit.projected_crop, fit.vertices_camera[..., 2], self.triangles,
                                                self.rasterizer)
            photo_texture, photo_mask = remap_texture_from_image(
                photo01, fit.projected, fit.normals_rotated, condition.skin, self.uv_vertices(size), weight,
                unoccluded)
            albedo = textures.blend_photo(albedo, photo_texture, photo_mask)
        shading = self.head_model.compute_color(torch.ones_like(fit.shape), fit.normals_rotated, coefficients.gamma,
                                                DEFAULT_INIT_LIT)
        if options.delight:
            albedo = textures.delight(albedo, textures.baseline_color_map(shading, self.triangles, buffer, weight))
        return textures.Textures(albedo=albedo, matched=matched, baseline=baseline, shading=shading)

    def _mesh(self, fit: Fit, albedo_image: np.ndarray, options: GenerateOptions, photo: Photo) -> TexturedMesh:
        neutral = options.expression != "photo"
        vertices = (fit.id_shape if neutral else fit.shape)[0].cpu().numpy() * BFM_UNIT_METRES
        normals = self.head_model.compute_norm(fit.id_shape) if neutral else fit.normals
        normals = -normals[0].cpu().numpy()  # BFM normals point inwards
        return TexturedMesh(vertices=vertices.astype(np.float32), faces=self.export_triangles,
                            uv=self.bfm.uv.astype(np.float32), normals=normals.astype(np.float32),
                            texture=albedo_image, name=Path(photo.name).stem if photo.name else "head")

    @staticmethod
    def _debug_maps(made: textures.Textures, condition: Condition) -> dict[str, np.ndarray]:
        """--debug-maps, at the model's size and written as visualize.py writes images: the partial texture
        the model is conditioned on, its mask, and the official `face_color_map` clipped to [0, 1]."""
        return {"condition.png": textures.official_uint8_image(condition.partial_texture),
                "condition_mask.png": textures.official_uint8_image(condition.mask)[..., 0],
                "baseline.png": textures.official_uint8_image(made.baseline)}

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
        files_started = time.perf_counter()
        with OutputFolder(Path(out_dir), overwrite=overwrite) as folder:
            write_head_files(head, folder)
            info = dict(head.info)
            info["timings"] = {**info["timings"], "files": round(time.perf_counter() - files_started, 4),
                               "total": round(time.perf_counter() - started, 4)}
            info["files"] = sorted([*head_file_names(head), "result.json"])
            write_json(info, folder / "result.json")
        if progress is not None:
            progress("files", 1.0)
        return Path(out_dir)

    def _result_info(self, photo: Photo, face: DetectedFace, face_index: int | None, coefficients, alignment,
                     options: GenerateOptions, timings: dict[str, float]) -> dict[str, Any]:
        def as_list(tensor: torch.Tensor) -> list:
            return tensor[0].detach().cpu().double().numpy().round(7).tolist()

        return {
            "version": __version__,
            "photo": {"name": photo.name, "size": [photo.width, photo.height], "sha256": photo.sha256},
            "face": {"index": face_index, "box": [round(float(v), 2) for v in face.box],
                     "landmarks": np.asarray(face.points, dtype=float).round(2).tolist(),
                     "source": "given" if options.landmarks is not None else "detected",
                     "landmarks_source": face.landmarks_source},
            "coefficients": {name: as_list(value) for name, value in coefficients.as_dict().items()},
            "pose": {"angles_radians": as_list(coefficients.angle), "translation": as_list(coefficients.trans)},
            "camera": {"focal": FOCAL, "center": CENTER, "distance": CAMERA_DISTANCE, "crop": 224,
                       "trans_params": np.asarray(alignment.trans_params, dtype=float).round(6).tolist()},
            "mesh": {"vertices": int(self.head_model.n_vertices), "faces": int(self.triangles.shape[0]),
                     "units": "metres", "up": "+Y", "front": "+Z", "pose": "canonical",
                     "expression": options.expression},
            "options": options.to_dict(),
            "timings": timings,
            "device": str(self.device),
            "versions": {"uvidm": __version__, "torch": torch.__version__, "numpy": np.__version__,
                         "python": platform.python_version()},
        }
