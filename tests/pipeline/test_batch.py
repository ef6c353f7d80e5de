"""Batches: photos through the networks together give the heads they give one by one; `uvidm generate` over
folders, with failures.json, the exit code and re-runs that skip finished folders."""

import json

import numpy as np
import pytest
from PIL import Image
from pipeline.photos import fixture_landmarks, sample_photo

from uvidm_backend.cli import main
from uvidm_backend.pipeline import Cancelled, GenerateOptions
from uvidm_backend.pipeline.folder_run import FAILURES_FILE, expand_photos
from uvidm_backend.pipeline.pipeline import Request

FAST = {"steps": 4, "texture_size": 256}
IMAGES = ("albedo.png", "albedo_model.png", "albedo_model_matched.png", "preview.png")


def t1_faces():
    return fixture_landmarks()["t1.jpg"]["faces"]


def assert_same_images(actual: np.ndarray, expected: np.ndarray, what: str) -> None:
    """Equal up to float tolerance: a texel may round the other way (the networks' batch of B sums in
    another order than their batch of one)."""
    assert actual.shape == expected.shape, what
    diff = np.abs(actual.astype(np.int32) - expected.astype(np.int32))
    assert diff.max() <= 1 and diff.mean() < 1e-3, f"{what}: max {diff.max()}, mean {diff.mean():.2e}"


def test_a_batch_gives_each_photo_the_head_it_gets_alone(pipeline):
    faces = t1_faces()
    photo = sample_photo("t1.jpg")
    requests = [Request(photo, GenerateOptions(landmarks=faces[i]["lm5"], seed=10 + i, **FAST)) for i in range(3)]
    alone = [pipeline.generate(request.photo, request.options) for request in requests]
    together = pipeline.generate_batch(requests)
    for i, (head, expected) in enumerate(zip(together, alone, strict=True)):
        for name in ("albedo", "albedo_model", "albedo_model_matched", "preview"):
            assert_same_images(getattr(head, name), getattr(expected, name), f"photo {i} {name}")
        np.testing.assert_allclose(head.mesh.vertices, expected.mesh.vertices, atol=1e-6)
        for name, values in expected.info["coefficients"].items():
            np.testing.assert_allclose(head.info["coefficients"][name], values, atol=1e-5, err_msg=name)
        assert head.info["batch"]["size"] == 3 and expected.info["batch"]["size"] == 1
    # Each photo its own seed-derived noise: the same face with another seed is another texture.
    assert not np.array_equal(together[0].albedo_model, alone[1].albedo_model)


def test_photos_of_several_sizes_in_one_batch_get_the_heads_they_get_alone(pipeline, tmp_path):
    # The steps that read whole photos run once per photo size: photos of two sizes, interleaved.
    faces = t1_faces()
    photo = sample_photo("t1.jpg")
    pixels = np.asarray(Image.open(photo).convert("RGB"))
    wider = tmp_path / "wider.png"
    Image.fromarray(np.pad(pixels, ((0, 24), (0, 40), (0, 0)), mode="edge")).save(wider)  # the face stays put
    sources = [photo, wider, photo, wider]
    requests = [Request(source, GenerateOptions(landmarks=faces[i % 3]["lm5"], seed=i, **FAST))
                for i, source in enumerate(sources)]
    together = pipeline.generate_batch(requests)
    for i, (head, request) in enumerate(zip(together, requests, strict=True)):
        alone = pipeline.generate(request.photo, request.options)
        assert head.preview.shape == alone.preview.shape
        for name in ("albedo", "albedo_model", "albedo_model_matched", "preview"):
            assert_same_images(getattr(head, name), getattr(alone, name), f"photo {i} {name}")
        for name, values in alone.info["coefficients"].items():
            np.testing.assert_allclose(head.info["coefficients"][name], values, atol=1e-5, err_msg=name)
    assert together[1].preview.shape != together[0].preview.shape


