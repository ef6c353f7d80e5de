"""The whole job: plan what to fetch, fetch it, verify it, place it, record it.

Used by `uvidm weights download` and by the service's `POST /v1/models/download`. A file is placed
(hard link or copy under a temporary name, then a rename) only after it loaded as what it should be,
and recorded in `models.json` at once, so an interrupted run keeps every file it finished and a
re-run fetches only the rest (huggingface_hub's cache and `.partial` files resume cut transfers).
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from uvidm_backend.model_files.manifest import ManifestEntry, entry_for, forget, record
from uvidm_backend.model_files.sources import (
    FRONT_MASK_SHA256,
    HubListing,
    ModelSourceError,
    add_to_hub_cache,
    detector_url,
    front_mask_url,
    list_hub,
    unreachable_advice,
)
from uvidm_backend.model_files.transfer import Progress, TransferError, http_download, place_file
from uvidm_backend.model_files.verify import (
    ModelFileInvalid,
    unpack_detector,
    verify_bfm_folder,
    verify_detector,
    verify_file,
)
from uvidm_backend.registry import (
    FRONT_MASK_FILE,
    HUB_REPOSITORY,
    INSIGHTFACE_MODEL,
    MODEL_FILES,
    ModelFile,
    ModelPaths,
)

log = logging.getLogger(__name__)

DETECTOR = "detector"  # PlannedFile.kind of insightface's buffalo_l archive


@dataclass(frozen=True)
class PlannedFile:
    name: str  # what the user is told: our file name
    kind: str  # "hub", "github", "folder" or DETECTOR
    origin: str  # hub repository, URL or local folder
    path: str  # path inside the origin ("" for a URL)
    size: int | None  # None: not known before the transfer starts
    target: Path
    file: ModelFile | None = None  # None for the detector


@dataclass(frozen=True)
class DownloadPlan:
    files: tuple[PlannedFile, ...]
    listing: HubListing | None = None  # the hub repository, for hub plans

    @property
    def total_bytes(self) -> int:
        return sum(planned.size or 0 for planned in self.files)

    def as_dict(self) -> dict:
        return {"repository": self.listing.repository if self.listing else None,
                "revision": self.listing.revision if self.listing else None,
                "commit": self.listing.commit if self.listing else None,
                "files": [{"name": planned.name, "size": planned.size, "source": planned.kind}
                          for planned in self.files],
                "total_bytes": self.total_bytes}


@dataclass
class InstallReport:
    placed: list[ManifestEntry] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)  # file name -> what went wrong

    @property
    def ok(self) -> bool:
        return not self.failures


def detector_complete(paths: ModelPaths) -> bool:
    return paths.detector_dir.is_dir() and any(paths.detector_dir.glob("det_*.onnx"))


def _wanted(paths: ModelPaths, force: bool) -> list[ModelFile]:
    return [file for file in MODEL_FILES if force or not paths.locate(file).is_file()]


def plan_hub(paths: ModelPaths, repository: str = HUB_REPOSITORY, revision: str = "main", *,
             detector: bool = True, force: bool = False) -> DownloadPlan:
    """What `uvidm weights download` will fetch; raises `ModelSourceError` when a required file is not in
    the repository (naming it, and listing what the repository holds)."""
    listing = list_hub(repository, revision)
    planned, absent = [], []
    for file in _wanted(paths, force):
        path = listing.resolve(file)
        if path is not None:
            planned.append(PlannedFile(file.name, "hub", repository, path, listing.files[path], paths.path(file), file))
        elif file.name == FRONT_MASK_FILE and not listing.offline:
            planned.append(PlannedFile(file.name, "github", front_mask_url(), "", None, paths.path(file), file))
        elif file.required:
            absent.append(file)
    if absent:
        names = ", ".join(f"{file.name} (official path {file.official_path})" for file in absent)
        raise ModelSourceError(f"the hub repository has no {names}.\n{listing.describe()}")
    if detector and (force or not detector_complete(paths)):
        planned.append(_detector_plan(paths))
    return DownloadPlan(tuple(planned), listing)


def plan_folder(paths: ModelPaths, source: Path, *, detector: bool = True, force: bool = False) -> DownloadPlan:
    """An official release folder (the Google Drive folder or a hub clone) as it is: files found by name."""
    source = Path(source).expanduser().resolve()
    if not source.is_dir():
        raise ModelSourceError(f"{source} is not a folder")
    files = {path.relative_to(source).as_posix(): path.stat().st_size for path in source.rglob("*")
             if path.is_file() and ".git" not in path.relative_to(source).parts}
    listing = HubListing(str(source), "", "", files, offline=True)
    planned, absent = [], []
    for file in _wanted(paths, force):
        path = listing.resolve(file)
        if path is not None:
            planned.append(PlannedFile(file.name, "folder", str(source), path, files[path], paths.path(file), file))
        elif file.required:
            absent.append(file)
    if absent:
        names = ", ".join(f"{file.official_path}" for file in absent)
        raise ModelSourceError(f"{source} is not a complete official release folder: no {names}.\n"
                               f"{listing.describe()}")
    if detector and (force or not detector_complete(paths)):
        archive = next((p for p in files if Path(p).name == f"{INSIGHTFACE_MODEL}.zip"), None)
        planned.append(PlannedFile(INSIGHTFACE_MODEL, DETECTOR, str(source), archive, files[archive],
                                   paths.detector_dir) if archive else _detector_plan(paths))
    return DownloadPlan(tuple(planned), listing)


def _detector_plan(paths: ModelPaths) -> PlannedFile:
    return PlannedFile(INSIGHTFACE_MODEL, DETECTOR, detector_url(), "", None, paths.detector_dir)


def install(plan: DownloadPlan, paths: ModelPaths, progress: Progress) -> InstallReport:
    """Fetches, verifies, places and records every planned file; a bad file fails alone.
    Raises `Cancelled` (from `progress`) when the caller cancels; finished files stay installed."""
    report = InstallReport()
    for planned in plan.files:
        progress.start_file(planned.name, planned.size or 0)
        try:
            if planned.kind == DETECTOR:
                report.placed += _install_detector(planned, paths, progress)
            else:
                report.placed.append(_install_file(planned, plan.listing, paths, progress))
        except TransferError as error:
            report.failures[planned.name] = f"{error}; download again to resume"
        except (ModelFileInvalid, ModelSourceError) as error:
            report.failures[planned.name] = str(error)
            log.warning("%s", error)
        except OSError as error:  # disk full, permissions: this file fails, the next may still fit
            report.failures[planned.name] = f"{planned.name}: {error}"
        progress.finish_file()
    bfm_placed = [entry for entry in report.placed if (paths.bfm / entry.name).is_file()]
    if bfm_placed and not paths.missing():
        try:
            verify_bfm_folder(paths.bfm)
        except ModelFileInvalid as error:
            _discard(paths, error.name)
            report.failures[error.name] = str(error)
    return report


def _install_file(planned: PlannedFile, listing: HubListing | None, paths: ModelPaths,
                  progress: Progress) -> ManifestEntry:
    file = planned.file
    assert file is not None
    config = paths.path("ldm_config.json")
    config = config if config.is_file() else None
    folder = paths.folder(file)
    if planned.kind == "hub":
        staged = planned.target.with_name(planned.target.name + ".unverified")
        local = _from_hub(listing, planned.path, staged, progress)
        try:
            verify_file(file, local, config)
        except ModelFileInvalid:
            local.unlink(missing_ok=True) if local == staged else None
            raise
        if local == staged:
            os.replace(staged, planned.target)
            add_to_hub_cache(listing, planned.path, planned.target)
        else:
            place_file(local, planned.target)
        commit = listing.commit
        origin, revision = listing.repository, listing.revision
    elif planned.kind == "folder":
        local = Path(planned.origin) / planned.path
        verify_file(file, local, config)
        place_file(local, planned.target)
        origin, revision, commit = planned.origin, None, None
    else:  # "github": the official code repository's copy, checked by its digest
        staged = planned.target.with_name(planned.target.name + ".unverified")
        http_download(planned.origin, staged, progress, expected_sha256=FRONT_MASK_SHA256)
        try:
            verify_file(file, staged, config)
        except ModelFileInvalid:
            staged.unlink(missing_ok=True)
            raise
        os.replace(staged, planned.target)
        origin, revision, commit = planned.origin, None, None
    entry = entry_for(folder, planned.target, source=planned.kind, origin=origin, path=planned.path,
                      revision=revision, commit=commit)
    record(folder, [entry])
    return entry


def _from_hub(listing: HubListing, path: str, staged: Path, progress: Progress) -> Path:
    """The file from huggingface_hub's cache when it is there, else downloaded (resumably) to `staged`."""
    from huggingface_hub import hf_hub_url, try_to_load_from_cache
    from huggingface_hub.utils import build_hf_headers

    cached = try_to_load_from_cache(listing.repository, path, revision=listing.commit)
    if isinstance(cached, str):
        return Path(cached)
    if listing.offline:
        raise ModelSourceError(f"{path}: not in the local hub cache, and HF_HUB_OFFLINE is set; "
                               f"{unreachable_advice()}")
    url = hf_hub_url(listing.repository, path, revision=listing.commit)
    try:
        return http_download(url, staged, progress, expected_size=listing.files[path],
                             expected_sha256=listing.sha256.get(path), headers=build_hf_headers())
    except TransferError as error:
        raise ModelSourceError(f"{path}: {error}; download again to resume") from error


