"""`uvidm weights check | download | convert`."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from uvidm_backend.commands.common import add_model_folder_options, model_paths
from uvidm_backend.registry import HUB_REPOSITORY, INSIGHTFACE_MODEL, MODEL_FILES, ModelPaths

log = logging.getLogger(__name__)


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("weights", help="find, download, verify and convert the model files")
    actions = parser.add_subparsers(dest="action", required=True)

    check = actions.add_parser("check", help="list every model file and re-verify it against models.json")
    add_model_folder_options(check)
    check.set_defaults(run=run_check)

    download = actions.add_parser("download", help=f"download the model files from the hub ({HUB_REPOSITORY}) "
                                                   "or install them from an official release folder")
    add_model_folder_options(download)
    download.add_argument("--repo", default=HUB_REPOSITORY, help="hub repository (default: %(default)s)")
    download.add_argument("--revision", default="main", help="branch, tag or commit of the hub repository "
                                                              "(default: %(default)s)")
    download.add_argument("--from", dest="source", metavar="DIR", type=Path,
                          help="an official release folder you already have (the Google Drive folder or a clone "
                               "of the hub repository: checkpoints/, BFM/, masktopo/): verified and linked into "
                               "place, nothing downloaded")
    download.add_argument("--accept-licences", action="store_true",
                          help="accept the model files' licences without being asked (for scripts)")
    download.add_argument("--skip-detector", action="store_true",
                          help=f"do not fetch insightface's {INSIGHTFACE_MODEL} (when you give landmarks yourself)")
    download.add_argument("--force", action="store_true", help="fetch every file again, even those present")
    download.add_argument("--full-head", action="store_true",
                          help="also fetch the ICT FaceKit head (MIT licence) from GitHub, for --head full")
    download.add_argument("--full-head-from", metavar="DIR", type=Path,
                          help="the ICT FaceKit from a local ICT-FaceKit checkout (or its FaceXModel/ folder)")
    download.set_defaults(run=run_download)

    convert = actions.add_parser("convert", help="write safetensors copies of the networks (safe, faster)")
    add_model_folder_options(convert)
    convert.add_argument("--trust-pickle", action="store_true",
                         help="allow full unpickling of .ckpt/.pth files that need it (only for files you trust)")
    convert.add_argument("--keep-ema", action="store_true", help="keep the EMA copy of the UNet (not used by default)")
    convert.set_defaults(run=run_convert)


def human_size(size: int | None) -> str:
    if size is None:
        return "?"
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
    detector = paths.detector_dir
    rows.append((INSIGHTFACE_MODEL, "found" if any(detector.glob("det_*.onnx")) else "missing (face detection)",
                 human_size(sum(p.stat().st_size for p in detector.glob("*.onnx"))) if detector.is_dir() else "-",
                 str(detector)))
    return rows


def print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def folder_options(args: argparse.Namespace, paths: ModelPaths) -> str:
    return f" --weights {paths.weights} --bfm {paths.bfm}" if args.weights or args.bfm else ""


def run_check(args: argparse.Namespace) -> int:
    from uvidm_backend.model_files.manifest import changes

    paths = model_paths(args)
    print_table([("file", "status", "size", "path"), *file_table(paths)])
    status = 0
    changed = [(folder, change) for folder in dict.fromkeys((paths.weights, paths.bfm)) for change in changes(folder)]
    for folder, change in changed:
        print(f"\nchanged since download: {folder / change.name} ({change.detail})")
    if changed:
        print(f"{len(changed)} file(s) differ from models.json: run `uvidm weights download --force"
              f"{folder_options(args, paths)}` to fetch them again")
        status = 1
    missing = paths.missing()
    if missing:
        print(f"\n{len(missing)} required file(s) missing: run `uvidm weights download{folder_options(args, paths)}`")
        return 1
    if not status:
        print("\nall required model files found" + (" and unchanged since download" if any(
            (folder / "models.json").is_file() for folder in (paths.weights, paths.bfm)) else ""))
    return status


def ask_consent(accepted: bool, text: str) -> bool:
    print(text)
    if accepted:
        print("Licences accepted (--accept-licences).\n")
        return True
    if not sys.stdin or not sys.stdin.isatty():
        print("Not downloading: accept these terms with --accept-licences (no terminal to ask on).")
        return False
    answer = input("Do you accept these terms for the files above? [y/N] ").strip().lower()
    return answer in ("y", "yes")


def run_download(args: argparse.Namespace) -> int:
    from uvidm_backend.model_files.install import install_full_head, plan_folder, plan_hub
    from uvidm_backend.model_files.licences import licence_text
    from uvidm_backend.model_files.sources import ModelSourceError, hub_endpoint

    paths = model_paths(args)
    full_head = args.full_head or args.full_head_from is not None
    try:
        if args.source is not None:
            plan = plan_folder(paths, args.source, detector=not args.skip_detector, force=args.force)
            where = f"from {args.source.resolve()}"
        else:
            where = f"from {args.repo} at {args.revision} ({hub_endpoint()})"
            print(f"Listing {args.repo} at {args.revision} ({hub_endpoint()}) ...", flush=True)
            plan = plan_hub(paths, args.repo, args.revision, detector=not args.skip_detector, force=args.force)
    except ModelSourceError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if not plan.files and not full_head:
        print(f"every model file is already in place ({paths.weights}, {paths.bfm}); `uvidm weights check` "
              "re-verifies them")
        return 0
    print(f"\n{len(plan.files)} file(s) {where}, {human_size(plan.total_bytes)}"
          + (" plus files of unknown size" if any(p.size is None for p in plan.files) else "") + ":")
    print_table([(planned.name, human_size(planned.size), planned.path or planned.origin) for planned in plan.files])
    print()
    if full_head:
        print("and the ICT FaceKit head " + (f"from {args.full_head_from}" if args.full_head_from else "from GitHub"))
    if not ask_consent(args.accept_licences, licence_text(full_head)):
        return 2
    report = _install_with_bars(plan, paths)
    if full_head:
        install_full_head(paths, args.full_head_from, report)
    for entry in report.placed:
        print(f"ok  {entry.name} ({human_size(entry.size)}, sha256 {entry.sha256[:12]})")
    for name, reason in report.failures.items():
        print(f"!!  {name}: {reason}", file=sys.stderr)
    if report.failures:
        print(f"\n{len(report.failures)} file(s) failed; everything else is installed. Run the command again to "
              "resume, or `uvidm weights check` to see what is there.", file=sys.stderr)
        return 1
    print(f"\nmodel files installed and recorded in {paths.weights / 'models.json'}"
          + (f" and {paths.bfm / 'models.json'}" if paths.bfm != paths.weights else ""))
    return 0


def _install_with_bars(plan, paths: ModelPaths):
    """`install` with a total bar (bytes of every file) above huggingface_hub-style bars per file."""
    from tqdm.auto import tqdm

    from uvidm_backend.model_files.install import install
    from uvidm_backend.model_files.transfer import Progress

    total = tqdm(total=plan.total_bytes or None, unit="B", unit_scale=True, desc="total", position=0)

    def on_change(progress) -> None:
        total.update(progress.done_bytes - total.n)

    try:
        return install(plan, paths, Progress(plan.total_bytes, on_change, show_bars=True))
    finally:
        total.close()


def run_convert(args: argparse.Namespace) -> int:
    from uvidm_backend.conversion import convert_model_files

    written = convert_model_files(model_paths(args), trust_pickle=args.trust_pickle, keep_ema=args.keep_ema)
    for path in written:
        print(f"wrote {path}")
    return 0
