"""`uvidm generate` and the pipeline end to end, on the sample photo t1.jpg with the fixture model folder."""

import json
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import trimesh
from PIL import Image
from pipeline.photos import encode, exif_jpeg, fixture_landmarks, png_claiming, sample_photo

from uvidm_backend.cli import main
from uvidm_backend.pipeline import Cancelled, GenerateOptions, InputError
from uvidm_backend.pipeline import files as files_module
from uvidm_backend.pipeline import pipeline as pipeline_module
from uvidm_backend.pipeline.preview import preview_scale

OUTPUTS = {"head.glb", "head.obj", "head.mtl", "albedo.png", "albedo_model.png", "albedo_model_matched.png",
           "preview.png", "result.json"}
FAST = {"steps": 4, "texture_size": 256}


def t1_faces():
    return fixture_landmarks()["t1.jpg"]["faces"]


def landmarks_file(tmp_path, names, face):
    """A landmarks file in the fixtures layout giving `face`'s five points for every photo name."""
    path = tmp_path / "landmarks.json"
    path.write_text(json.dumps({name: {"faces": [{"lm5": face["lm5"]}]} for name in names}))
    return path


def run_cli(tmp_path, model_paths, photos, *extra):
    args = ["generate", *map(str, photos), "-o", str(tmp_path / "out"), "--weights", str(model_paths.weights),
            "--bfm", str(model_paths.bfm), "--device", "cpu", "--steps", "4", "--texture-size", "256", *extra]
    return main(args)


def left_over_partials(folder):
    return [path.name for path in folder.rglob("*") if ".partial" in path.name]


def test_cli_writes_every_output_for_t1(tmp_path, model_paths, capsys):
    photo = sample_photo("t1.jpg")
    landmarks = tmp_path / "t1_landmarks.json"
    landmarks.write_text(json.dumps(fixture_landmarks()))
    assert run_cli(tmp_path, model_paths, [photo], "--landmarks", str(landmarks), "--face", "3") == 0
    folder = tmp_path / "out" / "t1"
    assert {path.name for path in folder.iterdir()} == OUTPUTS
    result = json.loads((folder / "result.json").read_text())
    assert result["face"]["index"] == 3
    # The fixture gives 68 points (and five): the official five are taken from the 68.
    lm68 = np.asarray(t1_faces()[3]["lm68"])
    expected = np.stack([(lm68[36] + lm68[39]) / 2, (lm68[42] + lm68[45]) / 2, lm68[30], lm68[48], lm68[54]])
    np.testing.assert_allclose(result["face"]["landmarks"], expected, atol=0.01)
    assert result["face"]["landmarks_source"] == "given-lm68"
    assert result["photo"]["size"] == [1280, 886]
    assert set(result["coefficients"]) == {"id", "exp", "tex", "angle", "gamma", "trans"}
    assert {"diffusion", "condition", "texture", "files", "total"} <= set(result["timings"])
    assert "t1.jpg -> " in capsys.readouterr().out


@pytest.mark.parametrize("face_index", range(6))
def test_every_face_of_t1_gives_a_textured_head(tmp_path, pipeline, face_index):
    face = t1_faces()[face_index]
    options = GenerateOptions(landmarks=face["lm5"], face_index=face_index, **FAST)
    folder = pipeline.generate_to_folder(sample_photo("t1.jpg"), tmp_path / "head", options)
    assert {path.name for path in folder.iterdir()} == OUTPUTS

    scene = trimesh.load(folder / "head.glb", process=False)
    (mesh,) = scene.geometry.values()
    n_vertices = pipeline.head_model.n_vertices
    assert len(mesh.vertices) == n_vertices
    assert mesh.visual.uv.shape == (n_vertices, 2)
    texture = mesh.visual.material.baseColorTexture
    assert texture.size == (256, 256)
    albedo = np.asarray(Image.open(folder / "albedo.png"))
    np.testing.assert_array_equal(np.asarray(texture.convert("RGB")), albedo)
    assert albedo.std() > 1  # a texture, not a flat colour
    extent = mesh.vertices.max(0) - mesh.vertices.min(0)
    assert 0.1 < extent[1] < 0.4  # metres: a head, not BFM units

    check_preview_changes_only_the_face(folder, face)


