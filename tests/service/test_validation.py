"""Every option is checked before a job exists: 422 naming the field, nothing stored, the queue place given back."""

from __future__ import annotations

import json

from service.live import wait_for


def _landmark_cases(points: list[list[float]]) -> list[tuple[str, str]]:
    """(landmarks text, what it is) the service must refuse, built around a real face's five points."""
    text = json.dumps(points)
    (lx, ly), (rx, ry) = points[0], points[1]
    line = [[lx + 10 * i, ly] for i in range(5)]  # five points on one line
    return [
        (text.replace(str(points[2][0]), "NaN", 1), "NaN"),
        (text.replace(str(points[2][0]), "Infinity", 1), "Infinity"),
        (text.replace(str(points[2][0]), "-Infinity", 1), "-Infinity"),
        (text.replace(str(points[2][0]), "1e400", 1), "1e400"),
        (text.replace(str(points[2][0]), "1" + "0" * 400, 1), "an integer beyond a float"),
        ("[" * 100_000 + "]" * 100_000, "nested 100k deep"),
        ("[" * 50 + "]" * 50, "nested 50 deep"),
        (json.dumps([[[x, y]] for x, y in points]), "one level too deep"),
        (json.dumps([[True, False]] * 5), "booleans"),
        (json.dumps([[x, str(y)] for x, y in points]), "strings"),
        (json.dumps([[x, y, 0] for x, y in points]), "three numbers a point"),
        (json.dumps(points[:4]), "four points"),
        (json.dumps(points * 2), "ten points"),
        (json.dumps(line), "collinear"),
        (json.dumps([points[1], points[0], *points[2:]]), "mirrored (eyes swapped)"),
        (json.dumps([[lx, ly]] * 5), "all on one spot"),
        (json.dumps([[x + 5000, y] for x, y in points]), "outside the photo"),
        (json.dumps([[-x, y] for x, y in points]), "negative x"),
        (json.dumps({"lm5": points}), "an object"),
        ("[[1, 2], [3, 4]", "unclosed JSON"),
        (" " * 20_000 + text, "longer than the limit"),
        (json.dumps([[lx, ly], [rx, ry]] * 34), "68 points that are no face"),
    ]


BAD_FIELDS = [  # (form fields, the field the 422 names)
    ({"steps": "0"}, "steps"),
    ({"steps": "abc"}, "steps"),
    ({"steps": "2.5"}, "steps"),
    ({"steps": "3"}, "steps"),  # the official DDIM spacing would step past t = 999
    ({"steps": "1e400"}, "steps"),
    ({"eta": "2"}, "eta"),
    ({"eta": "nan"}, "eta"),
    ({"eta": "inf"}, "eta"),
    ({"eta": "-Infinity"}, "eta"),
    ({"eta": "1e400"}, "eta"),
    ({"texture_size": "100"}, "texture_size"),
    ({"texture_size": "NaN"}, "texture_size"),
    ({"expression": "smile"}, "expression"),
    ({"texture": "painted"}, "texture"),
    ({"head": "statue"}, "head"),
    ({"sampler": "euler"}, "sampler"),
    ({"face_index": "-1"}, "face_index"),
    ({"face_index": "99"}, "face_index"),  # the landmarks give one face
    ({"face_index": "1"}, "face_index"),
    ({"delight": "maybe"}, "delight"),
    ({"seed": str(2**70)}, "seed"),  # the audit's overflow inside the job
    ({"seed": str(2**64)}, "seed"),
    ({"seed": "-1"}, "seed"),
    ({"seed": "1" * 5000}, "seed"),
    ({"seed": "nan"}, "seed"),
]


def test_bad_options_get_422_naming_the_field_and_nothing_is_created(serve, gate, small_photo):
    holder, _ = gate  # nothing runs: every accepted job would stay queued
    server = serve(holder, queue_capacity=2)
    client = server.client()
    cases = [(fields, field) for fields, field in BAD_FIELDS]
    cases += [({"landmarks": text}, "landmarks") for text, _ in _landmark_cases(small_photo.landmarks)]
    for fields, field in cases:
        files, data = small_photo.form(**fields)
        response = client.post("/v1/jobs", files=files, data=data)
        what = f"{fields}"[:120]
        assert response.status_code == 422, f"{what}: {response.status_code} {response.text[:300]}"
        body = response.json()
        assert body["field"] == field, f"{what}: {body}"
        assert isinstance(body["detail"], str) and field in body["detail"] and len(body["detail"]) < 600, what
        assert "--" not in body["detail"], f"{what}: a command-line flag in an HTTP message: {body['detail']}"
    assert not any(server.settings.jobs_dir.iterdir()), "refused submissions must leave nothing behind"
    assert client.get("/v1/health").json()["queue_length"] == 0

    # Every refused submission gave its reserved queue place back: both places are free.
    for _ in range(2):
        assert client.post("/v1/jobs", files=small_photo.form()[0], data=small_photo.form()[1]).status_code == 202
    assert client.post("/v1/jobs", files=small_photo.form()[0], data=small_photo.form()[1]).status_code == 429


