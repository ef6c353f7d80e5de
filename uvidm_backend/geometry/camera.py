"""The official pinhole camera of Deep3DFaceRecon / UV-IDM, and the way back to the photo.

The face sits at the origin, the camera on the +z axis at `CAMERA_DISTANCE`, looking down -z;
the 224x224 aligned crop is the image plane (focal 1015 px, principal point (112, 112)).
Projected coordinates have **y pointing up** (row = 224 - y).

Official counterparts: `perspective_projection` (`ldm/modules/encoders/modules.py`,
`scripts/visualize.py`), the projection lines of `Deep3dEncoder.forward`,
`trans_projXY_back_to_ori_coord` (`modules.py`, `ldm/data/preprocess_func.py`) and the
nvdiffrast `MeshRenderer` (`ldm/models/render_nvdiffrast.py`, fov = 2 atan(center / focal)).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

FOCAL = 1015.0
CENTER = 112.0
CAMERA_DISTANCE = 10.0
Z_NEAR = 5.0
Z_FAR = 15.0
CROP_SIZE = 224  # = 2 * CENTER, the aligned crop (and render) size


def perspective_projection(focal: float = FOCAL, center: float = CENTER, *,
                           device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
                           ) -> Tensor:
    """The transposed intrinsics K^T (3, 3) = [[f, 0, 0], [0, f, 0], [c, c, 1]], for `v @ K^T`."""
    matrix = np.array([focal, 0, center, 0, focal, center, 0, 0, 1]).reshape(3, 3).astype(np.float32).T
    return torch.from_numpy(np.ascontiguousarray(matrix)).to(device=device, dtype=dtype)


def to_camera(shape: Tensor, rotation: Tensor, translation: Tensor,
              camera_distance: float = CAMERA_DISTANCE) -> Tensor:
    """World (B, N, 3) -> camera coordinates: `v @ R + T`, then z <- camera_distance - z.

    Positive z is the distance in front of the camera. The input is not modified.
    """
    vertices = shape @ rotation + translation.unsqueeze(1)
    return torch.cat([vertices[..., :2], camera_distance - vertices[..., 2:]], dim=-1)


def project(vertices_camera: Tensor, focal: float = FOCAL, center: float = CENTER) -> Tensor:
    """Camera coordinates (B, N, 3) -> (B, N, 2) pixel coordinates of the crop, y up."""
    homogeneous = vertices_camera @ perspective_projection(focal, center, device=vertices_camera.device,
                                                           dtype=vertices_camera.dtype)
    return homogeneous[..., :2] / homogeneous[..., 2:]


def depth_to_ndc(depth: Tensor, near: float = Z_NEAR, far: float = Z_FAR) -> Tensor:
    """Distance from the camera -> the rasterizers' z in [-1, 1] between the near and far planes (linear)."""
    return (depth - near) / (far - near) * 2 - 1


def projXY_to_original(projXY: Tensor, trans_params: Tensor) -> Tensor:
    """Crop pixel coordinates (B, N, 2), y up -> pixel coordinates of the original photo, y down.

    Official `trans_projXY_back_to_ori_coord`. trans_params (B, 6) = [w0, h0, s, t0, t1,
    target_size] (the alignment of `preprocess`): the photo was resized by s to
    (int(w0*s), int(h0*s)) and cropped around (t0, t1). The integer size is truncated in the
    dtype of `trans_params`: float32 in the official torch pipeline (trap 5; e.g. 100 * 1.93 gives
    193 in float32 but 192 in float64); the rest is computed in the promoted dtype of both
    inputs. Float64 inputs reproduce the NumPy `preprocess_func` version. Coordinates
    are clamped to [0, w0-1] x [0, h0-1] per sample (the official torch code clamps every sample
    with the first one's size; identical for its batch of one).
    """
    dtype = torch.promote_types(projXY.dtype, trans_params.dtype)
    w0, h0, s, t0, t1, target_size = trans_params.unbind(dim=1)
    w = (w0 * s).long().to(dtype)
    h = (h0 * s).long().to(dtype)
    w0, h0, s, t0, t1, target_size = (value.to(dtype)[:, None] for value in (w0, h0, s, t0, t1, target_size))
    offset = torch.stack([w / 2 - target_size[:, 0] / 2, h / 2 - target_size[:, 0] / 2], dim=1)
    points = (projXY.to(dtype) + offset[:, None, :]) / s[:, :, None]
    x = points[..., 0] + t0 - w0 / 2
    y = h0 - 1 - (points[..., 1] + t1 - h0 / 2)
    x = torch.minimum(x.clamp(min=0), w0 - 1)
    y = torch.minimum(y.clamp(min=0), h0 - 1)
    return torch.stack([x, y], dim=-1)
