"""`uvidm generate --ray` on a local Ray (CPU actors): the same folders as without Ray."""

import json

import numpy as np
import pytest
from PIL import Image
from pipeline.photos import fixture_landmarks, sample_photo

from uvidm_backend.cli import main


def test_ray_writes_the_folders_of_a_run_without_it(tmp_path, model_paths, capsys):
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install \"uvidm-blender[ray]\")")
    pytest.importorskip("ray.data")
    folder = tmp_path / "studio"
    folder.mkdir()
    data = sample_photo("t1.jpg").read_bytes()
    faces = fixture_landmarks()["t1.jpg"]["faces"]
    names = ["a.jpg", "b.jpg", "notes.jpg"]
    for name in names[:2]:
        (folder / name).write_bytes(data)
    (folder / "notes.jpg").write_bytes(b"not a photo")
    landmarks = tmp_path / "landmarks.json"
    landmarks.write_text(json.dumps({name: {"faces": [{"lm5": faces[i]["lm5"]}]} for i, name in enumerate(names)}))
    common = [str(folder), "--weights", str(model_paths.weights), "--bfm", str(model_paths.bfm), "--device", "cpu",
              "--steps", "2", "--texture-size", "256", "--landmarks", str(landmarks)]
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        assert main(["generate", *common, "-o", str(tmp_path / "ray"), "--ray"]) == 1
    finally:
        ray.shutdown()
    assert main(["generate", *common, "-o", str(tmp_path / "plain")]) == 1
    for out in ("ray", "plain"):
        failures = json.loads((tmp_path / out / "failures.json").read_text())
        assert [f["photo"].rsplit("/", 1)[-1] for f in failures["failures"]] == ["notes.jpg"]
    for stem in ("a", "b"):
        for image in ("albedo.png", "albedo_model.png", "preview.png"):
            with_ray = np.asarray(Image.open(tmp_path / "ray" / stem / image)).astype(int)
            without = np.asarray(Image.open(tmp_path / "plain" / stem / image)).astype(int)
            assert np.abs(with_ray - without).max() <= 1, (stem, image)


def test_without_ray_the_option_says_how_to_get_it(tmp_path, model_paths, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name.startswith("ray") else real(name, *args))
    photo = sample_photo("t1.jpg")
    code = main(["generate", str(photo), "-o", str(tmp_path / "out"), "--weights", str(model_paths.weights),
                 "--bfm", str(model_paths.bfm), "--ray"])
    assert code == 2
    assert 'pip install "uvidm-blender[ray]"' in capsys.readouterr().out
    assert not (tmp_path / "out").exists()