def test_a_batch_padded_to_a_larger_size_gives_the_same_heads(pipeline):
    faces = t1_faces()
    photo = sample_photo("t1.jpg")
    requests = [Request(photo, GenerateOptions(landmarks=faces[i]["lm5"], seed=5, **FAST)) for i in (2, 4)]
    plain = pipeline.generate_batch(requests)
    padded = pipeline.generate_batch(requests, run_batch=4)
    for head, expected in zip(padded, plain, strict=True):
        assert_same_images(head.albedo_model, expected.albedo_model, "padded")
        assert head.info["batch"] == {"size": 2, "run_at": 4}


def test_a_batch_finished_after_the_next_batch_networks_gives_the_same_heads(pipeline):
    # A folder run finishes one batch (meshes, previews, result.json) while the next batch's networks run:
    # what a batch in flight holds must be its own.
    faces = t1_faces()
    photo = sample_photo("t1.jpg")
    first, second = ([pipeline.prepare(photo, GenerateOptions(landmarks=faces[i]["lm5"], seed=i, **FAST))]
                     for i in (0, 1))
    expected = [pipeline.generate_prepared(first)[0], pipeline.generate_prepared(second)[0]]
    in_flight = [pipeline.run_networks(first), pipeline.run_networks(second)]
    finished = [pipeline.finish(in_flight[1])[0], pipeline.finish(in_flight[0])[0]][::-1]
    for head, wanted in zip(finished, expected, strict=True):
        for name in ("albedo", "albedo_model", "albedo_model_matched", "preview"):
            np.testing.assert_array_equal(getattr(head, name), getattr(wanted, name), err_msg=name)
        np.testing.assert_array_equal(head.mesh.vertices, wanted.mesh.vertices)
        assert head.info["coefficients"] == wanted.info["coefficients"]
    assert not np.array_equal(finished[0].albedo_model, finished[1].albedo_model)


def test_a_photo_that_fails_or_is_cancelled_fails_alone(pipeline, tmp_path):
    faces = t1_faces()
    photo = sample_photo("t1.jpg")
    notes = tmp_path / "notes.jpg"
    notes.write_bytes(b"not a photo")

    def cancel_in_diffusion(stage, fraction):
        if stage == "diffusion" and fraction > 0.2:
            raise Cancelled("cancelled by the test")

    seen = []
    requests = [Request(notes, GenerateOptions(landmarks=faces[0]["lm5"], **FAST)),
                Request(photo, GenerateOptions(landmarks=faces[1]["lm5"], **FAST), cancel_in_diffusion),
                Request(photo, GenerateOptions(landmarks=faces[2]["lm5"], **FAST),
                        lambda stage, fraction: seen.append((stage, fraction)))]
    bad, cancelled, good = pipeline.generate_batch(requests)
    assert "not an image" in str(bad)
    assert isinstance(cancelled, Cancelled)
    assert good.info["batch"]["size"] == 2  # the unreadable photo never reached the networks
    assert_same_images(good.albedo_model, pipeline.generate(photo, requests[2].options).albedo_model, "survivor")
    fractions = [fraction for _, fraction in seen]
    assert fractions == sorted(fractions)
    assert list(dict.fromkeys(stage for stage, _ in seen)) == ["photo", "face", "condition", "diffusion", "decode",
                                                               "texture", "mesh", "preview"]


def test_photos_of_one_batch_must_share_their_options(pipeline):
    photo = sample_photo("t1.jpg")
    lm5 = t1_faces()[0]["lm5"]
    with pytest.raises(ValueError, match="batch_key"):
        pipeline.generate_batch([Request(photo, GenerateOptions(landmarks=lm5, steps=4)),
                                 Request(photo, GenerateOptions(landmarks=lm5, steps=6))])
    # Seeds, faces, expressions and heads may differ.
    assert GenerateOptions(seed=1, expression="neutral").batch_key() == GenerateOptions(seed=2).batch_key()


