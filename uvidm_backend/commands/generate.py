"""`uvidm generate PHOTO... -o DIR`: a textured head for each photo, one folder each."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from uvidm_backend.commands.common import add_fast_option, add_model_folder_options, model_paths
from uvidm_backend.pipeline.errors import ModelFilesMissing, UVIDMError
from uvidm_backend.pipeline.options import EXPRESSIONS, HEADS, SAMPLERS, TEXTURES, GenerateOptions

log = logging.getLogger(__name__)


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("generate", help="make a textured 3D head from each photo")
    parser.add_argument("photos", nargs="+", type=photo_argument, metavar="PHOTO_OR_FOLDER",
                        help="photos (JPEG, PNG, WebP, ...) or folders of them; 'sample:t1.jpg' is a sample photo "
                             "of insightface")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="DIR",
                        help="output folder; each photo gets DIR/<photo name>/")
    defaults = GenerateOptions()
    parser.add_argument("--face", type=int, default=None, metavar="N",
                        help="which face, counting from 0 left to right (default: the largest)")
    parser.add_argument("--landmarks", type=Path, metavar="FILE",
                        help="landmarks instead of face detection: five points (eyes, nose tip, mouth corners) "
                             "or 68 in the iBUG-300W order, pixels, y down; JSON or text with 'x y' lines")
    parser.add_argument("--steps", type=int, default=defaults.steps, help="diffusion steps (default: %(default)s)")
    parser.add_argument("--eta", type=float, default=defaults.eta, help="DDIM eta (default: %(default)s)")
    parser.add_argument("--sampler", choices=SAMPLERS, default=defaults.sampler,
                        help="ddim (the official sampler) or dpmpp (DPM-Solver++, good at --steps 20) "
                             "(default: %(default)s)")
    add_fast_option(parser)
    parser.add_argument("--seed", type=int, default=defaults.seed, help="random seed (default: %(default)s)")
    parser.add_argument("--texture-size", type=int, default=defaults.texture_size,
                        help="albedo.png side in pixels, 256 to 2048 (default: %(default)s)")
    parser.add_argument("--texture", choices=TEXTURES, default=defaults.texture,
                        help="the mesh's albedo: 'default' the photo's pixels where the face is visible and the "
                             "generated texture elsewhere, 'official' the official colour-matched texture alone "
                             "(the paper's look) (default: %(default)s)")
    parser.add_argument("--debug-maps", action="store_true",
                        help="also write condition.png, condition_mask.png and baseline.png (the model's size)")
    parser.add_argument("--delight", action="store_true", help="divide out the fitted lighting from the texture")
    parser.add_argument("--expression", choices=EXPRESSIONS, default=defaults.expression,
                        help="mesh expression: as in the photo or neutral (default: %(default)s)")
    parser.add_argument("--head", choices=HEADS, default=defaults.head,
                        help="bfm: the BFM head (head.glb); full: the ICT full head for game engines (head_full.glb: "
                             "closed head, eyes, teeth, 53 ARKit shape keys; `uvidm weights download --full-head` "
                             "first); both (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: auto)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing output folders (without it, complete ones are skipped)")
    parser.add_argument("--batch-size", type=int, default=None, metavar="N",
                        help="photos through the networks at once (default: from the GPU's free memory, up to 32; "
                             "1 on the CPU)")
    parser.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                        help="spread the photos over every GPU of this machine or of a Ray cluster (ADDRESS, e.g. "
                             "ray://head:10001 or auto; default: $RAY_ADDRESS, else a Ray started here); needs "
                             "pip install "
                             "\"uvidm-blender[ray]\"")
    parser.add_argument("--corrected-ear-mask", action="store_true",
                        help="also keep the right ear out of the model's condition (the official code means to, "
                             "but a typo keeps it in; the released model was trained with the typo)")
    parser.add_argument("--ema", action="store_true",
                        help="use the EMA copy of the UNet stored in ldm.ckpt (the official inference does not)")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="allow weight files that need full unpickling (only for files you trust)")
    add_model_folder_options(parser)
    parser.set_defaults(run=run_generate)


SAMPLE_PREFIX = "sample:"


def photo_argument(value: str) -> Path:
    """A photo path, or `sample:NAME` for a sample photo shipped inside the insightface package."""
    if not value.startswith(SAMPLE_PREFIX):
        return Path(value)
    import importlib.util

    spec = importlib.util.find_spec("insightface")
    if spec is None or spec.origin is None:
        raise argparse.ArgumentTypeError("sample photos come with insightface: pip install insightface")
    return Path(spec.origin).parent / "data" / "images" / value[len(SAMPLE_PREFIX):]


def run_generate(args: argparse.Namespace) -> int:
    from uvidm_backend.pipeline.folder_run import expand_photos
    from uvidm_backend.pipeline.writers import FolderWriters, default_write_processes

    try:
        base_options = GenerateOptions(steps=args.steps, eta=args.eta, seed=args.seed, sampler=args.sampler,
                                       texture_size=args.texture_size, texture=args.texture,
                                       debug_maps=args.debug_maps, delight=args.delight,
                                       expression=args.expression, face_index=args.face, head=args.head)
    except UVIDMError as error:
        print(f"error: {error}")
        return 2
    if args.batch_size is not None and args.batch_size < 1:
        print(f"error: --batch-size must be 1 or more (got {args.batch_size})")
        return 2
    missing_photos = [str(photo) for photo in args.photos if not photo.exists()]
    if missing_photos:
        print(f"error: photo not found: {', '.join(missing_photos)}")
        return 2
    photos = expand_photos(args.photos)
    if not photos:
        print(f"error: no photos in {', '.join(map(str, args.photos))} (looked for JPEG, PNG, WebP, ... files)")
        return 2
    if args.ray is not None:
        from uvidm_backend.pipeline.ray_run import RayMissing, run_with_ray

        try:
            return run_with_ray(args, photos, base_options)
        except RayMissing as error:
            print(f"error: {error}")
            return 2
    # The writer processes start (each imports the writing code, a second or two) while the models load.
    with FolderWriters(default_write_processes(_device_type(args.device))) as writers:
        pipeline = load_pipeline(args)
        if pipeline is None:
            return 2
        return _generate_folder(args, pipeline, photos, base_options, writers)


def _device_type(device: str) -> str:
    from uvidm_backend.devices import pick_device

    try:
        return pick_device(device).type
    except (RuntimeError, ValueError):  # not a device: the load says so
        return "cpu"


def _generate_folder(args: argparse.Namespace, pipeline, photos: list[Path], base_options: GenerateOptions,
                     writers) -> int:
    from tqdm import tqdm

    from uvidm_backend.pipeline.folder_run import default_batch_size, output_folders, run_jobs, write_failures

    jobs, failures = photo_jobs(photos, output_folders(photos, args.output), base_options, args)
    batch_size = args.batch_size or default_batch_size(pipeline.device)
    with tqdm(total=len(photos), unit=" heads", desc="heads", dynamic_ncols=True) as bar:
        for failure in failures:
            bar.update(1)
            tqdm.write(f"{failure.photo}: {failure.error}")

        failed = len(failures)

        def on_result(job, state: str, error: str | None) -> None:
            nonlocal failed
            bar.update(1)
            if state == "failed":
                failed += 1
                tqdm.write(f"{job.photo}: {error}")
            elif state == "done":
                tqdm.write(f"{job.photo} -> {job.folder}")
            bar.set_postfix_str(f"batch {batch_size}" + (f", {failed} failed" if failed else ""))

        summary = run_jobs(pipeline, jobs, batch_size, overwrite=args.overwrite, on_result=on_result, writers=writers)
    all_failures = [*failures, *summary.failures]
    failures_file = write_failures(args.output, all_failures, len(photos))
    if summary.skipped:
        print(f"{len(summary.skipped)} photo(s) skipped: their folders were already complete (--overwrite redoes them)")
    if all_failures:
        print(f"{len(all_failures)} of {len(photos)} photo(s) failed; see the messages above and {failures_file}")
    return 1 if all_failures else 0


def load_pipeline(args: argparse.Namespace):
    """The pipeline the options ask for, or None once the reason it cannot load is printed."""
    from uvidm_backend.pipeline.pipeline import Pipeline

    try:
        return Pipeline.load(model_paths(args), device=args.device, use_ema=args.ema, trust_pickle=args.trust_pickle,
                             corrected_ear_mask=args.corrected_ear_mask, fast=args.fast)
    except (ModelFilesMissing, UVIDMError) as error:
        print(f"error: {error}")
        return None


def photo_jobs(photos: list[Path], folders: list[Path], base_options: GenerateOptions, args: argparse.Namespace):
    """Each photo's job (its options: --landmarks' points for that photo), and the photos whose landmarks fail."""
    from uvidm_backend.pipeline.faces import face_from_landmarks, read_landmarks_file, select_face, sort_left_to_right
    from uvidm_backend.pipeline.folder_run import Failure, PhotoJob

    jobs, failures = [], []
    for photo, folder in zip(photos, folders, strict=True):
        options = base_options
        if args.landmarks is not None:
            try:
                # The file may list several faces: --face picks one, as it would among detected faces.
                faces = sort_left_to_right([face_from_landmarks(points) for points in
                                            read_landmarks_file(args.landmarks, image_name=photo.name)])
                face = select_face(faces, args.face)
            except UVIDMError as error:
                failures.append(Failure(str(photo), str(folder), str(error)))
                continue
            options = GenerateOptions(**{**base_options.to_dict(), "landmarks": face.landmarks.tolist(),
                                         "face_index": faces.index(face)})
        jobs.append(PhotoJob(photo, folder, options))
    return jobs, failures
