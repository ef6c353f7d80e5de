"""Reading the official UV-IDM weight files and writing our safetensors copies.

Official files and their layouts:

- `ldm.ckpt`: a PyTorch Lightning checkpoint whose `state_dict` holds the whole
  `LatentDiffusion`: `model.diffusion_model.*` (UNet), `model_ema.*` (EMA copy of the UNet,
  keys with the dots removed), `first_stage_model.*` (KL autoencoder),
  `cond_stage_model.{conditionfuser,recon_net,seg_model}.*` (condition stage), the twelve
  diffusion-schedule buffers and `scale_factor` at the top level.
- `epoch_20.pth` (Deep3DFaceRecon): `{'net_recon': state_dict, ...}`.
- `79999_iter.pth` (face-parsing BiSeNet): a bare state_dict.

Everything is read with `torch.load(weights_only=True)`: a file that needs full unpickling
(arbitrary code can run while unpickling) is refused unless the caller opts in with
`trust_pickle=True`. `uvidm weights convert` writes safetensors copies that load safely and
faster, with the official key layout kept (only the container changes).
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file as load_safetensors
from safetensors.torch import save_file as save_safetensors
from torch import Tensor, nn

from uvidm_backend.errors import UVIDMError

log = logging.getLogger(__name__)

UNET_PREFIX = "model.diffusion_model."
EMA_PREFIX = "model_ema."
AUTOENCODER_PREFIX = "first_stage_model."
CONDITION_FUSER_PREFIX = "cond_stage_model.conditionfuser."
RECON_NET_PREFIX = "cond_stage_model.recon_net."
SEG_MODEL_PREFIX = "cond_stage_model.seg_model."
SCHEDULE_KEYS = (
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
    "posterior_mean_coef1", "posterior_mean_coef2",
)
SCALE_FACTOR_KEY = "scale_factor"


class CheckpointError(UVIDMError, RuntimeError):
    """A weight file that cannot be used as it is; the message says which file and what to do."""


@dataclass(frozen=True)
class LdmWeights:
    """The parts of `ldm.ckpt`, each a state_dict with its prefix removed."""

    unet: dict[str, Tensor]
    autoencoder: dict[str, Tensor]
    condition_fuser: dict[str, Tensor]
    recon_net: dict[str, Tensor]
    seg_model: dict[str, Tensor]
    schedule: dict[str, Tensor]
    scale_factor: float
    unet_ema: dict[str, Tensor] | None = None


class _TolerantUnpickler(pickle.Unpickler):
    """Full unpickling for trusted files, with classes of absent packages replaced by a stub.

    Lightning checkpoints pickle training-time objects (hyper-parameters as omegaconf
    containers, callback states); we need none of them, only the tensors.
    """

    def find_class(self, module: str, name: str):
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            return type(name, (_Absent,), {"__module__": module})


class _Absent:
    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.state = state


class _TolerantPickle:
    Unpickler = _TolerantUnpickler
    load = pickle.load
    __name__ = "uvidm_tolerant_pickle"


def read_weight_file(path: str | Path, trust_pickle: bool = False) -> Mapping:
    """Loads a .ckpt/.pth/.safetensors file onto the CPU.

    `trust_pickle=True` allows full unpickling of a .ckpt/.pth; only for files from a source
    you trust.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found (run `uvidm weights download` or pass --weights DIR)")
    if path.suffix == ".safetensors":
        try:
            return load_safetensors(str(path))
        except Exception as error:
            raise CheckpointError(f"{path}: not a readable safetensors file ({error}); download it again") from error
    if not _looks_like_torch_file(path):
        raise CheckpointError(f"{path}: not a readable PyTorch file (neither a zip archive nor a pickle); "
                              "download it again")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if not trust_pickle:
            raise CheckpointError(
                f"{path}: this file holds Python objects besides tensors, and unpickling it can run code. "
                "If you trust its source, convert it once with `uvidm weights convert --trust-pickle` "
                "(or pass trust_pickle=True), then use the safetensors copy."
            ) from error
    except (RuntimeError, EOFError, OSError) as error:
        raise CheckpointError(f"{path}: not a readable PyTorch file ({error}); download it again") from error
    log.warning("%s: loading with full unpickling (trusted by the caller)", path)
    return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_TolerantPickle)


def _looks_like_torch_file(path: Path) -> bool:
    """torch.save writes a zip archive (legacy files: a pickle, protocol 2+ starts with 0x80)."""
    with open(path, "rb") as file:
        head = file.read(2)
    return head == b"PK" or head[:1] == b"\x80"