def test_good_options_at_the_limits_are_accepted(serve, small_photo):
    from pipeline.photos import fixture_landmarks

    client = serve().client()
    # The face's real 68 points (iBUG order), moved into the crop as small_photo's five are.
    left, top = 0, 200
    lm68 = [[x - left, y - top] for x, y in fixture_landmarks()["t1.jpg"]["faces"][0]["lm68"]]
    points = small_photo.landmarks
    accepted = []
    for fields in ({"seed": str(2**64 - 1), "face_index": "0"}, {"seed": "0", "eta": "0", "sampler": "dpmpp",
                                                                  "steps": "3"},
                   {"landmarks": json.dumps(lm68)}, {"landmarks": json.dumps([[int(x), int(y)] for x, y in points])}):
        response = client.post("/v1/jobs", files=small_photo.form(**fields)[0], data=small_photo.form(**fields)[1])
        assert response.status_code == 202, f"{fields}: {response.text}"
        accepted.append(response.json())
    assert accepted[0]["options"]["seed"] == 2**64 - 1 and accepted[0]["options"]["face_index"] == 0
    assert accepted[2]["options"]["landmarks"] == lm68  # 68 points are kept as given
    for job in accepted:
        done = wait_for(client, job["id"])
        assert done["state"] == "done", done
    result = client.get(f"/v1/jobs/{accepted[0]['id']}/files/result.json").json()
    assert result["options"]["seed"] == 2**64 - 1


def test_option_errors_name_the_field_without_the_http_layer():
    import numpy as np
    import pytest

    from uvidm_backend.service.validation import OptionError, generate_options

    for given, field in [({"texture_size": 100}, "texture_size"), ({"steps": 3}, "steps"), ({"eta": 2.0}, "eta"),
                         ({"seed": 2**70}, "seed"), ({"expression": "smile"}, "expression"),
                         ({"face_index": -1}, "face_index")]:
        with pytest.raises(OptionError) as refused:
            generate_options(given, None)
        assert refused.value.field == field, given
    assert generate_options({"steps": 3, "sampler": "dpmpp"}, None).steps == 3
    with pytest.raises(OptionError, match="one face"):
        generate_options({"face_index": 2}, np.zeros((5, 2)))


def test_a_face_index_beyond_the_photos_faces_is_refused_before_a_job_exists(tmp_path, photo):
    """With the detector loaded, face_index is checked against the faces it finds (insightface's own code on
    the stand-in buffalo_l files that find t1.jpg's six faces)."""
    import httpx
    import pytest
    from pipeline.photos import fixture_landmarks, sample_photo
    from service.live import serve_process

    pytest.importorskip("onnx")
    from uvidm_backend.devtools.face_models import known_faces, write_face_models
    from uvidm_backend.devtools.model_folder import write_model_folder
    from uvidm_backend.pipeline.images import load_photo

    paths = write_model_folder(tmp_path / "models")
    write_face_models(paths.detector_dir, load_photo(sample_photo("t1.jpg")).pixels,
                      known_faces(fixture_landmarks(), "t1.jpg"))
    with serve_process(paths, tmp_path / "jobs") as (_, url), httpx.Client(base_url=url, timeout=60) as client:
        files, data = photo.form(landmarks=None, face_index=6)
        refused = client.post("/v1/jobs", files=files, data=data)
        assert refused.status_code == 422 and refused.json()["field"] == "face_index", refused.text
        assert "finds 6 face(s)" in refused.json()["detail"] and "0 to 5" in refused.json()["detail"]
        assert client.get("/v1/health").json()["queue_length"] == 0
        assert not any((tmp_path / "jobs").glob("*/job.json"))
        files, data = photo.form(landmarks=None, face_index=5)
        assert client.post("/v1/jobs", files=files, data=data).status_code == 202
