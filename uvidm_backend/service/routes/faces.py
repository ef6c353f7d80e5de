"""POST /v1/faces: the faces of a photo, numbered as `face_index` numbers them, for a client to pick one.

The answer carries each face's box and five points (photo pixels after the EXIF rotation, y down)
and an overview PNG: the photo, scaled down, with each box drawn and labelled `index + 1`, so a
client that cannot draw (the Blender add-on) shows it as it is. With a landmarks file the faces
come from the file (every layout `uvidm generate --landmarks` reads) instead of the detector.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, HTTPException, UploadFile
from fastapi.responses import JSONResponse
from PIL import Image, ImageDraw, ImageFont
from pydantic import BaseModel, Field

from uvidm_backend.errors import UVIDMError
from uvidm_backend.pipeline.errors import InputError
from uvidm_backend.pipeline.faces import DetectedFace, faces_from_landmarks_file
from uvidm_backend.pipeline.images import Photo
from uvidm_backend.service.context import Service, service
from uvidm_backend.service.routes.auth import GUARDED
from uvidm_backend.service.validation import PhotoRejected, check_photo

OVERVIEW_SIDE = 512  # pixels of the overview's longer side
MAX_LANDMARKS_BYTES = 1024 * 1024
_COLOURS = ((255, 196, 0), (0, 200, 255), (255, 64, 160), (120, 255, 80), (255, 128, 0), (180, 120, 255))


class FaceModel(BaseModel):
    index: int = Field(description="the face_index that picks this face (left to right from 0)")
    box: list[float] = Field(description="x0, y0, x1, y1 in photo pixels (after the EXIF rotation)")
    points: list[list[float]] = Field(description="five [x, y]: eyes, nose tip, mouth corners; send them as "
                                                  "`landmarks` to use exactly this face")
    score: float
    largest: bool = Field(description="the face a job takes when face_index is not given")


class FacesModel(BaseModel):
    width: int
    height: int
    source: str = Field(description="'detector' or 'landmarks' (the file sent)")
    faces: list[FaceModel]
    overview: str = Field(description="base64 PNG: the photo with each face's box labelled index + 1")


def overview_png(photo: Photo, faces: list[DetectedFace], side: int = OVERVIEW_SIDE) -> bytes:
    """The photo scaled to `side` pixels (longer side) with numbered boxes, as PNG bytes."""
    image = Image.fromarray(photo.pixels)
    scale = min(1.0, side / max(image.size))
    if scale < 1.0:
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                             Image.Resampling.LANCZOS)
    draw = ImageDraw.Draw(image)
    line = max(2, round(max(image.size) / 200))
    font = ImageFont.load_default(size=max(12, round(max(image.size) / 22)))
    for index, face in enumerate(faces):
        colour = _COLOURS[index % len(_COLOURS)]
        x0, y0, x1, y1 = (value * scale for value in face.box)
        draw.rectangle((x0, y0, x1, y1), outline=colour, width=line)
        label = str(index + 1)
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        tag = (x0, max(0.0, y0 - (bottom - top) - 2 * line), x0 + (right - left) + 2 * line, max(y0, bottom - top))
        draw.rectangle(tag, fill=colour)
        draw.text((tag[0] + line - left, tag[1] + line / 2 - top), label, fill=(0, 0, 0), font=font)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def _faces_from_file(data: bytes, name: str, photo: Photo) -> list[DetectedFace]:
    with tempfile.TemporaryDirectory(prefix="uvidm-landmarks-") as folder:
        path = Path(folder) / (Path(name or "landmarks.json").name or "landmarks.json")
        path.write_bytes(data)
        return faces_from_landmarks_file(path, photo)


router = APIRouter(tags=["faces"], dependencies=GUARDED)


@router.post("/v1/faces", response_model=FacesModel, summary="The faces of a photo, to choose one",
             description="Detects the faces (or reads them from `landmarks_file`) and numbers them as "
                         "`face_index` does. Nothing is stored.")
def faces(context: Annotated[Service, Depends(service)],
          photo: Annotated[UploadFile, File(description="the photo")],
          landmarks_file: Annotated[UploadFile | None, File(description="optional: a landmarks file (JSON or lines "
                                                                        "of 'x y')")] = None) -> JSONResponse:
    settings, models = context.settings, context.models
    data = photo.file.read(settings.max_upload_bytes + 1)
    if len(data) > settings.max_upload_bytes:
        raise HTTPException(413, "the photo is larger than the limit of "
                                 f"{settings.max_upload_bytes / 1024 / 1024:.0f} MB: send a smaller one")
    try:
        checked = check_photo(data, settings.max_pixels, context.decode_budget)
    except PhotoRejected as error:
        raise HTTPException(error.status, str(error), headers=error.headers) from error
    # the upload's name picks the photo's entry in a landmarks file that covers several photos
    image = dataclasses.replace(checked.photo, name=Path(photo.filename or "").name or None)
    if landmarks_file is not None:
        text = landmarks_file.file.read(MAX_LANDMARKS_BYTES + 1)
        if len(text) > MAX_LANDMARKS_BYTES:
            raise HTTPException(413, "the landmarks file is larger than 1 MB: is it the right file?")
        try:
            found, source = _faces_from_file(text, landmarks_file.filename or "", image), "landmarks"
        except InputError as error:
            raise HTTPException(422, str(error)) from error
    else:
        detector = getattr(models.runner, "detector", None)
        if detector is None:
            state = {"loading": "still loading", "missing": "missing (download them first)"}.get(
                models.state, f"not loaded ({models.error})")
            raise HTTPException(503, f"the models are {state}: faces can be found once they are ready")
        try:
            found, source = detector.detect(image), "detector"
        except UVIDMError as error:
            raise HTTPException(503, str(error)) from error
    largest = max(range(len(found)), key=lambda i: found[i].width * found[i].height) if found else None
    answer: dict[str, Any] = {
        "width": int(image.pixels.shape[1]), "height": int(image.pixels.shape[0]), "source": source,
        "faces": [{"index": index, "box": [round(v, 2) for v in face.box],
                   "points": [[round(float(x), 2), round(float(y), 2)] for x, y in face.points],
                   "score": round(face.score, 4), "largest": index == largest}
                  for index, face in enumerate(found)],
        "overview": base64.b64encode(overview_png(image, found)).decode("ascii")}
    return JSONResponse(answer)
