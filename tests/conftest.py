import pytest
import torch


def pytest_configure(config):
    torch.set_grad_enabled(False)


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def release(tmp_path_factory):
    """The devtools model folder in the official release layout (checkpoints/, BFM/, masktopo/)."""
    from uvidm_backend.devtools.model_folder import write_official_release

    return write_official_release(tmp_path_factory.mktemp("release"), seed=3)


@pytest.fixture(scope="session")
def detector_zip(tmp_path_factory):
    """insightface's buffalo_l.zip with the stand-in models that find t1.jpg's faces."""
    pytest.importorskip("onnx")
    from hub_standin import detector_archive

    return detector_archive(tmp_path_factory.mktemp("buffalo"))
