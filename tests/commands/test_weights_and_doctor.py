"""`uvidm weights check` and `uvidm doctor`, run as the real command in a subprocess (downloads:
tests/model_files/test_download.py)."""

import os
import subprocess
import sys

import pytest

from uvidm_backend.devtools.model_folder import write_model_folder
from uvidm_backend.registry import MODEL_FILES


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


def test_doctor_reports_each_part_with_advice(model_paths, tmp_path):
    good = uvidm("doctor", *folders(model_paths))
    assert good.returncode == 0, good.stdout + good.stderr
    assert "[ok] model files: all found" in good.stdout
    assert "torch" in good.stdout and "nvdiffrast" in good.stdout
    bad = uvidm("doctor", "--weights", tmp_path / "w", "--bfm", tmp_path / "b")
    assert bad.returncode == 1
    assert "[!!] model files: missing" in bad.stdout and "uvidm weights download" in bad.stdout


def test_doctor_warns_when_the_68_point_model_is_missing(model_paths, tmp_path):
    weights = tmp_path / "weights"
    weights.mkdir()
    for path in model_paths.weights.iterdir():
        (weights / path.name).symlink_to(path)
    detector = weights / "insightface" / "models" / "buffalo_l"
    detector.mkdir(parents=True)
    (detector / "det_10g.onnx").write_bytes(b"detector")
    without = uvidm("doctor", "--weights", weights, "--bfm", model_paths.bfm)
    assert without.returncode == 0, without.stdout + without.stderr  # a warning: detection still works
    assert "[ok] face detector buffalo_l: found" in without.stdout
    assert "[!!] 68 landmarks: 1k3d68.onnx is not in" in without.stdout
    (detector / "1k3d68.onnx").write_bytes(b"landmarks")
    assert "68 landmarks" not in uvidm("doctor", "--weights", weights, "--bfm", model_paths.bfm).stdout


def test_doctor_warns_when_the_official_uv_tables_or_front_mask_are_missing(model_paths, tmp_path):
    stand_ins = uvidm("doctor", *folders(model_paths))  # the fixture folder has neither
    assert "[!!] UV tables: not in the BFM folder; rebuilt" in stand_ins.stdout
    assert "[!!] front mask: front_mask.png not in the BFM folder" in stand_ins.stdout
    assert stand_ins.returncode == 0  # a warning: the head still comes
    official = write_model_folder(tmp_path / "official", seed=1, uv_tables=True, front_mask=True)
    result = uvidm("doctor", *folders(official))
    assert "[ok] UV tables: official" in result.stdout and "[ok] front mask: official" in result.stdout
