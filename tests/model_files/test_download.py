"""`uvidm weights download | check` end to end, against the hub stand-in on loopback (real HTTP, real
huggingface_hub, the real command in a subprocess) and on official-layout folders."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hub_standin import COMMIT, HubStandIn, release_files

from uvidm_backend.model_files.sources import FRONT_MASK_PATH, OFFICIAL_CODE_COMMIT, OFFICIAL_CODE_REPOSITORY
from uvidm_backend.registry import HUB_REPOSITORY, MODEL_FILES, ModelPaths

RAW_MASK = f"{OFFICIAL_CODE_REPOSITORY}/{OFFICIAL_CODE_COMMIT}/{FRONT_MASK_PATH}"


def uvidm(*args, env=None, timeout=300):
    environment = {**os.environ, "HF_HUB_DISABLE_PROGRESS_BARS": "1", **(env or {})}
    environment.pop("HF_HUB_OFFLINE", None) if "HF_HUB_OFFLINE" not in (env or {}) else None
    return subprocess.run([sys.executable, "-m", "uvidm_backend.cli", *map(str, args)], capture_output=True,
                          text=True, env=environment, timeout=timeout, stdin=subprocess.DEVNULL)


def target_args(root: Path) -> list:
    return ["--weights", root / "weights", "--bfm", root / "BFM"]


def download(hub: HubStandIn, root: Path, cache: Path, *extra, env=None):
    return uvidm("weights", "download", *target_args(root), "--accept-licences", "--skip-detector", *extra,
                 env={**hub.env(), "HF_HUB_CACHE": str(cache), **(env or {})})


def release_path(file) -> str:
    return file.official_path or f"checkpoints/{file.name}"


def assert_installed(root: Path, release: Path, names=None) -> None:
    paths = ModelPaths.resolve(root / "weights", root / "BFM")
    for file in MODEL_FILES:
        if names is None or file.name in names:
            source = release / release_path(file)
            assert paths.path(file).read_bytes() == source.read_bytes(), file.name
    assert not list(root.rglob("*.partial")) and not list(root.rglob("*.unverified"))


def test_download_lists_resolves_verifies_and_records(release, tmp_path):
    with HubStandIn(HUB_REPOSITORY, release_files(release)) as hub:
        result = download(hub, tmp_path / "m", tmp_path / "cache")
        assert result.returncode == 0, result.stdout + result.stderr
        # listed through the hub's API, then each file fetched at the commit the revision resolved to
        assert ("GET", f"/api/models/{HUB_REPOSITORY}/revision/main", None) in hub.requests
        assert any(path.startswith(f"/api/models/{HUB_REPOSITORY}/tree/{COMMIT}") for _, path, _ in hub.requests)
        assert ("GET", f"/{HUB_REPOSITORY}/resolve/{COMMIT}/checkpoints/ldm.ckpt", None) in hub.requests
    assert_installed(tmp_path / "m", release)
    manifest = json.loads((tmp_path / "m" / "weights" / "models.json").read_text())["files"]
    ckpt = manifest["ldm.ckpt"]
    assert (ckpt["source"], ckpt["origin"], ckpt["path"], ckpt["revision"], ckpt["commit"]) == \
        ("hub", HUB_REPOSITORY, "checkpoints/ldm.ckpt", "main", COMMIT)
    assert ckpt["size"] == (release / "checkpoints/ldm.ckpt").stat().st_size
    assert ckpt["sha256"] == hashlib.sha256((release / "checkpoints/ldm.ckpt").read_bytes()).hexdigest()
    bfm_manifest = json.loads((tmp_path / "m" / "BFM" / "models.json").read_text())["files"]
    assert bfm_manifest["front_mask.png"]["path"] == "masktopo/front.png"
    assert bfm_manifest["BFM_UV.npy"]["path"] == "checkpoints/BFM_UV.npy"

    check = uvidm("weights", "check", *target_args(tmp_path / "m"))
    assert check.returncode == 0, check.stdout
    assert "unchanged since download" in check.stdout
    # one changed byte, same size: only the digest can tell
    uv = tmp_path / "m" / "BFM" / "BFM_UV.npy"
    data = bytearray(uv.read_bytes())
    data[-1] ^= 0xFF
    uv.write_bytes(bytes(data))
    check = uvidm("weights", "check", *target_args(tmp_path / "m"))
    assert check.returncode == 1
    changed = [line for line in check.stdout.splitlines() if line.startswith("changed since download")]
    assert len(changed) == 1 and "BFM_UV.npy" in changed[0], check.stdout


def test_a_cut_download_resumes_where_it_stopped(release, tmp_path):
    size = (release / "checkpoints/ldm.ckpt").stat().st_size
    with HubStandIn(HUB_REPOSITORY, release_files(release)) as hub:
        hub.cut_after["checkpoints/ldm.ckpt"] = size // 2
        first = download(hub, tmp_path / "m", tmp_path / "cache")
        assert first.returncode == 1
        assert "ldm.ckpt" in first.stderr and "again to resume" in first.stderr
        assert not (tmp_path / "m" / "weights" / "ldm.ckpt").exists()
        assert "ldm.ckpt" not in json.loads((tmp_path / "m" / "weights" / "models.json").read_text())["files"]
        assert (tmp_path / "m" / "weights" / "epoch_20.pth").is_file()  # the other files went on
        hub.cut_after.clear()
        hub.requests.clear()
        second = download(hub, tmp_path / "m", tmp_path / "cache")
        assert second.returncode == 0, second.stdout + second.stderr
        ranges = [rng for method, path, rng in hub.requests if method == "GET" and path.endswith("/ldm.ckpt")]
        assert ranges == [f"bytes={size // 2}-"]  # resumed, not started again
        # files finished by the first run were not fetched again
        assert not any(path.endswith("epoch_20.pth") for _, path, _ in hub.requests)
    assert_installed(tmp_path / "m", release)


def test_a_file_missing_from_the_repository_is_named_with_what_the_repository_holds(release, tmp_path):
    files = release_files(release)
    del files["checkpoints/epoch_20.pth"]
    with HubStandIn(HUB_REPOSITORY, files) as hub:
        result = download(hub, tmp_path / "m", tmp_path / "cache")
    assert result.returncode == 1
    assert "no epoch_20.pth" in result.stderr and "checkpoints/ldm.ckpt" in result.stderr
    assert not (tmp_path / "m").exists() or not list((tmp_path / "m").rglob("*.*"))


def test_files_are_found_by_name_outside_the_official_folders(release, tmp_path):
    files = {("weights/" + Path(path).name if path.endswith((".ckpt", ".pth")) else path): local
             for path, local in release_files(release).items()}
    with HubStandIn(HUB_REPOSITORY, files) as hub:
        result = download(hub, tmp_path / "m", tmp_path / "cache")
    assert result.returncode == 0, result.stderr
    assert_installed(tmp_path / "m", release)
    manifest = json.loads((tmp_path / "m" / "weights" / "models.json").read_text())["files"]
    assert manifest["ldm.ckpt"]["path"] == "weights/ldm.ckpt"


def test_a_corrupted_file_fails_verification_and_nothing_looks_valid(release, tmp_path):
    files = release_files(release)
    bad = tmp_path / "bad_uv.npy"
    bad.write_bytes(b"\x93NUMPY garbage" + bytes(range(256)) * 10)
    files["checkpoints/BFM_UV.npy"] = bad
    bad_ckpt = tmp_path / "bad.pth"
    bad_ckpt.write_bytes(b"PK\x03\x04" + b"\0" * 4096)
    files["checkpoints/epoch_20.pth"] = bad_ckpt
    with HubStandIn(HUB_REPOSITORY, files) as hub:
        result = download(hub, tmp_path / "m", tmp_path / "cache")
    assert result.returncode == 1
    assert "BFM_UV.npy" in result.stderr and "epoch_20.pth" in result.stderr
    root = tmp_path / "m"
    assert not (root / "BFM" / "BFM_UV.npy").exists() and not (root / "weights" / "epoch_20.pth").exists()
    recorded = {**json.loads((root / "weights" / "models.json").read_text())["files"],
                **json.loads((root / "BFM" / "models.json").read_text())["files"]}
    assert "BFM_UV.npy" not in recorded and "epoch_20.pth" not in recorded
    assert "ldm.ckpt" in recorded  # good files are kept
    check = uvidm("weights", "check", *target_args(root))
    assert check.returncode == 1 and "missing" in check.stdout


def test_offline_with_a_complete_cache_and_without_one(release, tmp_path):
    cache = tmp_path / "cache"
    with HubStandIn(HUB_REPOSITORY, release_files(release)) as hub:
        assert download(hub, tmp_path / "online", cache).returncode == 0
    offline = uvidm("weights", "download", *target_args(tmp_path / "offline"), "--accept-licences",
                    "--skip-detector", env={"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)})
    assert offline.returncode == 0, offline.stdout + offline.stderr
    assert_installed(tmp_path / "offline", release)
    empty = uvidm("weights", "download", *target_args(tmp_path / "none"), "--accept-licences", "--skip-detector",
                  env={"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "empty")})
    assert empty.returncode == 1
    assert "HF_HUB_OFFLINE" in empty.stderr and "--from DIR" in empty.stderr
    assert not (tmp_path / "none" / "weights" / "ldm.ckpt").exists()


def test_an_unreachable_hub_fails_within_seconds_naming_the_hub_and_from(tmp_path):
    started = time.monotonic()
    result = uvidm("weights", "download", *target_args(tmp_path), "--accept-licences",
                   env={"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_CACHE": str(tmp_path / "cache")}, timeout=60)
    assert result.returncode == 1
    assert time.monotonic() - started < 30
    assert "http://127.0.0.1:9" in result.stderr and "cannot be reached" in result.stderr
    assert "--from DIR" in result.stderr


def test_from_an_official_release_folder(release, tmp_path):
    result = uvidm("weights", "download", "--from", release, *target_args(tmp_path / "m"), "--accept-licences",
                   "--skip-detector")
    assert result.returncode == 0, result.stdout + result.stderr
    assert_installed(tmp_path / "m", release)
    source, placed = release / "checkpoints/ldm.ckpt", tmp_path / "m" / "weights" / "ldm.ckpt"
    if source.stat().st_dev == placed.stat().st_dev:
        assert placed.stat().st_ino == source.stat().st_ino  # a hard link, not a second copy
    entry = json.loads((tmp_path / "m" / "weights" / "models.json").read_text())["files"]["ldm.ckpt"]
    assert (entry["source"], entry["origin"], entry["path"]) == ("folder", str(release), "checkpoints/ldm.ckpt")
    assert uvidm("weights", "check", *target_args(tmp_path / "m")).returncode == 0


def test_from_a_folder_that_is_not_a_release(tmp_path):
    (tmp_path / "src" / "checkpoints").mkdir(parents=True)
    (tmp_path / "src" / "checkpoints" / "ldm.ckpt").write_bytes(b"x")
    result = uvidm("weights", "download", "--from", tmp_path / "src", *target_args(tmp_path / "m"),
                   "--accept-licences", "--skip-detector")
    assert result.returncode == 1
    assert "not a complete official release folder" in result.stderr and "epoch_20.pth" in result.stderr


def test_the_front_mask_comes_from_the_official_code_when_the_hub_lacks_it(release, tmp_path):
    files = release_files(release)
    mask = files.pop("masktopo/front.png")
    # The stand-in serves the synthetic mask, whose digest is not the official one: refused and deleted.
    with HubStandIn(HUB_REPOSITORY, files, raw={RAW_MASK: mask}) as hub:
        result = download(hub, tmp_path / "m", tmp_path / "cache")
        assert ("GET", f"/raw/{RAW_MASK}", None) in hub.requests
    assert result.returncode == 1
    assert "front_mask.png" in result.stderr and "is not the expected" in result.stderr
    assert not (tmp_path / "m" / "BFM" / "front_mask.png").exists()
    assert not list((tmp_path / "m" / "BFM").glob("front_mask*"))
    assert (tmp_path / "m" / "weights" / "ldm.ckpt").is_file()


OFFICIAL_MIRROR = Path("/work/.mirror/Luh1124+UV-IDM/repo")


@pytest.mark.skipif(not OFFICIAL_MIRROR.is_dir(), reason="the official code repository is not on this machine")
def test_the_official_front_mask_passes_its_digest(release, tmp_path):
    official = tmp_path / "front.png"
    official.write_bytes(subprocess.run(["git", "-C", OFFICIAL_MIRROR, "show", f"HEAD:{FRONT_MASK_PATH}"],
                                        capture_output=True, check=True).stdout)
    files = release_files(release)
    files.pop("masktopo/front.png")
    with HubStandIn(HUB_REPOSITORY, files, raw={RAW_MASK: official}) as hub:
        result = download(hub, tmp_path / "m", tmp_path / "cache")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "m" / "BFM" / "front_mask.png").read_bytes() == official.read_bytes()


def test_nothing_is_downloaded_without_consent(release, tmp_path):
    with HubStandIn(HUB_REPOSITORY, release_files(release)) as hub:
        result = uvidm("weights", "download", *target_args(tmp_path / "m"), "--skip-detector",
                       env={**hub.env(), "HF_HUB_CACHE": str(tmp_path / "cache")})
        assert not any("/resolve/" in path for _, path, _ in hub.requests)
    assert result.returncode == 2
    assert "non-commercial" in result.stdout and "--accept-licences" in result.stdout
    assert not (tmp_path / "m" / "weights" / "ldm.ckpt").exists()


def test_the_full_head_from_a_checkout_is_recorded_with_the_other_files(release, tmp_path):
    from uvidm_backend.devtools.ict_fixture import write_ict_folder

    checkout = tmp_path / "ICT-FaceKit"
    write_ict_folder(checkout / "FaceXModel")
    result = uvidm("weights", "download", "--from", release, "--full-head-from", checkout,
                   *target_args(tmp_path / "m"), "--accept-licences", "--skip-detector")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ICT FaceKit" in result.stdout and "MIT" in result.stdout
    manifest = json.loads((tmp_path / "m" / "weights" / "models.json").read_text())["files"]
    neutral = manifest["ict_facekit/generic_neutral_mesh.obj"]
    assert (neutral["source"], neutral["path"]) == ("folder", "FaceXModel/generic_neutral_mesh.obj")
    assert neutral["sha256"] == hashlib.sha256(
        (checkout / "FaceXModel" / "generic_neutral_mesh.obj").read_bytes()).hexdigest()
    assert uvidm("weights", "check", *target_args(tmp_path / "m")).returncode == 0


def test_the_first_run_downloads_everything_then_makes_a_head_offline(release, detector_zip, tmp_path):
    """What a new user does: download (detector included, into the model folder), then generate with
    detection, offline: no job stalls on a download."""
    root = tmp_path / "m"
    with HubStandIn(HUB_REPOSITORY, release_files(release), detector_zip=detector_zip) as hub:
        result = uvidm("weights", "download", *target_args(root), "--accept-licences",
                       env={**hub.env(), "HF_HUB_CACHE": str(tmp_path / "cache")})
        assert result.returncode == 0, result.stdout + result.stderr
        assert ("GET", "/insightface/buffalo_l.zip", None) in hub.requests
    detector = root / "weights" / "insightface" / "models" / "buffalo_l"
    assert sorted(p.name for p in detector.glob("*.onnx")) == ["1k3d68.onnx", "det_10g.onnx"]
    assert not list(detector.parent.glob("*.zip*")) and not list(detector.parent.glob("*.unverified"))
    manifest = json.loads((root / "weights" / "models.json").read_text())["files"]
    assert manifest["insightface/models/buffalo_l/det_10g.onnx"]["source"] == "insightface"
    generate = uvidm("generate", "sample:t1.jpg", "-o", tmp_path / "out", *target_args(root), "--steps", "2",
                     "--texture-size", "256", env={"HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"})
    assert generate.returncode == 0, generate.stdout + generate.stderr
    info = json.loads((tmp_path / "out" / "t1" / "result.json").read_text())
    assert info["face"]["landmarks_source"] == "lm68"
    assert (tmp_path / "out" / "t1" / "head.glb").is_file()


def test_a_broken_detector_archive_is_refused_and_nothing_is_left(release, tmp_path):
    bad = tmp_path / "buffalo_l.zip"
    bad.write_bytes(b"PK\x05\x06" + b"\0" * 18)  # an empty zip: no models in it
    with HubStandIn(HUB_REPOSITORY, release_files(release), detector_zip=bad) as hub:
        result = uvidm("weights", "download", *target_args(tmp_path / "m"), "--accept-licences",
                       env={**hub.env(), "HF_HUB_CACHE": str(tmp_path / "cache")})
    assert result.returncode == 1
    assert "buffalo_l" in result.stderr and "no .onnx" in result.stderr
    models = tmp_path / "m" / "weights" / "insightface" / "models"
    assert not (models / "buffalo_l").exists() and not list(models.glob("*"))
