"""Loading official-layout checkpoints (written here with a tiny configuration) and converting them."""

import json
import sys
import types

import pytest
import torch

from uvidm_backend.checkpoints import CheckpointError, load_strict, read_weight_file
from uvidm_backend.cli import main
from uvidm_backend.devtools.tiny import tiny_ldm_config
from uvidm_backend.models.stack import (
    LatentDiffusionNetworks,
    load_face_parsing,
    load_latent_diffusion,
    load_recon_net,
)
from uvidm_backend.registry import ModelPaths


class TrainingState:
    """Stands for the Python objects a Lightning checkpoint pickles besides tensors."""

    def __init__(self):
        self.note = "hyper-parameters"


@pytest.fixture(scope="module")
def tiny_networks():
    torch.manual_seed(0)
    networks = LatentDiffusionNetworks(tiny_ldm_config()).eval()
    networks.scale_factor.fill_(0.7)
    return networks


def write_official_ldm(networks, path, with_ema=True, extra=None):
    state_dict = networks.official_state_dict(with_ema=with_ema)
    if with_ema:  # make the EMA copy differ, so that choosing it is visible
        for key in state_dict:
            if key.startswith("model_ema.") and state_dict[key].is_floating_point() and state_dict[key].ndim:
                state_dict[key] = state_dict[key] * 0.5
    torch.save({"state_dict": state_dict, "epoch": 7, "global_step": 1234, **(extra or {})}, path)
    return path


def sample_inputs(config):
    generator = torch.Generator().manual_seed(1)
    size = config.texture_size
    return {
        "latent": torch.randn(1, 4, config.image_size, config.image_size, generator=generator),
        "context": torch.randn(1, 16, 128, generator=generator),
        "texture": torch.rand(1, 3, size, size, generator=generator) * 2 - 1,
        "face": torch.rand(1, 3, 224, 224, generator=generator),
        "photo": torch.rand(1, 3, 64, 64, generator=generator),
    }


def outputs(networks, inputs):
    t = torch.tensor([500])
    return {
        "eps": networks.unet(inputs["latent"], t, inputs["context"]),
        "decoded": networks.decode_latent(inputs["latent"]),
        "tokens": networks.condition_fuser(inputs["texture"]),
        "coefficients": networks.recon_net(inputs["face"]).to_vector(),
        "parsing": networks.seg_model(inputs["photo"])[0],
    }


def test_official_ldm_ckpt_loads_back_with_the_same_outputs(tiny_networks, tmp_path):
    path = write_official_ldm(tiny_networks, tmp_path / "ldm.ckpt")
    loaded = load_latent_diffusion(path, tiny_ldm_config())
    assert loaded.scale_factor.item() == pytest.approx(0.7)
    inputs = sample_inputs(tiny_networks.config)
    expected, actual = outputs(tiny_networks, inputs), outputs(loaded, inputs)
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-5, atol=1e-6, msg=name)


def test_ema_weights_are_used_only_when_asked(tiny_networks, tmp_path):
    path = write_official_ldm(tiny_networks, tmp_path / "ldm.ckpt")
    plain = load_latent_diffusion(path, tiny_ldm_config())
    ema = load_latent_diffusion(path, tiny_ldm_config(), use_ema=True)
    weight = "input_blocks.0.0.weight"
    assert torch.equal(plain.unet.state_dict()[weight], tiny_networks.unet.state_dict()[weight])
    assert torch.equal(ema.unet.state_dict()[weight], tiny_networks.unet.state_dict()[weight] * 0.5)
    no_ema = write_official_ldm(tiny_networks, tmp_path / "no_ema.ckpt", with_ema=False)
    with pytest.raises(CheckpointError, match="no EMA weights"):
        load_latent_diffusion(no_ema, tiny_ldm_config(), use_ema=True)


def test_wrong_configuration_names_the_mismatching_keys(tiny_networks, tmp_path):
    path = write_official_ldm(tiny_networks, tmp_path / "ldm.ckpt", with_ema=False)
    with pytest.raises(CheckpointError) as error:
        load_latent_diffusion(path)  # the released (full-size) configuration
    message = str(error.value)
    assert "UNet" in message and "wrong shape" in message and "input_blocks.0.0.weight" in message


