"""What a caller can choose for one head."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from uvidm_backend.pipeline.errors import InputError

DIFFUSION_TIMESTEPS = 1000


def ddim_steps_supported(steps: int, num_timesteps: int = DIFFUSION_TIMESTEPS) -> bool:
    """Whether `range(0, T, T // steps) + 1` (the official uniform DDIM spacing) stays below T."""
    stride = num_timesteps // steps
    return (num_timesteps - 1) // stride * stride + 1 < num_timesteps

TEXTURE_SIZES = (256, 2048)
EXPRESSIONS = ("photo", "neutral")
HEADS = ("bfm", "full", "both")  # the BFM head, the ICT full head (head_full.*), or both
SAMPLERS = ("ddim", "dpmpp")
# The mesh's albedo: "default" the photo's pixels where the face is visible, the official texture
# elsewhere; "official" the official colour-matched texture alone (the paper's look).
TEXTURES = ("default", "official")
# How the networks run on a GPU (Pipeline.load): see uvidm_backend.acceleration.
FAST_MODES = ("auto", "off", "graph", "compile")


# What may differ between the photos of one batch (`GenerateOptions.batch_key`).
PER_PHOTO_OPTIONS = frozenset({"seed", "face_index", "landmarks", "expression", "head", "debug_maps"})


@dataclass(frozen=True)
class GenerateOptions:
    steps: int = 50  # sampler steps (50 DDIM steps: the official inference; 20 suit "dpmpp")
    eta: float = 1.0
    seed: int = 23  # the official default
    sampler: str = "ddim"  # "dpmpp": DPM-Solver++ (2M), deterministic, fewer steps
    texture_size: int = 1024  # side of albedo.png
    delight: bool = False  # divide out the fitted SH shading
    expression: str = "photo"  # "neutral": the mesh without the expression coefficients
    head: str = "bfm"  # "full": the ICT full head instead of the BFM head, "both": both
    face_index: int | None = None  # None: the largest face; faces are numbered left to right
    # Five points (x, y) in photo pixels, y down, insightface order (eyes, nose, mouth corners), or 68
    # in the iBUG-300W order; given, they replace face detection.
    landmarks: tuple[tuple[float, float], ...] | None = None
    texture: str = "default"  # see TEXTURES
    debug_maps: bool = False  # also condition.png, condition_mask.png, baseline.png (model size)

    def __post_init__(self) -> None:
        if not 1 <= self.steps <= 500:
            raise InputError(f"steps must be between 1 and 500 (got {self.steps})")
        if self.sampler == "ddim" and not ddim_steps_supported(self.steps):
            raise InputError(f"{self.steps} steps cannot be used: the official DDIM spacing would step past the "
                             f"last timestep; use {self.steps - 1} or {self.steps + 1}")
        if not 0.0 <= self.eta <= 1.0:
            raise InputError(f"eta must be between 0 and 1 (got {self.eta})")
        if self.sampler not in SAMPLERS:
            raise InputError(f"sampler must be one of {', '.join(SAMPLERS)} (got {self.sampler!r})")
        low, high = TEXTURE_SIZES
        if not low <= self.texture_size <= high:
            raise InputError(f"texture size must be between {low} and {high} pixels (got {self.texture_size})")
        if self.texture not in TEXTURES:
            raise InputError(f"texture must be one of {', '.join(TEXTURES)} (got {self.texture!r})")
        if self.expression not in EXPRESSIONS:
            raise InputError(f"expression must be one of {', '.join(EXPRESSIONS)} (got {self.expression!r})")
        if self.head not in HEADS:
            raise InputError(f"head must be one of {', '.join(HEADS)} (got {self.head!r})")
        if self.face_index is not None and self.face_index < 0:
            raise InputError(f"face index must be 0 or more (got {self.face_index})")
        if self.landmarks is not None:
            points = tuple(tuple(float(v) for v in point) for point in self.landmarks)
            if len(points) not in (5, 68) or any(len(point) != 2 for point in points):
                raise InputError("landmarks must be five (x, y) points (eyes, nose tip, mouth corners) or 68 "
                                 "in the iBUG-300W order")
            object.__setattr__(self, "landmarks", points)

    def to_dict(self) -> dict[str, Any]:
        # Shallow: the values are immutable (tuples), and `asdict`'s deep copy of 68 landmark points took
        # milliseconds a photo.
        return {field.name: getattr(self, field.name) for field in fields(self)}

    def batch_key(self) -> tuple:
        """Options equal in this key can share a batch: they may differ only in what is per photo (the seed,
        the face, the mesh's expression, the heads written, the debug maps)."""
        return tuple(value for name, value in sorted(self.to_dict().items()) if name not in PER_PHOTO_OPTIONS)
