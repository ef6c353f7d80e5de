"""POST /v1/faces on a live server: faces numbered as face_index numbers them, from a landmarks file or the
detector, with an overview image; the detector's absence in words."""

from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image
from pipeline.photos import fixture_landmarks, fixtures_dir


def _landmarks_file() -> tuple[str, bytes, str]:
    return ("landmarks.json", (fixtures_dir() / "landmarks.json").read_bytes(), "application/json")


def test_faces_from_a_landmarks_file(serve, photo):
    client = serve().client()
    response = client.post("/v1/faces", files={"photo": (photo.name, photo.data, "image/jpeg"),
                                               "landmarks_file": _landmarks_file()})
    assert response.status_code == 200, response.text
    answer = response.json()
    expected = fixture_landmarks()["t1.jpg"]["faces"]
    assert (answer["width"], answer["height"], answer["source"]) == (1280, 886, "landmarks")
    assert [face["index"] for face in answer["faces"]] == list(range(len(expected)))
    centres = [(face["box"][0] + face["box"][2]) / 2 for face in answer["faces"]]
    assert centres == sorted(centres)  # left to right, as face_index counts
    first = [value for point in answer["faces"][0]["points"] for value in point]
    assert first == pytest.approx([value for point in photo.landmarks for value in point], abs=3.0)
    assert sum(face["largest"] for face in answer["faces"]) == 1
    overview = Image.open(io.BytesIO(base64.b64decode(answer["overview"])))
    assert overview.format == "PNG" and max(overview.size) == 512
    # the first face's box is drawn in its colour (yellow) on the scaled photo
    x0, y0 = (round(v * 512 / 1280) for v in answer["faces"][0]["box"][:2])
    y1 = round(answer["faces"][0]["box"][3] * 512 / 1280)
    column = [overview.convert("RGB").getpixel((x0 + 1, y)) for y in range(y0 + 2, y1 - 2)]
    assert sum(r > 200 and g > 150 and b < 60 for r, g, b in column) > 0.8 * len(column)


def test_faces_errors_in_words(serve, photo):
    client = serve().client()
    response = client.post("/v1/faces", files={"photo": (photo.name, photo.data, "image/jpeg")})
    # no buffalo_l in the test model folder: the detector's own words, with what to do
    assert response.status_code == 503 and "buffalo_l" in response.json()["detail"]
    bad = client.post("/v1/faces", files={"photo": (photo.name, photo.data, "image/jpeg"),
                                          "landmarks_file": ("l.json", json.dumps([[1, 2]]).encode(), "text/plain")})
    assert bad.status_code == 422 and "five" in bad.json()["detail"]
    not_image = client.post("/v1/faces", files={"photo": ("a.jpg", b"hello", "image/jpeg")})
    assert not_image.status_code == 415  # as POST /v1/jobs answers it


def test_faces_needs_the_token(serve, photo):
    server = serve(token="s3cret-token")
    files = {"photo": (photo.name, photo.data, "image/jpeg"), "landmarks_file": _landmarks_file()}
    assert server.client().post("/v1/faces", files=files).status_code == 401
    authorized = server.client(headers={"Authorization": "Bearer s3cret-token"})
    assert authorized.post("/v1/faces", files=files).status_code == 200