def check_preview_changes_only_the_face(folder, face):
    photo = np.asarray(Image.open(sample_photo("t1.jpg")).convert("RGB"))
    height, width = photo.shape[:2]
    scale = preview_scale(width, height)
    expected = torch.from_numpy(photo.copy()).permute(2, 0, 1)[None].float() / 255
    if scale < 1:
        expected = F.interpolate(expected, scale_factor=scale, mode="area", recompute_scale_factor=False)
    expected = (expected[0].permute(1, 2, 0) * 255).round().numpy()
    preview = np.asarray(Image.open(folder / "preview.png")).astype(np.float64)
    assert preview.shape == expected.shape
    changed = np.abs(preview - expected).max(-1) > 1
    assert changed.sum() > 500  # the head is drawn
    rows, cols = np.nonzero(changed)
    x0, y0, x1, y1 = np.asarray(face["bbox"]) * scale
    cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, 2.0 * max(x1 - x0, y1 - y0)
    assert cols.min() >= cx - half and cols.max() <= cx + half
    assert rows.min() >= cy - half and rows.max() <= cy + half


def test_obj_has_uvs_normals_and_its_texture(tmp_path, pipeline):
    options = GenerateOptions(landmarks=t1_faces()[0]["lm5"], **FAST)
    folder = pipeline.generate_to_folder(sample_photo("t1.jpg"), tmp_path / "head", options)
    lines = (folder / "head.obj").read_text().splitlines()
    count = {kind: sum(line.startswith(kind + " ") for line in lines) for kind in ("v", "vt", "vn", "f")}
    n_vertices = pipeline.head_model.n_vertices
    assert count == {"v": n_vertices, "vt": n_vertices, "vn": n_vertices, "f": int(pipeline.triangles.shape[0])}
    assert "mtllib head.mtl" in lines
    mtl = (folder / "head.mtl").read_text()
    assert re.search(r"^map_Kd albedo\.png$", mtl, re.M)
    loaded = trimesh.load(folder / "head.obj", process=False)
    assert loaded.visual.material.image.size == (256, 256)


def test_texture_sizes_and_seeds(pipeline):
    face = t1_faces()[1]["lm5"]
    photo = sample_photo("t1.jpg")
    first = pipeline.generate(photo, GenerateOptions(landmarks=face, seed=7, steps=4, texture_size=512))
    again = pipeline.generate(photo, GenerateOptions(landmarks=face, seed=7, steps=4, texture_size=512))
    other = pipeline.generate(photo, GenerateOptions(landmarks=face, seed=8, steps=4, texture_size=512))
    assert first.albedo.shape == (512, 512, 3)
    size = pipeline.model_size
    assert first.albedo_model.shape == (size, size, 3)
    np.testing.assert_array_equal(first.albedo_model, again.albedo_model)
    np.testing.assert_array_equal(first.albedo, again.albedo)
    assert np.abs(first.albedo_model.astype(int) - other.albedo_model).mean() > 1


def test_neutral_expression_and_delight_change_what_they_should(pipeline):
    face = t1_faces()[2]["lm5"]
    photo = sample_photo("t1.jpg")
    base = pipeline.generate(photo, GenerateOptions(landmarks=face, **FAST))
    neutral = pipeline.generate(photo, GenerateOptions(landmarks=face, expression="neutral", **FAST))
    delit = pipeline.generate(photo, GenerateOptions(landmarks=face, delight=True, **FAST))
    assert not np.allclose(base.mesh.vertices, neutral.mesh.vertices)
    np.testing.assert_array_equal(base.mesh.faces, neutral.mesh.faces)
    np.testing.assert_array_equal(base.albedo_model, delit.albedo_model)
    assert delit.albedo.mean() > base.albedo.mean()  # shading divided out brightens