def _install_detector(planned: PlannedFile, paths: ModelPaths, progress: Progress) -> list[ManifestEntry]:
    models = paths.detector_dir.parent
    if planned.kind == DETECTOR and planned.path:  # a buffalo_l.zip inside an official folder
        archive = Path(planned.origin) / planned.path
    else:
        archive = models / f"{INSIGHTFACE_MODEL}.zip.unverified"
        http_download(planned.origin, archive, progress)
    staged = models / f"{INSIGHTFACE_MODEL}.unverified"
    shutil.rmtree(staged, ignore_errors=True)
    try:
        unpack_detector(archive, staged)
        verify_detector(staged)
    except ModelFileInvalid:
        shutil.rmtree(staged, ignore_errors=True)
        if not planned.path:
            archive.unlink(missing_ok=True)
        raise
    if paths.detector_dir.exists():
        shutil.rmtree(paths.detector_dir)
    os.replace(staged, paths.detector_dir)
    if not planned.path:
        archive.unlink(missing_ok=True)
    entries = [entry_for(paths.weights, model, source="insightface", origin=planned.origin,
                         path=planned.path or model.name) for model in sorted(paths.detector_dir.glob("*.onnx"))]
    record(paths.weights, entries)
    return entries


def _discard(paths: ModelPaths, name: str) -> None:
    for folder in (paths.bfm, paths.weights):
        if (folder / name).is_file():
            (folder / name).unlink()
            forget(folder, name)


def install_full_head(paths: ModelPaths, source: Path | None, report: InstallReport) -> None:
    """The ICT FaceKit into weights/ict_facekit, recorded in weights/models.json like every other file."""
    from uvidm_backend.fullhead.download import ICT_COMMIT, ICT_REPOSITORY, download_full_head
    from uvidm_backend.fullhead.files import full_head_folder
    from uvidm_backend.fullhead.ict_files import ICTFileError

    folder = full_head_folder(paths)
    try:
        fetched = download_full_head(folder, source_dir=source)
    except ICTFileError as error:
        report.failures["ICT FaceKit"] = str(error)
        return
    entries = [entry_for(paths.weights, folder / item.name, source="folder" if source else "github",
                         origin=str(source) if source else ICT_REPOSITORY,
                         path=item.name if item.name == "LICENSE" else f"FaceXModel/{item.name}",
                         revision=None if source else ICT_COMMIT, commit=None if source else ICT_COMMIT,
                         sha256=item.sha256) for item in fetched]
    record(paths.weights, entries)
    report.placed += entries