def test_strict_loading_reports_missing_and_unexpected_keys():
    module = torch.nn.Linear(2, 3)
    with pytest.raises(CheckpointError, match=r"missing 1 key\(s\): bias; unexpected 1 key\(s\): extra"):
        load_strict(module, {"weight": torch.zeros(3, 2), "extra": torch.zeros(1)}, "test.pth")


def test_pickled_objects_need_explicit_trust(tiny_networks, tmp_path):
    path = write_official_ldm(tiny_networks, tmp_path / "ldm.ckpt", with_ema=False,
                              extra={"callbacks": TrainingState()})
    with pytest.raises(CheckpointError, match="trust"):
        load_latent_diffusion(path, tiny_ldm_config())
    loaded = load_latent_diffusion(path, tiny_ldm_config(), trust_pickle=True)
    inputs = sample_inputs(tiny_networks.config)
    assert torch.equal(outputs(loaded, inputs)["eps"], outputs(tiny_networks, inputs)["eps"])


def test_objects_of_absent_packages_load_when_trusted(tmp_path, monkeypatch):
    # What a Lightning checkpoint holds when pytorch_lightning/omegaconf are not installed here.
    module = types.ModuleType("lightning_not_installed")

    class ModelCheckpoint:
        pass

    ModelCheckpoint.__module__ = module.__name__
    ModelCheckpoint.__qualname__ = "ModelCheckpoint"
    module.ModelCheckpoint = ModelCheckpoint
    monkeypatch.setitem(sys.modules, module.__name__, module)
    path = tmp_path / "lightning.ckpt"
    torch.save({"weight": torch.ones(2), "callbacks": ModelCheckpoint()}, path)
    monkeypatch.delitem(sys.modules, module.__name__)

    with pytest.raises(CheckpointError, match="trust"):
        read_weight_file(path)
    loaded = read_weight_file(path, trust_pickle=True)
    assert torch.equal(loaded["weight"], torch.ones(2))
    assert type(loaded["callbacks"]).__name__ == "ModelCheckpoint"


def test_unreadable_files_get_a_clear_error(tmp_path):
    broken = tmp_path / "ldm.ckpt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable PyTorch file"):
        read_weight_file(broken)
    with pytest.raises(CheckpointError, match="file not found"):
        read_weight_file(tmp_path / "absent.ckpt")


def test_convert_writes_safetensors_that_load_the_same(tiny_networks, tmp_path, capsys):
    weights = tmp_path / "weights"
    weights.mkdir()
    write_official_ldm(tiny_networks, weights / "ldm.ckpt")
    (weights / "ldm_config.json").write_text(json.dumps(tiny_ldm_config().to_dict()))
    torch.save({"net_recon": tiny_networks.recon_net.state_dict(), "epoch": 20}, weights / "epoch_20.pth")
    torch.save(tiny_networks.seg_model.state_dict(), weights / "79999_iter.pth")

    assert main(["weights", "convert", "--weights", str(weights), "--bfm", str(tmp_path / "BFM")]) == 0
    written = sorted(path.name for path in weights.glob("*.safetensors"))
    assert written == ["79999_iter.safetensors", "epoch_20.safetensors", "ldm.safetensors"]
    assert "ldm.safetensors" in capsys.readouterr().out

    paths = ModelPaths.resolve(weights, tmp_path / "BFM")
    assert paths.locate("ldm.ckpt").name == "ldm.safetensors"
    loaded = load_latent_diffusion(paths.locate("ldm.ckpt"), tiny_ldm_config())
    inputs = sample_inputs(tiny_networks.config)
    expected, actual = outputs(tiny_networks, inputs), outputs(loaded, inputs)
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-5, atol=1e-6, msg=name)
    recon = load_recon_net(paths.locate("epoch_20.pth"))
    torch.testing.assert_close(recon(inputs["face"]).to_vector(), expected["coefficients"], rtol=1e-5, atol=1e-6)
    parsing = load_face_parsing(paths.locate("79999_iter.pth"))
    torch.testing.assert_close(parsing(inputs["photo"])[0], expected["parsing"], rtol=1e-5, atol=1e-6)
    assert not list(weights.glob("*.unverified*")) and not list(weights.glob("*.partial"))
