import pytest

from uvidm_backend.devtools.model_folder import write_model_folder


@pytest.fixture(scope="session")
def model_paths(tmp_path_factory):
    """A complete model folder in the official layout: tiny UV-IDM, random networks, synthetic BFM."""
    return write_model_folder(tmp_path_factory.mktemp("models"), seed=0)


@pytest.fixture(scope="session")
def pipeline(model_paths):
    from uvidm_backend.pipeline.pipeline import Pipeline

    return Pipeline.load(model_paths, device="cpu")
