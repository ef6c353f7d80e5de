"""The condition stage of UV-IDM: aligned photo -> BFM fit -> partial UV texture -> context tokens.

Re-implements `ldm.modules.encoders.modules.Deep3dEncoder.forward` (the `cond_stage_model`
of `ldm.ckpt`): the reconstruction network fits BFM coefficients to the 224 crop, the whole-head
mesh is projected back onto the original photo, face parsing (BiSeNet, at 512x512, nearest
resizes as in the official code) keeps skin-like pixels, the photo is sampled into UV space
where the surface faces the camera, and the condition fuser turns that partial texture into
the UNet's cross-attention tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from uvidm_backend.geometry.camera import project, projXY_to_original, to_camera
from uvidm_backend.geometry.face_model import FaceModel
from uvidm_backend.geometry.uv import remap_texture_from_image
from uvidm_backend.models.bisenet import BiSeNet
from uvidm_backend.models.condition_fuser import ConditionFuser
from uvidm_backend.models.recon_net import FaceCoefficients, ReconNet
from uvidm_backend.photo_groups import PhotoGroups

# Face-parsing labels (face-parsing.PyTorch / CelebAMask-HQ) removed from the texture.
PARSING_LABELS = ("background", "skin", "l_brow", "r_brow", "l_eye", "r_eye", "eye_g", "l_ear", "r_ear",
                  "ear_r", "nose", "mouth", "u_lip", "l_lip", "neck", "neck_l", "cloth", "hair", "hat")
# The official code means to drop both ears but assigns `== 8` and overwrites it with `== 9`
# (modules.py:272-273): r_ear stays in. The released model was trained with that mask.
OFFICIAL_EXCLUDED_LABELS = (0, 6, 7, 9, 16, 17, 18)
CORRECTED_EXCLUDED_LABELS = (0, 6, 7, 8, 9, 16, 17, 18)
PARSING_SIZE = 512


@dataclass(frozen=True, eq=False)
class Condition:
    """What the condition stage computed for a batch of photos."""

    tokens: Tensor  # (B, S/8 * S/8, 128) cross-attention context of the UNet
    coefficients: FaceCoefficients
    partial_texture: Tensor  # (B, 3, S, S) in [0, 1], zero where the photo shows no skin
    mask: Tensor  # (B, 1, S, S) where partial_texture holds photo pixels
    projected: Tensor  # (B, N, 2) vertices in photo pixels (x right, y down)
    skin: PhotoGroups  # (B_g, H, W) a group of one photo size, 1 where face parsing kept the pixel
    photos01: PhotoGroups  # (B_g, 3, H, W) the photos in [0, 1], in the groups of `skin`


def skin_mask(labels: Tensor, excluded: tuple[int, ...]) -> Tensor:
    """1 where the label is not excluded (float, like the official product of masks)."""
    keep = torch.ones_like(labels, dtype=torch.bool)
    for label in excluded:
        keep &= labels != label
    return keep.float()


class ConditionStage(nn.Module):
    """Official `Deep3dEncoder` (without the files it reads at construction: everything is passed in).

    `uv_vertex_index` (S, S, 3) and `barycentric_weight` (S, S, 3) are the UV lookup tables
    of the whole-head mesh (official `unwrap_uv_idx_v_idx`, `barycentric_weight`).
    """

    def __init__(self, recon_net: ReconNet, seg_model: BiSeNet, condition_fuser: ConditionFuser,
                 face_model: FaceModel, uv_vertex_index: Tensor, barycentric_weight: Tensor,
                 corrected_ear_mask: bool = False, fuse_tokens: Callable[[Tensor], Tensor] | None = None):
        super().__init__()
        self.recon_net = recon_net
        self.seg_model = seg_model
        self.condition_fuser = condition_fuser
        # The fast path's replay of the fuser (None: run the module).
        self.fuse_tokens = fuse_tokens
        self.face_model = face_model
        self.register_buffer("uv_vertex_index", uv_vertex_index.long(), persistent=False)
        self.register_buffer("barycentric_weight", barycentric_weight.float(), persistent=False)
        self.excluded_labels = CORRECTED_EXCLUDED_LABELS if corrected_ear_mask else OFFICIAL_EXCLUDED_LABELS

    def parse_skin(self, photos01: PhotoGroups) -> PhotoGroups:
        """Photos (B_g, 3, H, W) in [0, 1] -> their (B_g, H, W) skin masks, exactly as the official nearest
        resizes; the parsing network runs once, on the batch at 512 x 512.

        The official code resizes the 19 logits to the photo (nearest) and takes the argmax there. A nearest
        resize copies whole source pixels, so the mask is made at 512 and resized instead: the same mask,
        without 19 photo-sized channels per photo.
        """
        resized = torch.cat([F.interpolate(group, (PARSING_SIZE, PARSING_SIZE)) for group in photos01.tensors])
        masks = skin_mask(self.seg_model(resized)[0].argmax(dim=1), self.excluded_labels).unsqueeze(1)
        per_group = masks.split([len(group) for group in photos01.tensors])  # in the groups' order
        return PhotoGroups([F.interpolate(mask, list(group.shape[-2:]))[:, 0]
                            for group, mask in zip(photos01.tensors, per_group, strict=True)], photos01.members)

    def forward(self, crop: Tensor, photo: Tensor | Sequence[Tensor] | PhotoGroups, trans_params: Tensor,
                vertex_visibility: Tensor | None = None) -> Condition:
        """crop (B, 3, 224, 224) in [-1, 1]; photo (B, 3, H, W) in [-1, 1], or B photos of their own sizes,
        each (1, 3, H, W), or `PhotoGroups` of them; trans_params (B, 6) float32.

        `vertex_visibility` (B, N) optionally removes vertices hidden by the head itself
        (the official normal test lets some through).
        """
        photos = photo if isinstance(photo, PhotoGroups) else PhotoGroups.of(photo)
        coefficients = self.recon_net((crop + 1) * 0.5)
        rotation = self.face_model.rotation(coefficients.angle)
        shape, _ = self.face_model.compute_shape(coefficients.id, coefficients.exp)
        projected = projXY_to_original(project(to_camera(shape, rotation, coefficients.trans)), trans_params)
        normals = self.face_model.compute_norm(shape) @ rotation
        photos01 = photos.map(lambda group: (group + 1) * 0.5)
        skin = self.parse_skin(photos01)
        remapped = [remap_texture_from_image(group, photos.rows(projected, g), photos.rows(normals, g),
                                             skin.tensors[g], self.uv_vertex_index, self.barycentric_weight,
                                             None if vertex_visibility is None else photos.rows(vertex_visibility, g))
                    for g, group in enumerate(photos01.tensors)]  # one size at a time
        partial = photos.gather([texture for texture, _ in remapped])
        mask = photos.gather([mask for _, mask in remapped])
        tokens = (self.fuse_tokens or self.condition_fuser)(partial * 2 - 1)
        return Condition(tokens=tokens, coefficients=coefficients, partial_texture=partial, mask=mask,
                         projected=projected, skin=skin, photos01=photos01)
