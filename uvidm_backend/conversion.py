"""`uvidm weights convert`: safetensors copies of the official network files.

The copies keep the official key layout (only the container changes), load without
unpickling, and are picked up automatically (`ModelPaths.locate`). Each copy is verified by
loading it strictly into the networks before it is kept.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from torch import Tensor

from uvidm_backend.checkpoints import (
    EMA_PREFIX,
    read_face_parsing_weights,
    read_recon_net_weights,
    read_weight_file,
    write_safetensors,
)
from uvidm_backend.models.stack import (
    LatentDiffusionConfig,
    load_face_parsing,
    load_latent_diffusion,
    load_recon_net,
)
from uvidm_backend.registry import ModelPaths, converted_name

log = logging.getLogger(__name__)


def _unshared(tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """safetensors refuses tensors that share memory; give such duplicates their own copy."""
    seen: set[int] = set()
    out = {}
    for key, value in tensors.items():
        pointer = value.untyped_storage().data_ptr()
        out[key] = value.clone() if pointer in seen else value
        seen.add(pointer)
    return out


def _unverified(target: Path) -> Path:
    return target.with_name(f"{target.stem}.unverified{target.suffix}")


def model_config(paths: ModelPaths) -> LatentDiffusionConfig:
    config_file = paths.path("ldm_config.json")
    return LatentDiffusionConfig.from_file(config_file) if config_file.is_file() else LatentDiffusionConfig()


def convert_ldm(source: Path, target: Path, config: LatentDiffusionConfig, trust_pickle: bool = False,
                keep_ema: bool = False) -> Path:
    checkpoint = read_weight_file(source, trust_pickle)
    state_dict = checkpoint.get("state_dict", checkpoint)
    kept = {key: value for key, value in state_dict.items() if keep_ema or not key.startswith(EMA_PREFIX)}
    partial = _unverified(target)
    write_safetensors(_unshared(kept), partial, metadata={"source": source.name, "format": "uvidm-ldm"})
    try:
        load_latent_diffusion(partial, config, use_ema=False)
    except Exception:
        partial.unlink(missing_ok=True)
        raise
    return partial.replace(target)


def convert_file(source: Path, target: Path, read, load, trust_pickle: bool) -> Path:
    partial = _unverified(target)
    write_safetensors(_unshared(read(source, trust_pickle)), partial, metadata={"source": source.name})
    try:
        load(partial)
    except Exception:
        partial.unlink(missing_ok=True)
        raise
    return partial.replace(target)


def convert_model_files(paths: ModelPaths, trust_pickle: bool = False, keep_ema: bool = False) -> list[Path]:
    """Converts each official network file found; returns the files written."""
    written = []
    ldm = paths.path("ldm.ckpt")
    if ldm.is_file():
        written.append(convert_ldm(ldm, ldm.with_name(converted_name(ldm.name)), model_config(paths),
                                   trust_pickle, keep_ema))
    recon = paths.path("epoch_20.pth")
    if recon.is_file():
        written.append(convert_file(recon, recon.with_name(converted_name(recon.name)), read_recon_net_weights,
                                    load_recon_net, trust_pickle))
    parsing = paths.path("79999_iter.pth")
    if parsing.is_file():
        written.append(convert_file(parsing, parsing.with_name(converted_name(parsing.name)),
                                    read_face_parsing_weights, load_face_parsing, trust_pickle))
    if not written:
        raise FileNotFoundError(f"no network file to convert in {paths.weights} (ldm.ckpt, epoch_20.pth, "
                                "79999_iter.pth); run `uvidm weights download` first")
    return written
