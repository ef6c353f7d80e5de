"""Where the full head's model lives and which files a full head is written as.

The ICT FaceKit files go to `<weights>/ict_facekit/` (beside the networks, so `--weights` and
$UVIDM_WEIGHTS move them too), with their converted cache and the ICT<->BFM correspondence.
A head is written as `head_full.glb` (materials, textures, morph targets), `head_full.obj` + `.mtl`
(posed, no shape keys) and one PNG per textured material (`head_full_skin.png`, ...).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from uvidm_backend.fullhead.ict_files import INDICES_FILE, NEUTRAL_FILE
from uvidm_backend.fullhead.model import FullHead
from uvidm_backend.pipeline.export import morphed_glb_bytes, texture_file_name, write_morphed_obj
from uvidm_backend.pipeline.output_folder import write_bytes
from uvidm_backend.pipeline.png import encode_png
from uvidm_backend.registry import ModelPaths

FOLDER_NAME = "ict_facekit"
GLB_NAME, OBJ_NAME, MTL_NAME = "head_full.glb", "head_full.obj", "head_full.mtl"


def full_head_folder(paths: ModelPaths) -> Path:
    return paths.weights / FOLDER_NAME


def has_full_head_files(folder: Path) -> bool:
    return (folder / NEUTRAL_FILE).is_file() and (folder / INDICES_FILE).is_file()


def full_head_file_names(head: FullHead) -> list[str]:
    textures = [texture_file_name(material) for material in head.mesh.materials if material.texture is not None]
    return [GLB_NAME, OBJ_NAME, MTL_NAME, *textures]


def write_full_head_files(head: FullHead, folder) -> None:
    """The files of `full_head_file_names` into `folder`, written side by side; each texture is PNG-encoded once
    (not at all where the head has its PNG already), for its file and the GLB. Returns, or raises the first
    error, once no writer is left running."""
    textured = [(index, material) for index, material in enumerate(head.mesh.materials) if material.texture is not None]
    with ThreadPoolExecutor(max_workers=4) as writers:  # leaving the block waits for every writer
        encoding = {index: writers.submit(encode_png, material.texture) for index, material in textured
                    if index not in head.pngs}
        written = [writers.submit(write_morphed_obj, head.mesh, folder / OBJ_NAME, MTL_NAME, write_textures=False)]
        pngs = {**head.pngs, **{index: future.result() for index, future in encoding.items()}}
        written += [writers.submit(write_bytes, pngs[index], folder / texture_file_name(material))
                    for index, material in textured]
        write_bytes(morphed_glb_bytes(head.mesh, pngs), folder / GLB_NAME)
        for future in written:
            future.result()
