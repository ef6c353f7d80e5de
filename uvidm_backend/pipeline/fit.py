"""The fitted heads of a batch of photos: computed once, read by the texture and the mesh stages.

visualize.py fits the output head with a stand-alone reconstruction network (`epoch_20.pth`),
apart from the condition stage's copy inside `ldm.ckpt`; its shape, pose, normals and projections
are what the texture is sampled through and what the mesh is made of.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from uvidm_backend.geometry.camera import project, projXY_to_original, to_camera
from uvidm_backend.geometry.face_model import FaceModel
from uvidm_backend.models.recon_net import FaceCoefficients, ReconNet


@dataclass(frozen=True, eq=False)
class Fit:
    """The whole-head BFM fitted to each of B photos."""

    coefficients: FaceCoefficients
    shape: Tensor  # (B, N, 3) with the photo's expression
    id_shape: Tensor  # (B, N, 3) without the expression
    rotation: Tensor  # (B, 3, 3), rows rotated as `v @ R`
    normals: Tensor  # (B, N, 3) of `shape`, unrotated, pointing into the head (BFM winding)
    vertices_camera: Tensor  # (B, N, 3) camera coordinates, z = distance in front of the camera
    projected_crop: Tensor  # (B, N, 2) in the 224 crop, y up
    projected: Tensor  # (B, N, 2) in photo pixels, y down

    @property
    def normals_rotated(self) -> Tensor:
        return self.normals @ self.rotation


def fit_head(recon_net: ReconNet, head_model: FaceModel, crop01: Tensor, trans_params: Tensor) -> Fit:
    """Coefficients of the (B, 3, 224, 224) crops in [0, 1] (trans_params (B, 6)), and everything the later
    stages read from them."""
    coefficients = recon_net(crop01)
    shape, id_shape = head_model.compute_shape(coefficients.id, coefficients.exp)
    rotation = head_model.rotation(coefficients.angle)
    vertices_camera = to_camera(shape, rotation, coefficients.trans)
    projected_crop = project(vertices_camera)
    return Fit(coefficients=coefficients, shape=shape, id_shape=id_shape, rotation=rotation,
               normals=head_model.compute_norm(shape), vertices_camera=vertices_camera,
               projected_crop=projected_crop, projected=projXY_to_original(projected_crop, trans_params))