def test_folders_expand_to_their_images(tmp_path):
    folder = tmp_path / "studio"
    (folder / "sub").mkdir(parents=True)
    for name in ("b.PNG", "a.jpg", "c.webp", "notes.txt", ".hidden.jpg", "sub/d.jpg"):
        (folder / name).write_bytes(b"x")
    single = tmp_path / "single.jpeg"
    single.write_bytes(b"x")
    assert [path.name for path in expand_photos([folder, single])] == ["a.jpg", "b.PNG", "c.webp", "single.jpeg"]


def studio_folder(tmp_path, names):
    """Copies of t1.jpg named `names`, and a landmarks file giving each its own face of t1."""
    folder = tmp_path / "studio"
    folder.mkdir()
    data = sample_photo("t1.jpg").read_bytes()
    faces = t1_faces()
    for name in names:
        (folder / name).write_bytes(data)
    landmarks = tmp_path / "landmarks.json"
    landmarks.write_text(json.dumps({name: {"faces": [{"lm5": faces[i % len(faces)]["lm5"]}]}
                                     for i, name in enumerate(names)}))
    return folder, landmarks


def run_cli(model_paths, out, *args):
    return main(["generate", *map(str, args), "-o", str(out), "--weights", str(model_paths.weights),
                 "--bfm", str(model_paths.bfm), "--device", "cpu", "--steps", "4", "--texture-size", "256"])


def test_a_folder_in_batches_writes_the_files_of_one_by_one(tmp_path, model_paths, pipeline):
    names = ["p0.jpg", "p1.jpg", "p2.jpg"]
    folder, landmarks = studio_folder(tmp_path, names)
    out = tmp_path / "out"
    assert run_cli(model_paths, out, folder, "--landmarks", landmarks, "--batch-size", "2") == 0
    assert sorted(path.name for path in out.iterdir()) == ["p0", "p1", "p2"]  # no failures.json
    faces = t1_faces()
    for i, name in enumerate(names):
        expected = pipeline.generate_to_folder(folder / name, tmp_path / "alone" / name,
                                               GenerateOptions(landmarks=faces[i]["lm5"], face_index=0, **FAST))
        batched = out / name[:-4]
        assert sorted(path.name for path in batched.iterdir()) == sorted(path.name for path in expected.iterdir())
        for image in IMAGES:
            assert_same_images(np.asarray(Image.open(batched / image)), np.asarray(Image.open(expected / image)),
                               f"{name} {image}")
        result = json.loads((batched / "result.json").read_text())
        assert result["batch"]["size"] == (2 if i < 2 else 1) and result["batch"]["run_at"] == 2
        assert result["options"] == json.loads((expected / "result.json").read_text())["options"]


def test_failures_are_listed_and_a_rerun_skips_finished_folders(tmp_path, model_paths, capsys):
    folder, landmarks = studio_folder(tmp_path, ["good.jpg", "notes.jpg", "other.jpg"])
    (folder / "notes.jpg").write_bytes(b"these are my notes, not a photo")
    out = tmp_path / "out"
    assert run_cli(model_paths, out, folder, "--landmarks", landmarks, "--batch-size", "2") == 1
    printed = capsys.readouterr().out
    assert "notes.jpg" in printed and "not an image" in printed and "1 of 3 photo(s) failed" in printed
    failures = json.loads((out / FAILURES_FILE).read_text())
    assert failures["total"] == 3 and failures["failed"] == 1
    (failure,) = failures["failures"]
    assert failure["photo"].endswith("notes.jpg") and "not an image" in failure["error"]
    assert sorted(path.name for path in out.iterdir()) == [FAILURES_FILE, "good", "other"]
    written = {path: path.stat().st_mtime_ns for path in (out / "good").iterdir()}

    # The notes become a photo: a re-run makes it, and leaves the finished folders as they are.
    (folder / "notes.jpg").write_bytes(sample_photo("t1.jpg").read_bytes())
    assert run_cli(model_paths, out, folder, "--landmarks", landmarks) == 0
    printed = capsys.readouterr().out
    assert "2 photo(s) skipped" in printed
    assert {path: path.stat().st_mtime_ns for path in (out / "good").iterdir()} == written
    assert sorted(path.name for path in out.iterdir()) == ["good", "notes", "other"]  # failures.json gone