def strip_prefix(state_dict: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {key[len(prefix):]: value for key, value in state_dict.items() if key.startswith(prefix)}


def ema_key(unet_key: str) -> str:
    """`LitEma`'s buffer name for a UNet parameter: every '.' of `diffusion_model.<key>` removed."""
    return EMA_PREFIX + ("diffusion_model." + unet_key).replace(".", "")


def _unwrap_lightning(checkpoint: Mapping, path: Path) -> Mapping[str, Tensor]:
    state_dict = checkpoint.get("state_dict", checkpoint)
    if not any(key.startswith(UNET_PREFIX) for key in state_dict):
        raise CheckpointError(f"{path}: no '{UNET_PREFIX}*' keys; this is not a UV-IDM ldm.ckpt")
    return state_dict


def split_ldm_state_dict(state_dict: Mapping[str, Tensor], path: Path | str = "ldm.ckpt",
                         unet_keys: Iterable[str] | None = None) -> LdmWeights:
    """Splits the LatentDiffusion state_dict by component.

    `unet_keys` (the UNet's own parameter names) lets the EMA weights be read back from
    `model_ema.*`, whose names lost their dots and cannot be inverted on their own.
    """
    known = (UNET_PREFIX, EMA_PREFIX, AUTOENCODER_PREFIX, CONDITION_FUSER_PREFIX, RECON_NET_PREFIX,
             SEG_MODEL_PREFIX)
    leftovers = [key for key in state_dict
                 if not key.startswith(known) and key not in SCHEDULE_KEYS and key != SCALE_FACTOR_KEY]
    if leftovers:
        log.info("%s: ignoring %d keys outside the known components: %s", path, len(leftovers), leftovers[:5])
    if SCALE_FACTOR_KEY not in state_dict:
        raise CheckpointError(f"{path}: no '{SCALE_FACTOR_KEY}' (the latent scale of the trained model)")
    unet_ema = None
    if unet_keys is not None and any(key.startswith(EMA_PREFIX) for key in state_dict):
        missing = [key for key in unet_keys if ema_key(key) not in state_dict]
        if missing:
            raise CheckpointError(f"{path}: EMA weights incomplete, missing {describe_keys(missing)}")
        unet_ema = {key: state_dict[ema_key(key)] for key in unet_keys}
    return LdmWeights(
        unet=strip_prefix(state_dict, UNET_PREFIX),
        autoencoder=strip_prefix(state_dict, AUTOENCODER_PREFIX),
        condition_fuser=strip_prefix(state_dict, CONDITION_FUSER_PREFIX),
        recon_net=strip_prefix(state_dict, RECON_NET_PREFIX),
        seg_model=strip_prefix(state_dict, SEG_MODEL_PREFIX),
        schedule={key: state_dict[key] for key in SCHEDULE_KEYS if key in state_dict},
        scale_factor=float(state_dict[SCALE_FACTOR_KEY]),
        unet_ema=unet_ema,
    )


def read_ldm_checkpoint(path: str | Path, trust_pickle: bool = False,
                        unet_keys: Iterable[str] | None = None) -> LdmWeights:
    path = Path(path)
    return split_ldm_state_dict(_unwrap_lightning(read_weight_file(path, trust_pickle), path), path, unet_keys)


def read_recon_net_weights(path: str | Path, trust_pickle: bool = False) -> dict[str, Tensor]:
    """`epoch_20.pth['net_recon']` (or our safetensors copy, which holds the same keys bare)."""
    path = Path(path)
    checkpoint = read_weight_file(path, trust_pickle)
    if "net_recon" in checkpoint:
        return dict(checkpoint["net_recon"])
    if any(key.startswith("backbone.") for key in checkpoint):
        return dict(checkpoint)
    raise CheckpointError(f"{path}: expected a Deep3DFaceRecon checkpoint with a 'net_recon' entry")


def read_face_parsing_weights(path: str | Path, trust_pickle: bool = False) -> dict[str, Tensor]:
    path = Path(path)
    checkpoint = read_weight_file(path, trust_pickle)
    if not any(key.startswith("cp.resnet.") for key in checkpoint):
        raise CheckpointError(f"{path}: expected the face-parsing BiSeNet state_dict (keys 'cp.resnet.*')")
    return dict(checkpoint)


def describe_keys(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return f"{len(keys)} key(s): {shown}" + (", ..." if len(keys) > limit else "")


def load_strict(module: nn.Module, state_dict: Mapping[str, Tensor], what: str) -> nn.Module:
    """`load_state_dict(strict=True)` with an error that names missing, unexpected and misshapen keys."""
    expected = module.state_dict()
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    misshapen = [f"{key} {tuple(state_dict[key].shape)} != {tuple(value.shape)}"
                 for key, value in expected.items()
                 if key in state_dict and tuple(state_dict[key].shape) != tuple(value.shape)]
    problems = []
    if missing:
        problems.append(f"missing {describe_keys(missing)}")
    if unexpected:
        problems.append(f"unexpected {describe_keys(unexpected)}")
    if misshapen:
        problems.append(f"wrong shape {describe_keys(misshapen)}")
    if problems:
        raise CheckpointError(f"{what}: weights do not match the model ({'; '.join(problems)}). "
                              "Is the model configuration the one these weights were trained with?")
    # assign=True: the module may have been built on the meta device (shapes only).
    module.load_state_dict(state_dict, strict=True, assign=True)
    return module


def write_safetensors(tensors: Mapping[str, Tensor], path: str | Path, metadata: dict[str, str] | None = None,
                      ) -> Path:
    """Writes atomically (temporary name, then rename) so that no half-written file is left."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    contiguous = {key: value.detach().contiguous() for key, value in tensors.items()}
    save_safetensors(contiguous, str(partial), metadata=metadata)
    partial.replace(path)
    return path
