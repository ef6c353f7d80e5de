import pytest

from uvidm_backend.devtools.ict_fixture import write_ict_folder
from uvidm_backend.devtools.model_folder import write_model_folder


@pytest.fixture(scope="session")
def ict_folder(tmp_path_factory):
    """The synthetic ICT-format head (devtools.ict_fixture) in a folder of its own."""
    return write_ict_folder(tmp_path_factory.mktemp("ict") / "FaceXModel")


@pytest.fixture(scope="session")
def full_model_paths(tmp_path_factory):
    """A random-weight model folder with the synthetic ICT head in weights/ict_facekit."""
    return write_model_folder(tmp_path_factory.mktemp("models_full"), seed=0, full_head=True)


@pytest.fixture(scope="session")
def full_pipeline(full_model_paths):
    from uvidm_backend.pipeline.pipeline import Pipeline

    return Pipeline.load(full_model_paths, device="cpu")


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory):
    """A pipeline whose model folder has no full-head files."""
    from uvidm_backend.pipeline.pipeline import Pipeline

    return Pipeline.load(write_model_folder(tmp_path_factory.mktemp("models"), seed=0), device="cpu")
