"""`uvidm generate` on a full disk: the photo whose result does not fit is reported, the others go on."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from disk_full import WritesFail
from PIL import Image
from pipeline.photos import fixture_landmarks, sample_photo

from uvidm_backend.cli import main


@pytest.fixture(scope="module")
def model_paths(tmp_path_factory):
    from uvidm_backend.devtools.model_folder import write_model_folder

    return write_model_folder(tmp_path_factory.mktemp("models"))


def test_a_full_disk_fails_one_photo_and_the_others_go_on(tmp_path, model_paths, monkeypatch, capsys):
    from uvidm_backend.pipeline import output_folder

    left, top = 0, 200  # a 320x320 crop of t1.jpg around its left-most face, saved under two names
    with Image.open(sample_photo("t1.jpg")) as image:
        crop = image.convert("RGB").crop((left, top, left + 320, top + 320))
    buffer = io.BytesIO()
    crop.save(buffer, format="JPEG", quality=92)
    photos = [tmp_path / "first.jpg", tmp_path / "second.jpg"]
    for photo in photos:
        photo.write_bytes(buffer.getvalue())
    points = [[x - left, y - top] for x, y in fixture_landmarks()["t1.jpg"]["faces"][0]["lm5"]]
    landmarks = tmp_path / "landmarks.json"
    landmarks.write_text(json.dumps({photo.name: {"faces": [{"lm5": points}]} for photo in photos}))

    real_open = open

    def full_for_the_first(file, mode="r", *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)
        return WritesFail(handle) if Path(file).parent.name.startswith(".first.partial-") else handle

    monkeypatch.setattr(output_folder, "open", full_for_the_first, raising=False)
    out = tmp_path / "out"
    code = main(["generate", *map(str, photos), "-o", str(out), "--landmarks", str(landmarks),
                 "--weights", str(model_paths.weights), "--bfm", str(model_paths.bfm), "--device", "cpu",
                 "--steps", "2", "--texture-size", "256"])
    printed = capsys.readouterr()
    assert code == 1
    assert f"{photos[0]}: no space left on the disk of {out}" in printed.out, printed.out
    assert "Traceback" not in printed.out + printed.err
    assert "1 of 2 photo(s) failed" in printed.out
    # nothing of the first, no partial folder; the failure recorded
    assert sorted(path.name for path in out.iterdir()) == ["failures.json", "second"]
    assert "first.jpg" in (out / "failures.json").read_text()
    assert (out / "second" / "head.glb").is_file()
