"""Is a file what its name says? Each one is loaded as the pipeline loads it: keys and shapes, not presence.

Networks go through the strict loaders (every key and shape against the model, built on the meta
device, so verifying costs no model-sized memory); face-model files through their readers, then the
whole BFM folder through `load_bfm`, which checks the files against each other.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from uvidm_backend.errors import UVIDMError
from uvidm_backend.registry import FRONT_MASK_FILE, ModelFile


class ModelFileInvalid(UVIDMError, ValueError):
    def __init__(self, name: str, reason: str):
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason


def verify_file(file: ModelFile, path: Path, config: Path | None = None) -> None:
    """Raises `ModelFileInvalid` unless `path` loads as `file`; `config` is the ldm_config.json to check
    ldm.ckpt against (None: the released configuration)."""
    try:
        _VERIFIERS.get(file.name, _readable)(path, config)
    except ModelFileInvalid:
        raise
    except Exception as error:  # every loader's own error says what is wrong; keep its words
        raise ModelFileInvalid(file.name, f"does not load ({error})") from error


def _ldm_config(path: Path, config: Path | None) -> None:
    from uvidm_backend.models.stack import LatentDiffusionConfig

    LatentDiffusionConfig.from_file(path)


def _ldm(path: Path, config: Path | None) -> None:
    from uvidm_backend.models.stack import LatentDiffusionConfig, load_latent_diffusion

    load_latent_diffusion(path, LatentDiffusionConfig.from_file(config) if config else LatentDiffusionConfig())


def _recon(path: Path, config: Path | None) -> None:
    from uvidm_backend.models.stack import load_recon_net

    load_recon_net(path)


def _parsing(path: Path, config: Path | None) -> None:
    from uvidm_backend.models.stack import load_face_parsing

    load_face_parsing(path)


def _mat(*keys: str):
    def check(path: Path, config: Path | None) -> None:
        from uvidm_backend.geometry.bfm_files import read_mat

        content = read_mat(path)
        absent = [key for key in keys if key not in content]
        if absent:
            raise ModelFileInvalid(path.name, f"lacks {', '.join(absent)} (holds {', '.join(sorted(content))})")
    return check


def _npy(ndim: int, last: int | None = None):
    def check(path: Path, config: Path | None) -> None:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
        if array.ndim != ndim or (last is not None and array.shape[-1] != last):
            raise ModelFileInvalid(path.name, f"shape {array.shape}, expected {ndim} dimensions"
                                              + (f" ending in {last}" if last else ""))
    return check


def _mask(path: Path, config: Path | None) -> None:
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        if min(image.size) < 16:
            raise ModelFileInvalid(path.name, f"a {image.size[0]}x{image.size[1]} image is no UV mask")


def _readable(path: Path, config: Path | None) -> None:
    with open(path, "rb") as file:
        file.read(1)


_MODEL_KEYS = ("meanshape", "meantex", "idBase", "exBase", "texBase", "tri", "point_buf")
_VERIFIERS = {
    "ldm_config.json": _ldm_config,
    "ldm.ckpt": _ldm,
    "epoch_20.pth": _recon,
    "79999_iter.pth": _parsing,
    "BFM_model_front.mat": _mat(*_MODEL_KEYS),
    "BFM_model_front_5w.mat": _mat(*_MODEL_KEYS),
    "BFM_front_idx.mat": _mat("idx"),
    "example1.mat": _mat("full_triangles"),
    "similarity_Lm3D_all.mat": _mat("lm"),
    "BFM_UV.npy": _npy(2, 2),
    "triangle_buffer.npy": _npy(2),
    "barycentric_weight.npy": _npy(3, 3),
    FRONT_MASK_FILE: _mask,
}


def verify_bfm_folder(folder: Path) -> None:
    """The face-model files against each other (vertex counts, index ranges), as the pipeline reads them."""
    from uvidm_backend.geometry.bfm_files import BFMFileError, load_bfm

    try:
        load_bfm(folder)
    except BFMFileError as error:
        raise ModelFileInvalid(Path(getattr(error, "path", folder)).name, str(error)) from error


def verify_detector(folder: Path) -> list[Path]:
    """buffalo_l as insightface loads it: every .onnx opens in onnxruntime, a detection model among them."""
    import onnxruntime

    models = sorted(folder.glob("*.onnx"))
    if not any(model.name.startswith("det_") for model in models):
        raise ModelFileInvalid(folder.name, f"no face detection model (det_*.onnx) among "
                                            f"{', '.join(m.name for m in models) or 'no .onnx files'}")
    for model in models:
        try:
            onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime's errors have no common base class
            raise ModelFileInvalid(model.name, f"does not load in onnxruntime ({error})") from error
    return models


def unpack_detector(archive: Path, folder: Path) -> None:
    """The .onnx files of insightface's zip (flat or in a folder) into `folder`."""
    try:
        with zipfile.ZipFile(archive) as zipped:
            members = [name for name in zipped.namelist() if name.endswith(".onnx") and "/." not in name]
            if not members:
                raise ModelFileInvalid(archive.name, "holds no .onnx model")
            folder.mkdir(parents=True, exist_ok=True)
            for name in members:
                (folder / Path(name).name).write_bytes(zipped.read(name))
    except zipfile.BadZipFile as error:
        raise ModelFileInvalid(archive.name, f"not a zip archive ({error})") from error
