"""The texture stage over a batch: the official matched texture (visualize.py) and the mesh's albedo.

Reads the one `Fit` of the batch (the stand-alone reconstruction network's, as visualize.py) and the
condition stage's skin masks; the helpers it chains are in `pipeline/texture.py`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from uvidm_backend.condition import Condition
from uvidm_backend.geometry.face_model import DEFAULT_INIT_LIT, FaceModel
from uvidm_backend.geometry.uv import remap_texture_from_image
from uvidm_backend.geometry.uv_tables import UVLayouts
from uvidm_backend.geometry.visibility import depth_visible_vertices
from uvidm_backend.pipeline import texture as textures
from uvidm_backend.pipeline.fit import Fit
from uvidm_backend.pipeline.options import GenerateOptions


class TextureStage:
    """The textures of B heads from their fit, the model's textures and their photos."""

    def __init__(self, head_model: FaceModel, front_model: FaceModel, front_idx: Tensor, triangles: Tensor,
                 layouts: UVLayouts, front_mask: Tensor, rasterizer, model_size: int):
        self.head_model, self.front_model, self.front_idx = head_model, front_model, front_idx
        self.triangles, self.layouts, self.front_mask = triangles, layouts, front_mask
        self.raster_triangles = triangles.int()  # one tensor for every batch: the rasterizer checks it once
        self.rasterizer, self.model_size = rasterizer, model_size

    def __call__(self, fit: Fit, generated: Tensor, condition: Condition,
                 options: GenerateOptions) -> textures.Textures:
        """`generated` (B, 3, M, M) in [0, 1]; the photos are the condition stage's (`condition.photos01`);
        the options' texture size, texture and delight apply to the whole batch."""
        coefficients = fit.coefficients
        front_shape, _ = self.front_model.compute_shape(coefficients.id, coefficients.exp)
        front_colors = self.front_model.compute_color(
            self.front_model.compute_texture(coefficients.tex),
            self.front_model.compute_norm(front_shape) @ fit.rotation, coefficients.gamma, DEFAULT_INIT_LIT)
        head_colors = self.head_model.compute_texture(coefficients.tex)
        head_colors[:, self.front_idx] = front_colors
        model_layout = self.layouts.at(self.model_size)
        baseline = textures.baseline_color_map(head_colors, self.triangles, model_layout.triangle_buffer,
                                               model_layout.barycentric_weight)
        matched = textures.match_to_baseline(generated, baseline, self.front_mask)

        layout = self.layouts.at(options.texture_size)
        albedo = textures.official_texture(matched, options.texture_size)
        if options.texture == "default":
            # Unlike the model's condition (kept as trained), the output texture also drops surfaces
            # hidden behind others, which the official normal test lets through.
            unoccluded = depth_visible_vertices(fit.projected_crop, fit.vertices_camera[..., 2],
                                                self.raster_triangles, self.rasterizer)
            normals, photos01 = fit.normals_rotated, condition.photos01
            # Photos differ in size: sampled one size at a time, then blended as a batch.
            samples = [remap_texture_from_image(group, photos01.rows(fit.projected, g), photos01.rows(normals, g),
                                                condition.skin.tensors[g], layout.vertex_index,
                                                layout.barycentric_weight, photos01.rows(unoccluded, g))
                       for g, group in enumerate(photos01.tensors)]
            albedo = textures.blend_photo(albedo, photos01.gather([texture for texture, _ in samples]),
                                          photos01.gather([mask for _, mask in samples]))
        shading = self.head_model.compute_color(torch.ones_like(fit.shape), fit.normals_rotated, coefficients.gamma,
                                                DEFAULT_INIT_LIT)
        if options.delight:
            albedo = textures.delight(albedo, textures.baseline_color_map(
                shading, self.triangles, layout.triangle_buffer, layout.barycentric_weight))
        return textures.Textures(albedo=albedo, matched=matched, baseline=baseline, shading=shading)
