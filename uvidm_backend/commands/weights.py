"""`uvidm weights check | download | convert`."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
from pathlib import Path

from uvidm_backend.commands.common import add_model_folder_options, model_paths
from uvidm_backend.registry import HUB_REPOSITORY, INSIGHTFACE_MODEL, MODEL_FILES, ModelPaths

log = logging.getLogger(__name__)


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("weights", help="find, download and convert the model files")
    actions = parser.add_subparsers(dest="action", required=True)

    check = actions.add_parser("check", help="list every model file: found / missing / size")
    add_model_folder_options(check)
    check.set_defaults(run=run_check)

    download = actions.add_parser("download", help=f"download the model files from {HUB_REPOSITORY}")
    add_model_folder_options(download)
    download.add_argument("--repo", default=HUB_REPOSITORY, help="hub repository (default: %(default)s)")
    download.add_argument("--revision", default=None, help="branch, tag or commit of the hub repository")
    download.add_argument("--skip-detector", action="store_true",
                          help=f"do not fetch insightface's {INSIGHTFACE_MODEL} (when you give landmarks yourself)")
    download.set_defaults(run=run_download)

    convert = actions.add_parser("convert", help="write safetensors copies of the networks (safe, faster)")
    add_model_folder_options(convert)
    convert.add_argument("--trust-pickle", action="store_true",
                         help="allow full unpickling of .ckpt/.pth files that need it (only for files you trust)")
    convert.add_argument("--keep-ema", action="store_true", help="keep the EMA copy of the UNet (not used by default)")
    convert.set_defaults(run=run_convert)


def human_size(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError


def file_table(paths: ModelPaths) -> list[tuple[str, str, str, str]]:
    rows = []
    for file in MODEL_FILES:
        path = paths.locate(file)
        if path.is_file():
            status, size = "found", human_size(path.stat().st_size)
        else:
            status, size = ("missing" if file.required else "optional, absent"), "-"
        rows.append((file.name, status, size, str(path)))
    return rows


def run_check(args: argparse.Namespace) -> int:
    paths = model_paths(args)
    rows = [("file", "status", "size", "path"), *file_table(paths)]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    missing = paths.missing()
    if missing:
        print(f"\n{len(missing)} required file(s) missing: run `uvidm weights download`"
              + (f" --weights {paths.weights} --bfm {paths.bfm}" if args.weights or args.bfm else ""))
        return 1
    print("\nall required model files found")
    return 0


def place_file(source: Path, target: Path) -> None:
    """Hard-links (or copies) a downloaded file into place under a temporary name, then renames it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)
    try:
        os.link(source, partial)
    except OSError:
        shutil.copyfile(source, partial)
    partial.replace(target)


def run_download(args: argparse.Namespace) -> int:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    paths = model_paths(args)
    failures = 0
    for file in MODEL_FILES:
        target = paths.path(file)
        if target.is_file() or file.hub_path is None:
            continue
        try:
            # The hub cache makes an interrupted download resume, and serves HF_HUB_OFFLINE=1.
            cached = hf_hub_download(args.repo, file.hub_path, revision=args.revision)
        except LocalEntryNotFoundError as error:
            failures += file.required
            print(f"{file.name}: not in the local hub cache and the hub cannot be reached ({error}). "
                  "Check the network or unset HF_HUB_OFFLINE.")
            continue
        except HfHubHTTPError as error:
            failures += file.required
            print(f"{file.name}: download of {args.repo}/{file.hub_path} failed: {error}")
            continue
        place_file(Path(cached), target)
        print(f"{file.name}: {target}")
    if not args.skip_detector:
        failures += not download_face_detector(paths)
    if failures:
        print(f"\n{failures} file(s) could not be downloaded; see above. `uvidm weights check` lists what is there.")
        return 1
    return 0


def download_face_detector(paths: ModelPaths) -> bool:
    try:
        from insightface.utils.storage import ensure_available
    except ImportError:
        print(f"insightface is not installed: `pip install insightface onnxruntime` to detect faces "
              f"(it downloads {INSIGHTFACE_MODEL} itself), or give five landmarks with --landmarks")
        return True
    try:
        ensure_available("models", INSIGHTFACE_MODEL, root=str(paths.insightface_root))
    except Exception as error:  # insightface raises plain exceptions from its downloader
        print(f"{INSIGHTFACE_MODEL}: insightface could not download it ({error})")
        return False
    print(f"{INSIGHTFACE_MODEL}: {paths.insightface_root / 'models' / INSIGHTFACE_MODEL}")
    return True


def run_convert(args: argparse.Namespace) -> int:
    from uvidm_backend.conversion import convert_model_files

    written = convert_model_files(model_paths(args), trust_pickle=args.trust_pickle, keep_ema=args.keep_ema)
    for path in written:
        print(f"wrote {path}")
    return 0
