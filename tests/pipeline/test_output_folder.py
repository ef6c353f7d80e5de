"""OutputFolder and the atomic file writers: complete output or none, and nothing left behind."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from uvidm_backend.pipeline import output_folder
from uvidm_backend.pipeline.errors import UVIDMError
from uvidm_backend.pipeline.output_folder import (
    OutputFolder,
    OutputFolderExists,
    write_bytes,
    write_json,
    write_png,
)


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_success_renames_partial_folder_into_place(tmp_path: Path) -> None:
    target = tmp_path / "alice"
    with OutputFolder(target) as out:
        assert out.path.parent == tmp_path and out.path.name.startswith(".alice.partial-")
        assert not target.exists()
        (out.path / "head.glb").write_bytes(b"glb")
        assert out / "result.json" == out.path / "result.json"
        write_json({"b": 1, "a": 2}, out / "result.json")
    assert out.committed
    assert names(tmp_path) == ["alice"]
    assert names(target) == ["head.glb", "result.json"]
    with pytest.raises(RuntimeError):
        _ = out.path


def test_exception_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "er" / "alice"
    with pytest.raises(KeyError), OutputFolder(target) as out:
        (out.path / "half.png").write_bytes(b"x")
        raise KeyError("stop")
    assert not out.committed
    assert names(tmp_path) == []  # the parents it created went too


def test_keyboard_interrupt_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt), OutputFolder(tmp_path / "alice") as out:
        (out.path / "half.png").write_bytes(b"x")
        raise KeyboardInterrupt
    assert names(tmp_path) == []


def test_existing_parent_kept_on_failure(tmp_path: Path) -> None:
    (tmp_path / "other.txt").write_text("keep")
    with pytest.raises(ValueError), OutputFolder(tmp_path / "alice"):
        raise ValueError
    assert names(tmp_path) == ["other.txt"]


def test_refuses_non_empty_folder_before_any_work(tmp_path: Path) -> None:
    target = tmp_path / "alice"
    target.mkdir()
    (target / "old.glb").write_bytes(b"old")
    ran = False
    with pytest.raises(OutputFolderExists) as caught, OutputFolder(target):
        ran = True
    assert not ran
    assert isinstance(caught.value, UVIDMError) and isinstance(caught.value, FileExistsError)
    assert "overwrit" in str(caught.value)
    assert names(tmp_path) == ["alice"] and names(target) == ["old.glb"]


def test_empty_folder_is_reused(tmp_path: Path) -> None:
    target = tmp_path / "alice"
    target.mkdir()
    with OutputFolder(target) as out:
        (out.path / "new.glb").write_bytes(b"new")
    assert names(tmp_path) == ["alice"] and names(target) == ["new.glb"]


def test_refuses_a_file_even_with_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "alice"
    target.write_text("a file")
    with pytest.raises(OutputFolderExists), OutputFolder(target, overwrite=True):
        pass
    assert target.read_text() == "a file" and names(tmp_path) == ["alice"]


def test_overwrite_replaces_old_folder(tmp_path: Path) -> None:
    target = tmp_path / "alice"
    (target / "sub").mkdir(parents=True)
    (target / "old.glb").write_bytes(b"old")
    (target / "sub" / "old.png").write_bytes(b"old")
    with OutputFolder(target, overwrite=True) as out:
        assert names(target) == ["old.glb", "sub"]  # the old result stays readable meanwhile
        (out.path / "new.glb").write_bytes(b"new")
    assert names(tmp_path) == ["alice"]  # no `.alice.old-*` left
    assert names(target) == ["new.glb"]


def test_overwrite_keeps_old_folder_on_exception(tmp_path: Path) -> None:
    target = tmp_path / "alice"
    target.mkdir()
    (target / "old.glb").write_bytes(b"old")
    with pytest.raises(RuntimeError), OutputFolder(target, overwrite=True) as out:
        (out.path / "new.glb").write_bytes(b"new")
        raise RuntimeError
    assert names(tmp_path) == ["alice"] and names(target) == ["old.glb"]


def test_overwrite_restores_old_folder_when_rename_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "alice"
    target.mkdir()
    (target / "old.glb").write_bytes(b"old")
    real_rename = os.rename

    def failing_rename(src: os.PathLike[str], dst: os.PathLike[str]) -> None:
        if output_folder.PARTIAL_MARK in Path(src).name:
            raise OSError("disk on fire")
        real_rename(src, dst)

    with pytest.raises(OSError, match="disk on fire"), OutputFolder(target, overwrite=True) as out:
        (out.path / "new.glb").write_bytes(b"new")
        monkeypatch.setattr(output_folder.os, "rename", failing_rename)
    monkeypatch.undo()
    assert names(tmp_path) == ["alice"] and names(target) == ["old.glb"]


def test_target_appearing_meanwhile_is_not_clobbered(tmp_path: Path) -> None:
    target = tmp_path / "alice"
    with pytest.raises(OutputFolderExists), OutputFolder(target) as out:
        (out.path / "new.glb").write_bytes(b"new")
        target.mkdir()
        (target / "theirs.glb").write_bytes(b"theirs")
    assert names(tmp_path) == ["alice"] and names(target) == ["theirs.glb"]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_result_folder_has_umask_permissions(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        with OutputFolder(tmp_path / "alice"):
            pass
    finally:
        os.umask(old)
    assert (tmp_path / "alice").stat().st_mode & 0o777 == 0o755


def test_entered_only_once(tmp_path: Path) -> None:
    folder = OutputFolder(tmp_path / "alice")
    with folder:
        pass
    with pytest.raises(RuntimeError), folder:
        pass


def test_write_json_sorted_indented_and_numpy(tmp_path: Path) -> None:
    path = write_json({"z": np.float32(0.5), "a": np.arange(3), "m": {"y": 1, "b": "é"}}, tmp_path / "r.json")
    text = path.read_text(encoding="utf-8")
    assert text == json.dumps({"a": [0, 1, 2], "m": {"b": "é", "y": 1}, "z": 0.5}, indent=2, ensure_ascii=False) + "\n"
    assert names(tmp_path) == ["r.json"]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), np.array([1.0, np.nan]), object()])
def test_write_json_refuses_and_keeps_old_file(tmp_path: Path, bad: object) -> None:
    path = tmp_path / "r.json"
    path.write_text("old")
    with pytest.raises((ValueError, TypeError)):
        write_json({"value": bad}, path)
    assert path.read_text() == "old" and names(tmp_path) == ["r.json"]


@pytest.mark.parametrize("shape", [(5, 7), (5, 7, 3), (5, 7, 4)])
def test_write_png_round_trip(tmp_path: Path, shape: tuple[int, ...]) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    path = write_png(pixels, tmp_path / "a.png")
    with Image.open(path) as image:
        assert image.format == "PNG"
        np.testing.assert_array_equal(np.asarray(image), pixels)
    assert names(tmp_path) == ["a.png"]


@pytest.mark.parametrize("pixels", [np.zeros((4, 4, 3), np.float32), np.zeros((4, 4, 2), np.uint8)])
def test_write_png_refuses_ambiguous_data(tmp_path: Path, pixels: np.ndarray) -> None:
    with pytest.raises(ValueError):
        write_png(pixels, tmp_path / "a.png")
    assert names(tmp_path) == []


def test_write_bytes_failure_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")

    def failing_replace(src: os.PathLike[str], dst: os.PathLike[str]) -> None:
        raise OSError("no")

    monkeypatch.setattr(output_folder.os, "replace", failing_replace)
    with pytest.raises(OSError):
        write_bytes(b"new", path)
    monkeypatch.undo()
    assert path.read_bytes() == b"old" and names(tmp_path) == ["f.bin"]
    assert write_bytes(b"new", path).read_bytes() == b"new"
    assert names(tmp_path) == ["f.bin"]