def test_cancel_leaves_no_output(tmp_path, pipeline):
    def cancel_in_diffusion(stage, fraction):
        if stage == "diffusion" and fraction > 0.2:
            raise Cancelled("cancelled by the test")

    with pytest.raises(Cancelled):
        pipeline.generate_to_folder(sample_photo("t1.jpg"), tmp_path / "head",
                                    GenerateOptions(landmarks=t1_faces()[0]["lm5"], **FAST), cancel_in_diffusion)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("broken", ["encode_png", "write_obj"])
def test_a_file_that_fails_leaves_no_output(tmp_path, pipeline, monkeypatch, broken):
    """The albedo's PNG (the others wait for it) or another file failing: the error reaches the
    caller, after every writer has stopped, and no folder is left."""
    def fail(*args, **kwargs):
        raise OSError("no space left (the test)")

    monkeypatch.setattr(files_module, broken, fail)
    with pytest.raises(OSError, match="the test"):
        pipeline.generate_to_folder(sample_photo("t1.jpg"), tmp_path / "head",
                                    GenerateOptions(landmarks=t1_faces()[0]["lm5"], **FAST))
    assert list(tmp_path.iterdir()) == []


def test_progress_covers_every_stage_in_order(pipeline, tmp_path):
    seen = []
    pipeline.generate_to_folder(sample_photo("t1.jpg"), tmp_path / "head",
                                GenerateOptions(landmarks=t1_faces()[0]["lm5"], **FAST),
                                lambda stage, fraction: seen.append((stage, fraction)))
    fractions = [fraction for _, fraction in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    stages = list(dict.fromkeys(stage for stage, _ in seen))
    assert stages == ["photo", "face", "condition", "diffusion", "decode", "texture", "mesh", "preview", "files"]


def odd_but_valid_photos(folder):
    """t1.jpg as 16-bit PNG, CMYK JPEG, greyscale, with alpha, and stored rotated with an EXIF tag."""
    pixels = np.asarray(Image.open(sample_photo("t1.jpg")).convert("RGB"))
    rgb = Image.fromarray(pixels)
    sixteen = Image.fromarray(pixels[..., 0].astype(np.uint16) * 257)  # mode I;16
    alpha = np.dstack([pixels, np.full(pixels.shape[:2], 255, np.uint8)])
    alpha[:40, :40, 3] = 0
    files = {
        "sixteen_bit.png": encode(sixteen, "PNG"),
        "cmyk.jpg": encode(rgb.convert("CMYK"), "JPEG", quality=95),
        "grey.jpg": encode(rgb.convert("L"), "JPEG", quality=95),
        "alpha.png": encode(Image.fromarray(alpha, "RGBA"), "PNG"),
        # stored turned 90 degrees clockwise; orientation 8 tells viewers to turn it back
        "rotated.jpg": exif_jpeg(np.rot90(pixels, k=-1).copy(), 8),
    }
    paths = []
    for name, data in files.items():
        (folder / name).write_bytes(data)
        paths.append(folder / name)
    return paths


def test_odd_image_formats_are_converted_and_processed(tmp_path, model_paths):
    photos = odd_but_valid_photos(tmp_path)
    face = t1_faces()[4]
    landmarks = landmarks_file(tmp_path, [photo.name for photo in photos], face)
    assert run_cli(tmp_path, model_paths, photos, "--landmarks", str(landmarks)) == 0
    for photo in photos:
        result = json.loads((tmp_path / "out" / photo.stem / "result.json").read_text())
        assert result["photo"]["size"] == [1280, 886], photo.name  # the rotated one is upright again


def test_bad_photos_fail_clearly_and_the_rest_of_the_run_goes_on(tmp_path, model_paths, capsys):
    good = tmp_path / "good.jpg"
    good.write_bytes(sample_photo("t1.jpg").read_bytes())
    bad = {
        "notes.jpg": b"these are my notes, not a photo",
        "empty.jpg": b"",
        "truncated.jpg": good.read_bytes()[:5000],
        "bomb.png": png_claiming(30000, 30000),
    }
    for name, data in bad.items():
        (tmp_path / name).write_bytes(data)
    tiny_face = {"lm5": [[600, 400], [604, 400], [602, 403], [600, 406], [604, 406]]}
    photos = [tmp_path / name for name in bad] + [good, tmp_path / "small_face.jpg", tmp_path / "no_face.jpg"]
    (tmp_path / "small_face.jpg").write_bytes(good.read_bytes())
    (tmp_path / "no_face.jpg").write_bytes(good.read_bytes())
    landmarks = tmp_path / "landmarks.json"
    entries = {photo.name: {"faces": [{"lm5": t1_faces()[0]["lm5"]}]} for photo in photos}
    entries["small_face.jpg"] = {"faces": [tiny_face]}
    entries["no_face.jpg"] = {"faces": []}
    landmarks.write_text(json.dumps(entries))

    assert run_cli(tmp_path, model_paths, photos, "--landmarks", str(landmarks)) == 1
    out = tmp_path / "out"
    assert sorted(path.name for path in out.iterdir()) == ["failures.json", "good"]
    assert {path.name for path in (out / "good").iterdir()} == OUTPUTS
    assert left_over_partials(tmp_path) == []
    printed = capsys.readouterr().out
    assert "notes.jpg" in printed and "not an image" in printed
    assert "empty.jpg" in printed and "empty" in printed
    assert "truncated.jpg" in printed and "bomb.png" in printed
    assert "small_face.jpg" in printed and "too small" in printed
    assert "no_face.jpg" in printed and "no face" in printed
    assert "6 of 7 photo(s) failed" in printed


def test_missing_model_files_are_named_before_any_work(tmp_path, capsys):
    sample_photo("t1.jpg")  # the README's main job: the sample photo, before any model file is there
    code = main(["generate", "sample:t1.jpg", "-o", str(tmp_path / "out"), "--weights", str(tmp_path / "weights"),
                 "--bfm", str(tmp_path / "BFM")])
    printed = capsys.readouterr().out
    assert code == 2
    assert "ldm.ckpt" in printed and "BFM_model_front_5w.mat" in printed and "uvidm weights download" in printed
    assert not (tmp_path / "out").exists()


def test_options_are_checked_before_work():
    with pytest.raises(InputError, match="texture size"):
        GenerateOptions(texture_size=4096)
    with pytest.raises(InputError, match="five"):
        GenerateOptions(landmarks=[[1, 2]])


def test_dpm_solver_sampler_runs_in_fewer_steps(pipeline):
    face = t1_faces()[0]["lm5"]
    photo = sample_photo("t1.jpg")
    seen = []
    head = pipeline.generate(photo, GenerateOptions(landmarks=face, sampler="dpmpp", steps=20, texture_size=256),
                             lambda stage, fraction: seen.append(stage))
    assert seen.count("diffusion") == 21  # the stage start, then one report per step
    again = pipeline.generate(photo, GenerateOptions(landmarks=face, sampler="dpmpp", steps=20, texture_size=256))
    np.testing.assert_array_equal(head.albedo_model, again.albedo_model)
    ddim = pipeline.generate(photo, GenerateOptions(landmarks=face, steps=20, texture_size=256))
    assert not np.array_equal(head.albedo_model, ddim.albedo_model)


def test_a_damaged_weight_file_is_reported_not_raised(tmp_path, model_paths, capsys):
    import shutil

    weights = tmp_path / "weights"
    shutil.copytree(model_paths.weights, weights)
    data = (weights / "ldm.ckpt").read_bytes()
    (weights / "ldm.ckpt").write_bytes(data[: len(data) // 2])  # an interrupted download
    code = main(["generate", str(sample_photo("t1.jpg")), "-o", str(tmp_path / "out"), "--weights", str(weights),
                 "--bfm", str(model_paths.bfm), "--device", "cpu"])
    printed = capsys.readouterr().out
    assert code == 2
    assert "ldm.ckpt" in printed and "download it again" in printed
    assert not (tmp_path / "out").exists()


def test_the_condition_stage_runs_the_fuser_it_is_given(pipeline, monkeypatch):
    """The fast path hands the condition stage a CUDA-graphed fuser; whatever it hands over makes the tokens."""
    face = t1_faces()[0]["lm5"]
    photo = sample_photo("t1.jpg")
    options = GenerateOptions(landmarks=face, seed=7, steps=2, texture_size=256)
    expected = pipeline.generate(photo, options)
    calls = []

    def fuse(partial):
        calls.append(partial.shape)
        return pipeline.networks.condition_fuser(partial)

    monkeypatch.setattr(pipeline.condition_stage, "fuse_tokens", fuse)
    actual = pipeline.generate(photo, options)
    size = pipeline.model_size
    assert calls == [(1, 3, size, size)]
    np.testing.assert_array_equal(actual.albedo_model, expected.albedo_model)


def test_nothing_compiles_in_the_background_off_graph_mode(model_paths):
    """`serve`'s background compilation upgrades graph mode only: on the CPU the float32 path stays."""
    pipeline = pipeline_module.Pipeline.load(model_paths, device="cpu", fast="auto", background_compile=True)
    assert pipeline.describe()["fast"] == "off" and not pipeline.describe()["compiling"]
    assert pipeline.compile_in_background() is None and not pipeline.wait_compiled(timeout=0)


def weights_with_face_models(tmp_path, model_paths, landmarks=True):
    """The fixture model folder's weights plus stand-in buffalo_l files that find t1.jpg's faces."""
    from uvidm_backend.devtools.face_models import known_faces, write_face_models
    from uvidm_backend.pipeline.images import load_photo
    from uvidm_backend.registry import INSIGHTFACE_MODEL

    pytest.importorskip("onnx")
    weights = tmp_path / "weights"
    weights.mkdir()
    for path in model_paths.weights.iterdir():
        (weights / path.name).symlink_to(path)
    photo = load_photo(sample_photo("t1.jpg"))
    write_face_models(weights / "insightface" / "models" / INSIGHTFACE_MODEL, photo.pixels,
                      known_faces(fixture_landmarks(), "t1.jpg"), landmarks=landmarks)
    return weights


@pytest.mark.parametrize("landmarks", [True, False], ids=["lm68", "lm5"])
def test_cli_detects_the_face_and_says_which_landmarks(tmp_path, model_paths, landmarks):
    """Without --landmarks: insightface on the stand-in buffalo_l, the largest face, its official five points."""
    from uvidm_backend.devtools.face_models import known_faces

    weights = weights_with_face_models(tmp_path, model_paths, landmarks)
    args = ["generate", "sample:t1.jpg", "-o", str(tmp_path / "out"), "--weights", str(weights), "--bfm",
            str(model_paths.bfm), "--device", "cpu", "--steps", "2", "--texture-size", "256"]
    assert main(args) == 0
    result = json.loads((tmp_path / "out" / "t1" / "result.json").read_text())
    faces = known_faces(fixture_landmarks(), "t1.jpg")
    largest = max(range(len(faces)), key=lambda i: np.prod(np.diff(np.reshape(faces[i].box, (2, 2)), axis=0)))
    face = faces[largest]
    assert result["face"]["index"] == largest and result["face"]["source"] == "detected"
    lm68 = face.lm68
    official = np.stack([(lm68[36] + lm68[39]) / 2, (lm68[42] + lm68[45]) / 2, lm68[30], lm68[48], lm68[54]])
    expected = official if landmarks else face.keypoints
    assert result["face"]["landmarks_source"] == ("lm68" if landmarks else "lm5")
    np.testing.assert_allclose(result["face"]["landmarks"], expected, atol=0.01)
