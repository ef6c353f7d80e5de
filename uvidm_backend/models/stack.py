"""The networks of UV-IDM together, built from one config and loaded from the official files.

`LatentDiffusionConfig` mirrors the yaml's `model.params` (configs/latent-diffusion/
uvffhq-ldm-kl-4.yaml): its defaults are the released model, `from_dict` reads the yaml
layout (`unet_config.params`, `first_stage_config.params`, schedule numbers), so a tiny test
configuration is a small JSON file.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from uvidm_backend.checkpoints import (
    AUTOENCODER_PREFIX,
    CONDITION_FUSER_PREFIX,
    EMA_PREFIX,
    RECON_NET_PREFIX,
    SCALE_FACTOR_KEY,
    SEG_MODEL_PREFIX,
    UNET_PREFIX,
    CheckpointError,
    LdmWeights,
    ema_key,
    load_strict,
    read_face_parsing_weights,
    read_ldm_checkpoint,
    read_recon_net_weights,
)
from uvidm_backend.diffusion.schedule import DiffusionSchedule, linear_schedule
from uvidm_backend.models.autoencoder import AutoencoderConfig, AutoencoderKL
from uvidm_backend.models.bisenet import BiSeNet
from uvidm_backend.models.condition_fuser import ConditionFuser
from uvidm_backend.models.recon_net import ReconNet
from uvidm_backend.models.unet import UNetConfig, UNetModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LatentDiffusionConfig:
    unet: UNetConfig = field(default_factory=UNetConfig)
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    linear_start: float = 0.0015
    linear_end: float = 0.0155
    timesteps: int = 1000
    image_size: int = 32  # latent side; the texture is image_size * 2**(len(ch_mult) - 1)
    channels: int = 4

    @classmethod
    def from_dict(cls, params: Mapping[str, Any]) -> LatentDiffusionConfig:
        """From the yaml's `model.params` (or a JSON dump of it); absent entries keep the defaults."""
        unet = params.get("unet_config", {}).get("params")
        first_stage = params.get("first_stage_config", {}).get("params")
        scalars = {key: params[key] for key in ("linear_start", "linear_end", "timesteps", "image_size", "channels")
                   if key in params}
        return cls(unet=UNetConfig(**unet) if unet else UNetConfig(),
                   autoencoder=AutoencoderConfig.from_dict(first_stage) if first_stage else AutoencoderConfig(),
                   **scalars)

    @classmethod
    def from_file(cls, path: str | Path) -> LatentDiffusionConfig:
        data = json.loads(Path(path).read_text())
        return cls.from_dict(data.get("model", {}).get("params", data))

    def to_dict(self) -> dict[str, Any]:
        unet = {key: list(value) if isinstance(value, tuple) else value
                for key, value in self.unet.__dict__.items()}
        return {
            "linear_start": self.linear_start, "linear_end": self.linear_end, "timesteps": self.timesteps,
            "image_size": self.image_size, "channels": self.channels,
            "unet_config": {"params": unet},
            "first_stage_config": {"params": self.autoencoder.to_dict()},
        }

    @property
    def texture_size(self) -> int:
        return self.image_size * 2 ** (len(self.autoencoder.ddconfig.ch_mult) - 1)

    @property
    def context_tokens(self) -> int:
        """Tokens the condition fuser makes of a partial texture at `texture_size` (one per 8 x 8 texels):
        the UNet's context length."""
        return (self.texture_size // 8) ** 2

    def schedule(self) -> DiffusionSchedule:
        return linear_schedule(self.linear_start, self.linear_end, self.timesteps)


class LatentDiffusionNetworks(nn.Module):
    """UNet, autoencoder and condition stage (fuser, reconstruction net, face parsing) of `ldm.ckpt`."""

    def __init__(self, config: LatentDiffusionConfig | None = None):
        super().__init__()
        self.config = config or LatentDiffusionConfig()
        self.unet = UNetModel(self.config.unet)
        self.autoencoder = AutoencoderKL(self.config.autoencoder)
        self.condition_fuser = ConditionFuser()
        self.recon_net = ReconNet()
        self.seg_model = BiSeNet()
        self.register_buffer("scale_factor", torch.tensor(1.0))

    @cached_property
    def schedule(self) -> DiffusionSchedule:
        return self.config.schedule()

    def load_weights(self, weights: LdmWeights, use_ema: bool = False, what: str = "ldm.ckpt") -> None:
        if use_ema and weights.unet_ema is None:
            raise CheckpointError(f"{what}: no EMA weights (model_ema.*) in this checkpoint")
        load_strict(self.unet, weights.unet_ema if use_ema else weights.unet, f"{what} (UNet)")
        load_strict(self.autoencoder, weights.autoencoder, f"{what} (autoencoder)")
        load_strict(self.condition_fuser, weights.condition_fuser, f"{what} (condition fuser)")
        load_strict(self.recon_net, weights.recon_net, f"{what} (reconstruction network)")
        load_strict(self.seg_model, weights.seg_model, f"{what} (face parsing)")
        self.scale_factor = torch.tensor(weights.scale_factor, dtype=torch.float32)
        self._check_schedule(weights.schedule, what)

    def official_state_dict(self, with_ema: bool = True) -> dict[str, Tensor]:
        """The state_dict of the official `LatentDiffusion` (the `state_dict` entry of `ldm.ckpt`)."""
        out: dict[str, Tensor] = dict(self.schedule.buffers())
        out[SCALE_FACTOR_KEY] = self.scale_factor.detach().clone()
        parts = ((UNET_PREFIX, self.unet), (AUTOENCODER_PREFIX, self.autoencoder),
                 (CONDITION_FUSER_PREFIX, self.condition_fuser), (RECON_NET_PREFIX, self.recon_net),
                 (SEG_MODEL_PREFIX, self.seg_model))
        for prefix, module in parts:
            out.update({prefix + key: value for key, value in module.state_dict().items()})
        if with_ema:
            out.update({ema_key(name): value.detach().clone() for name, value in self.unet.named_parameters()})
            out[EMA_PREFIX + "decay"] = torch.tensor(0.9999, dtype=torch.float32)
            out[EMA_PREFIX + "num_updates"] = torch.tensor(0, dtype=torch.int32)
        return out

    def _check_schedule(self, stored: Mapping[str, Tensor], what: str) -> None:
        """The schedule is recomputed from the config; a checkpoint trained with another one is refused."""
        ours = self.schedule.buffers()
        for name, value in stored.items():
            if value.shape != ours[name].shape or not torch.allclose(value.float(), ours[name], rtol=1e-5, atol=1e-8):
                raise CheckpointError(f"{what}: diffusion schedule buffer '{name}' differs from the configuration "
                                      "(linear_start / linear_end / timesteps); pass the model's config")

    def decode_latent(self, latent: Tensor) -> Tensor:
        """`LatentDiffusion.decode_first_stage`: undo the latent scaling, then decode."""
        return self.autoencoder.decode((1.0 / self.scale_factor) * latent)  # as official: 1/s * z


def _build_empty(build):
    """Builds a module with shapes only: initialising 500M parameters that the strict load then
    replaces would cost seconds at every start."""
    with torch.device("meta"):
        return build()


def _ready(module: nn.Module) -> nn.Module:
    empty = [name for name, tensor in [*module.named_parameters(), *module.named_buffers()] if tensor.is_meta]
    if empty:
        raise CheckpointError(f"no weights were loaded for {empty[:5]}")
    return module.float().eval().requires_grad_(False)


def load_latent_diffusion(path: str | Path, config: LatentDiffusionConfig | None = None, use_ema: bool = False,
                          trust_pickle: bool = False) -> LatentDiffusionNetworks:
    """Loads `ldm.ckpt` (or our safetensors copy) into a `LatentDiffusionNetworks` on the CPU, in eval mode."""
    networks = _build_empty(lambda: LatentDiffusionNetworks(config))
    weights = read_ldm_checkpoint(path, trust_pickle, unet_keys=list(networks.unet.state_dict()) if use_ema else None)
    networks.load_weights(weights, use_ema=use_ema, what=str(path))
    return _ready(networks)


def load_recon_net(path: str | Path, trust_pickle: bool = False) -> ReconNet:
    """Deep3DFaceRecon's `epoch_20.pth` (`net_recon`): the coefficients of the output mesh."""
    net = _build_empty(ReconNet)
    load_strict(net, read_recon_net_weights(path, trust_pickle), f"{path} (net_recon)")
    return _ready(net)


def load_face_parsing(path: str | Path, trust_pickle: bool = False) -> BiSeNet:
    net = _build_empty(BiSeNet)
    load_strict(net, read_face_parsing_weights(path, trust_pickle), str(path))
    return _ready(net)
