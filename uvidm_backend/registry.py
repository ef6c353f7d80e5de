"""Every model file the pipeline needs: what it is, where it comes from, where it goes.

The UV-IDM release (hub repository `luh0502/UV-IDM`, or its Google Drive folder) keeps the folder
layout of the official code (`checkpoints/`, `BFM/`, `masktopo/`); we keep the networks in
`weights/` and the face model in `BFM/`. `official_path` is where the release keeps each file; the
download finds a file by name anywhere in the repository when it is not there
(`model_files.sources`). insightface's `buffalo_l` detector goes to
`weights/insightface/models/buffalo_l`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

HUB_REPOSITORY = "luh0502/UV-IDM"
REPO_ROOT = Path(__file__).resolve().parents[1]
WEIGHTS_ENV = "UVIDM_WEIGHTS"
BFM_ENV = "UVIDM_BFM"
INSIGHTFACE_MODEL = "buffalo_l"
FRONT_MASK_FILE = "front_mask.png"


@dataclass(frozen=True)
class ModelFile:
    name: str  # file name in our folders
    folder: str  # "weights" or "BFM"
    official_path: str | None  # path in the official release; None: not part of it (found by name if present)
    purpose: str
    required: bool = True


MODEL_FILES: tuple[ModelFile, ...] = (
    # The configuration first: verifying ldm.ckpt needs it.
    ModelFile("ldm_config.json", "weights", None,
              "model configuration (the yaml's model.params as JSON); absent: the released configuration",
              required=False),
    ModelFile("ldm.ckpt", "weights", "checkpoints/ldm.ckpt",
              "UV-IDM latent diffusion: UNet, autoencoder, condition stage"),
    ModelFile("epoch_20.pth", "weights", "checkpoints/epoch_20.pth",
              "Deep3DFaceRecon reconstruction network (BFM coefficients of the output mesh)"),
    # ldm.ckpt holds the face-parsing weights the condition stage uses (its cond_stage_model.seg_model
    # overrides this file in the official code too); the stand-alone file is kept for completeness.
    ModelFile("79999_iter.pth", "weights", "BFM/parsing_model/79999_iter.pth",
              "BiSeNet face parsing, stand-alone copy (the pipeline uses the one inside ldm.ckpt)", required=False),
    ModelFile("BFM_model_front.mat", "BFM", "BFM/BFM_model_front.mat",
              "Basel Face Model, front part (Deep3DFaceRecon format): shading of the baseline texture"),
    ModelFile("BFM_model_front_5w.mat", "BFM", "BFM/BFM_model_front_5w.mat",
              "Basel Face Model, whole head: the output mesh"),
    ModelFile("BFM_front_idx.mat", "BFM", "checkpoints/BFM_front_idx.mat",
              "indices of the front part within the whole head"),
    ModelFile("BFM_UV.npy", "BFM", "checkpoints/BFM_UV.npy", "UV coordinates of the head"),
    ModelFile("example1.mat", "BFM", "BFM/example1.mat", "triangles of the whole head (full_triangles)"),
    ModelFile("similarity_Lm3D_all.mat", "BFM", "BFM/similarity_Lm3D_all.mat",
              "3D landmarks of the mean face for alignment"),
    ModelFile("triangle_buffer.npy", "BFM", "BFM/triangle_buffer.npy",
              "official 256x256 UV lookup table (recomputed when absent)", required=False),
    ModelFile("barycentric_weight.npy", "BFM", "BFM/barycentric_weight.npy",
              "official 256x256 UV lookup weights (recomputed when absent)", required=False),
    ModelFile(FRONT_MASK_FILE, "BFM", "masktopo/front.png",
              "official face region of the colour match (the UV footprint of the front model when absent)",
              required=False),
)


@dataclass(frozen=True)
class ModelPaths:
    """Where the model files are looked for."""

    weights: Path
    bfm: Path

    @classmethod
    def resolve(cls, weights: str | Path | None = None, bfm: str | Path | None = None) -> ModelPaths:
        """Explicit arguments first, then $UVIDM_WEIGHTS / $UVIDM_BFM, then the repository folders."""
        weights = weights or os.environ.get(WEIGHTS_ENV) or REPO_ROOT / "weights"
        bfm = bfm or os.environ.get(BFM_ENV) or REPO_ROOT / "BFM"
        return cls(Path(weights).expanduser().resolve(), Path(bfm).expanduser().resolve())

    def path(self, file: ModelFile | str) -> Path:
        if isinstance(file, str):
            file = model_file(file)
        return self.folder(file) / file.name

    @property
    def insightface_root(self) -> Path:
        return self.weights / "insightface"

    @property
    def detector_dir(self) -> Path:
        return self.insightface_root / "models" / INSIGHTFACE_MODEL

    def folder(self, file: ModelFile) -> Path:
        return self.weights if file.folder == "weights" else self.bfm

    def locate(self, file: ModelFile | str) -> Path:
        """The file to read: our safetensors copy of a network when present (safe, fast), else the official one."""
        official = self.path(file)
        converted = official.with_name(converted_name(official.name))
        return converted if official.suffix in (".ckpt", ".pth") and converted.is_file() else official

    def missing(self, include_optional: bool = False) -> list[ModelFile]:
        return [file for file in MODEL_FILES
                if (file.required or include_optional) and not self.locate(file).is_file()]


def model_file(name: str) -> ModelFile:
    for file in MODEL_FILES:
        if file.name == name:
            return file
    raise KeyError(f"unknown model file {name!r}")


def converted_name(name: str) -> str:
    """Our safetensors copy of a .ckpt/.pth (written by `uvidm weights convert`)."""
    return Path(name).with_suffix(".safetensors").name
