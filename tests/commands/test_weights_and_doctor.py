"""`uvidm weights check | download` and `uvidm doctor`, run as the real command in a subprocess."""

import os
import shutil
import subprocess
import sys

import pytest

from uvidm_backend.devtools.model_folder import write_model_folder
from uvidm_backend.registry import HUB_REPOSITORY, MODEL_FILES


@pytest.fixture(scope="module")
def model_paths(tmp_path_factory):
    return write_model_folder(tmp_path_factory.mktemp("models"), seed=1)


def uvidm(*args, env=None):
    environment = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "uvidm_backend.cli", *map(str, args)], capture_output=True,
                          text=True, env=environment, timeout=300)


def folders(paths):
    return ["--weights", paths.weights, "--bfm", paths.bfm]


def test_check_lists_every_file_with_its_size(model_paths):
    result = uvidm("weights", "check", *folders(model_paths))
    assert result.returncode == 0, result.stdout + result.stderr
    for file in MODEL_FILES:
        assert file.name in result.stdout
    ckpt_row = next(line for line in result.stdout.splitlines() if line.startswith("ldm.ckpt"))
    assert "found" in ckpt_row and "MB" in ckpt_row
    assert "all required model files found" in result.stdout


def test_check_names_what_is_missing_and_how_to_get_it(tmp_path):
    result = uvidm("weights", "check", "--weights", tmp_path / "w", "--bfm", tmp_path / "b")
    assert result.returncode == 1
    assert "missing" in result.stdout and "uvidm weights download" in result.stdout


def hub_cache_from(model_paths, cache):
    """The local hub cache as huggingface_hub lays it out, holding the model folder's files."""
    repo = cache / ("models--" + HUB_REPOSITORY.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    for file in MODEL_FILES:
        source = model_paths.path(file)
        if file.hub_path and source.is_file():
            target = repo / "snapshots" / commit / file.hub_path
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)


def test_download_places_files_from_the_hub_cache_offline(model_paths, tmp_path):
    cache = tmp_path / "hub"
    hub_cache_from(model_paths, cache)
    target = tmp_path / "target"
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}
    result = uvidm("weights", "download", "--weights", target / "weights", "--bfm", target / "BFM",
                   "--skip-detector", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    for file in MODEL_FILES:
        placed = (target / ("weights" if file.folder == "weights" else "BFM") / file.name)
        if file.required:
            assert placed.read_bytes() == model_paths.path(file).read_bytes(), file.name
    assert not list(target.rglob("*.partial"))
    check = uvidm("weights", "check", "--weights", target / "weights", "--bfm", target / "BFM")
    assert check.returncode == 0


def test_download_offline_without_a_cache_says_what_to_do(tmp_path):
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "empty-cache")}
    result = uvidm("weights", "download", "--weights", tmp_path / "w", "--bfm", tmp_path / "b", "--skip-detector",
                   env=env)
    assert result.returncode == 1
    assert "HF_HUB_OFFLINE" in result.stdout and "ldm.ckpt" in result.stdout
    assert not (tmp_path / "w" / "ldm.ckpt").exists()


def test_doctor_reports_each_part_with_advice(model_paths, tmp_path):
    good = uvidm("doctor", *folders(model_paths))
    assert good.returncode == 0, good.stdout + good.stderr
    assert "[ok] model files: all found" in good.stdout
    assert "torch" in good.stdout and "nvdiffrast" in good.stdout
    bad = uvidm("doctor", "--weights", tmp_path / "w", "--bfm", tmp_path / "b")
    assert bad.returncode == 1
    assert "[!!] model files: missing" in bad.stdout and "uvidm weights download" in bad.stdout


def test_doctor_warns_when_the_official_uv_tables_or_front_mask_are_missing(model_paths, tmp_path):
    stand_ins = uvidm("doctor", *folders(model_paths))  # the fixture folder has neither
    assert "[!!] UV tables: not in the BFM folder; rebuilt" in stand_ins.stdout
    assert "[!!] front mask: front_mask.png not in the BFM folder" in stand_ins.stdout
    assert stand_ins.returncode == 0  # a warning: the head still comes
    official = write_model_folder(tmp_path / "official", seed=1, uv_tables=True, front_mask=True)
    result = uvidm("doctor", *folders(official))
    assert "[ok] UV tables: official" in result.stdout and "[ok] front mask: official" in result.stdout
