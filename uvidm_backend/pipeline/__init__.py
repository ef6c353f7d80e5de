"""The photo-to-head pipeline: `Pipeline.load(paths).generate_to_folder(photo, out_dir, options)`."""

from uvidm_backend.pipeline.errors import Cancelled, InputError, ModelFilesMissing, UVIDMError
from uvidm_backend.pipeline.options import GenerateOptions

__all__ = ["Cancelled", "GenerateOptions", "InputError", "ModelFilesMissing", "Pipeline", "UVIDMError"]


def __getattr__(name: str):
    # Pipeline pulls in torch and every model; importing the package for its options or
    # errors (the service, the CLI's argument parsing) should not.
    if name == "Pipeline":
        from uvidm_backend.pipeline.pipeline import Pipeline

        return Pipeline
    raise AttributeError(name)
