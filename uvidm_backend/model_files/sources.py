"""Where each model file comes from: the hub repository (listed, not assumed), GitHub, insightface.

The hub repository is listed with huggingface_hub's API (or, offline, read from its local cache) and
every file is looked up by name: at its path in the official release first, then anywhere else.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from uvidm_backend.errors import UVIDMError
from uvidm_backend.registry import HUB_REPOSITORY, INSIGHTFACE_MODEL, ModelFile

log = logging.getLogger(__name__)

OFFICIAL_FOLDERS = ("checkpoints", "BFM", "masktopo")

# The official code repository keeps the front mask; pinned to a commit and checked by its digest.
OFFICIAL_CODE_REPOSITORY = "Luh1124/UV-IDM"
OFFICIAL_CODE_COMMIT = "2ada3be30fa4ee966d230c051c06dff11ca714c8"
FRONT_MASK_PATH = "masktopo/front.png"
FRONT_MASK_SHA256 = "6281dad81a0a00600f04a1e325da8d242130fcf09ed11ea986f5196cf613b9e9"
GITHUB_RAW_ENV = "UVIDM_GITHUB_RAW"  # a mirror of raw.githubusercontent.com (tests: a loopback stand-in)
GITHUB_RAW = "https://raw.githubusercontent.com"
INSIGHTFACE_URL_ENV = "UVIDM_INSIGHTFACE_URL"  # where buffalo_l.zip is fetched from, when not insightface's own


class ModelSourceError(UVIDMError, RuntimeError):
    """The files cannot be listed or found where they should come from; the message says what to do."""


def hub_endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def unreachable_advice() -> str:
    return ("check the network (or set HF_ENDPOINT to a mirror of the hub), or install the files from an official "
            "release folder you already have: `uvidm weights download --from DIR`")


@dataclass(frozen=True)
class HubListing:
    repository: str
    revision: str
    commit: str
    files: dict[str, int]  # path in the repository -> size in bytes
    offline: bool  # read from the local cache (HF_HUB_OFFLINE)
    sha256: dict[str, str] = field(default_factory=dict)  # the hub's digest of each large (LFS) file
    etags: dict[str, str] = field(default_factory=dict)  # what huggingface_hub's cache names each blob

    def resolve(self, file: ModelFile) -> str | None:
        """The file's path in the repository: its official path, else the same name in an official folder,
        else the same name anywhere (the shortest path); None when the repository has no such file."""
        if file.official_path in self.files:
            return file.official_path
        wanted = PurePosixPath(file.official_path).name if file.official_path else file.name
        candidates = [path for path in self.files if PurePosixPath(path).name in (wanted, file.name)]
        candidates.sort(key=lambda path: (PurePosixPath(path).parts[0] not in OFFICIAL_FOLDERS,
                                          len(PurePosixPath(path).parts), path))
        if len(candidates) > 1:
            log.info("%s: several candidates in %s (%s); taking %s", file.name, self.repository,
                     ", ".join(candidates), candidates[0])
        return candidates[0] if candidates else None

    def describe(self, limit: int = 40) -> str:
        paths = sorted(self.files)
        shown = "\n".join(f"  {path} ({self.files[path]} bytes)" for path in paths[:limit])
        more = f"\n  ... and {len(paths) - limit} more" if len(paths) > limit else ""
        return f"{self.repository} at {self.revision} ({self.commit[:12]}) holds {len(paths)} file(s):\n" + \
            (shown or "  (nothing)") + more


def list_hub(repository: str = HUB_REPOSITORY, revision: str = "main") -> HubListing:
    """Every file of the repository at `revision`, from the hub, or from the local cache when offline."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    if constants.HF_HUB_OFFLINE:
        return _cached_listing(repository, revision)
    api = HfApi()
    try:
        info = api.model_info(repository, revision=revision)
        entries = api.list_repo_tree(repository, revision=info.sha, recursive=True)
        entries = [entry for entry in entries if hasattr(entry, "size")]  # files, not folders
        files = {entry.path: int(entry.size) for entry in entries}
        digests = {entry.path: entry.lfs.sha256 for entry in entries if getattr(entry, "lfs", None)}
        etags = {entry.path: digests.get(entry.path, entry.blob_id) for entry in entries}
    except RevisionNotFoundError as error:
        raise ModelSourceError(f"the hub repository {repository} has no revision {revision!r}") from error
    except RepositoryNotFoundError as error:
        raise ModelSourceError(f"the hub ({hub_endpoint()}) has no repository {repository}") from error
    except Exception as error:  # httpx's and huggingface_hub's network errors share no base class
        raise ModelSourceError(f"the hub ({hub_endpoint()}) cannot be reached to list {repository} "
                               f"({type(error).__name__}: {error}); {unreachable_advice()}") from error
    return HubListing(repository, revision, info.sha, files, offline=False, sha256=digests, etags=etags)


def _cached_listing(repository: str, revision: str) -> HubListing:
    from huggingface_hub import snapshot_download

    try:
        snapshot = Path(snapshot_download(repository, revision=revision, local_files_only=True))
    except Exception as error:
        raise ModelSourceError(f"offline (HF_HUB_OFFLINE is set) and the local hub cache has no copy of "
                               f"{repository} at {revision!r}; unset HF_HUB_OFFLINE to download, or "
                               f"`uvidm weights download --from DIR`") from error
    files = {path.relative_to(snapshot).as_posix(): path.stat().st_size
             for path in snapshot.rglob("*") if path.is_file()}
    return HubListing(repository, revision, snapshot.name, files, offline=True)


def front_mask_url() -> str:
    base = os.environ.get(GITHUB_RAW_ENV, GITHUB_RAW).rstrip("/")
    return f"{base}/{OFFICIAL_CODE_REPOSITORY}/{OFFICIAL_CODE_COMMIT}/{FRONT_MASK_PATH}"


def detector_url() -> str:
    """insightface's own download address of buffalo_l.zip (it moves between releases), unless overridden."""
    if os.environ.get(INSIGHTFACE_URL_ENV):
        return os.environ[INSIGHTFACE_URL_ENV]
    try:
        from insightface.utils.storage import model_zoo_download_url

        return model_zoo_download_url(f"{INSIGHTFACE_MODEL}.zip")
    except ImportError:
        return f"https://github.com/deepinsight/insightface/releases/download/v0.7/{INSIGHTFACE_MODEL}.zip"




def add_to_hub_cache(listing: HubListing, path: str, local: Path) -> None:
    """Registers a downloaded file in huggingface_hub's cache (a hard link: no second copy), laid out as
    huggingface_hub lays it out (blobs/, snapshots/<commit>/, refs/), so offline runs and other tools find it."""
    from huggingface_hub import constants

    etag = listing.etags.get(path)
    if not etag:
        return
    repo = Path(constants.HF_HUB_CACHE) / ("models--" + listing.repository.replace("/", "--"))
    blob = repo / "blobs" / etag
    pointer = repo / "snapshots" / listing.commit / path
    try:
        blob.parent.mkdir(parents=True, exist_ok=True)
        if not blob.exists():
            os.link(local, blob)
        pointer.parent.mkdir(parents=True, exist_ok=True)
        if not pointer.is_symlink():
            pointer.symlink_to(os.path.relpath(blob, pointer.parent))
        ref = repo / "refs" / listing.revision  # a revision such as refs/pr/1 has folders
        ref.parent.mkdir(parents=True, exist_ok=True)
        ref.write_text(listing.commit)
    except OSError as error:  # another file system, or no links on it: the cache is a convenience
        log.info("%s not added to the hub cache (%s)", path, error)
