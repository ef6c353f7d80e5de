"""From the model's texture to the mesh's albedo.

The official chain (`scripts/visualize.py`) ends with the generated texture colour-matched in YUV,
inside the face region of `masktopo/front.png`, to the fitted BFM texture shaded with the fitted
lighting (`face_color_map`): the texture the paper shows, kept as `albedo_model_matched.png`.
The mesh's albedo is that texture resized to the output size (`--texture official`), or by default
the photo's own pixels where the face is visible and the matched texture elsewhere, joined by a
two-band blend inside the photo region (`blend_photo`): the generated regions keep the official
colours exactly, and no second colour match throws them away.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from uvidm_backend.geometry.color import match_color_in_yuv_torch
from uvidm_backend.geometry.uv import render_vertex_colors_uv, resize_uv_map

# The shading divided out by --delight is clamped from below so dark, badly fitted regions do
# not blow up.
MIN_SHADING = 0.25
# Texels of the photo sample that count as photo: inside both the visibility and the skin mask
# (their bilinear edges, where the sample is darkened by the mask, do not).
PHOTO_TEXEL = 0.99
# Widths of the blend's two bands, as a fraction of the texture side: the photo's detail takes over
# within 1/256 of the side (4 px at 1024), its colour within 1/32 (32 px), both inside the photo region.
DETAIL_WIDTH = 1 / 256
COLOUR_WIDTH = 1 / 32


@dataclass(frozen=True, eq=False)
class Textures:
    """What the texture stage made for a batch of B heads."""

    albedo: Tensor  # (B, 3, S, S) in [0, 1], the mesh's texture at the requested size
    matched: Tensor  # (B, 3, M, M) the official colour-matched texture at the model's size
    baseline: Tensor  # (B, 3, M, M) the official `face_color_map`, clipped to [0, 1]
    shading: Tensor  # (B, N, 3) the fitted SH shading of each vertex


def front_region_mask(triangles: Tensor, triangle_buffer: Tensor, barycentric_weight: Tensor,
                      front_vertices: Tensor) -> Tensor:
    """(1, 1, S, S) 1 where the UV pixel lies on a face-region triangle: the UV footprint of
    BFM_model_front.mat's vertices, standing in for the official mask when `front_mask.png` is absent."""
    is_front = torch.zeros(int(triangles.max()) + 1, dtype=torch.bool, device=triangles.device)
    is_front[front_vertices] = True
    covered = barycentric_weight.sum(-1) > 0
    on_front = is_front[triangles[triangle_buffer]].all(-1) & covered
    return on_front.float()[None, None]


def official_front_mask(image: np.ndarray, size: int) -> Tensor:
    """(1, 1, S, S) the official mask from its (H, W, 3) uint8 image, read as visualize.py reads
    `masktopo/front.png`: `read_img(resize=(S, S), dst_range=1.)` (Pillow's default resize filter,
    float32 times 1/255), then `mask[:, :, 0] > 0.5`."""
    picture = Image.fromarray(image)
    if picture.size != (size, size):
        picture = picture.resize((size, size))
    values = np.asarray(picture, np.float32) * np.float32(1.0 / 255.0)
    return torch.from_numpy((values[..., 0] > 0.5).astype(np.float32))[None, None]


def baseline_color_map(face_colors: Tensor, triangles: Tensor, triangle_buffer: Tensor,
                       barycentric_weight: Tensor) -> Tensor:
    """The shaded BFM texture rendered in UV space (visualize.py's `face_color_map`), clipped to [0, 1]."""
    return render_vertex_colors_uv(face_colors, triangles, triangle_buffer, barycentric_weight).clamp(0, 1)


def match_to_baseline(generated: Tensor, baseline: Tensor, front_mask: Tensor) -> Tensor:
    """visualize.py: `match_color_in_yuv(face_color_map*255, x_sample*255, front_mask, sharpen=False)/255`,
    in that arithmetic (0..255 values, float32 as the official arrays; both inputs clipped to [0, 1])."""
    matched = match_color_in_yuv_torch(baseline * 255.0, generated * 255.0, front_mask.expand_as(generated))
    return matched / 255.0


def official_texture(matched: Tensor, size: int) -> Tensor:
    """`--texture official`: the matched texture at `size`, registered to the UV tables."""
    return resize_uv_map(matched, size).clamp(0, 1)


def _window_sums(x: Tensor, radius: int, dim: int) -> Tensor:
    """Sums over [i - r, i + r] along `dim`, clipped to the image, from one cumulative sum: the prefix sums
    padded with r + 1 zeros before and r copies of the total after, so that each window is the difference of
    two slices (views, not a gather of the clipped ends: `blend_photo` 2.5 times faster on the CPU, a fifth on
    the GPU)."""
    axis = dim % x.dim()
    n = x.shape[axis]
    total = torch.cumsum(x, axis)

    def repeated(edge: Tensor, count: int) -> Tensor:
        return edge.expand(*(count if d == axis else size for d, size in enumerate(edge.shape)))

    padded = torch.cat([repeated(torch.zeros_like(total.narrow(axis, 0, 1)), radius + 1), total,
                        repeated(total.narrow(axis, n - 1, 1), radius)], axis)
    return padded.narrow(axis, 2 * radius + 1, n) - padded.narrow(axis, 0, n)


def _box_sum(x: Tensor, radius: int) -> tuple[Tensor, Tensor]:
    """Sums over the (2r+1)² window clipped to the image, and the window sizes; the cost does not grow
    with the radius (a 64 px window at 2048² is cheap)."""
    counts = torch.ones(x.shape[-2:], dtype=x.dtype, device=x.device)
    for dim in (-1, -2):
        x, counts = _window_sums(x, radius, dim), _window_sums(counts, radius, dim)
    return x, counts


def box_mean(x: Tensor, radius: int) -> Tensor:
    """Mean over the (2r+1)² window clipped to the image (`avg_pool2d(count_include_pad=False)`)."""
    if radius <= 0:
        return x
    total, counts = _box_sum(x, radius)
    return total / counts


def inner_ramp(mask: Tensor, width: int) -> Tensor:
    """A soft copy of a binary (1, 1, S, S) mask that is exactly 0 outside it and 1 from 2 * `width` texels
    inside (square windows: along rows and columns; sqrt(2) times that diagonally): eroded by `width`,
    then two box blurs whose radii add up to `width`, so that they spread it back at most to the edge.
    Computed in float64 on integer sums, so the zeros outside are exact."""
    if width <= 0:
        return mask
    outside, _ = _box_sum(1 - mask.double(), width)
    eroded = (outside == 0).double()
    first = width // 2
    return box_mean(box_mean(eroded, first), width - first).to(mask.dtype)


def blend_photo(generated: Tensor, photo_texture: Tensor, photo_mask: Tensor) -> Tensor:
    """The default albedo: the photo's pixels where it shows the face, the generated texture elsewhere.

    `generated`, `photo_texture` (B, 3, S, S) in [0, 1]; `photo_mask` (B, 1, S, S), the photo sample's mask.
    A two-band (Burt-Adelson) blend, both transitions inside the photo region: the difference photo -
    generated is split into a low band (box-of-box blur over `COLOUR_WIDTH`) and the detail; the low
    band fades in over `COLOUR_WIDTH`, the detail over `DETAIL_WIDTH`. So the photo's colour meets the
    generated colour without a step, the photo's detail stays sharp, and outside the photo region the
    result is the generated texture exactly. The photo is carried a little past its region (a
    normalised box filter) so that the low band does not see the black around it.
    """
    size = generated.shape[-1]
    # Without photo texels every term below is 0 and the result is `generated` (no test here: it would wait
    # for the GPU).
    valid = (photo_mask > PHOTO_TEXEL).to(generated.dtype)
    detail_width, colour_width = max(1, round(size * DETAIL_WIDTH)), max(2, round(size * COLOUR_WIDTH))
    reach = 2 * colour_width
    weight = box_mean(valid, reach)
    carried = box_mean(photo_texture * valid, reach) / weight.clamp(min=1e-6)
    photo = torch.where(valid > 0, photo_texture, torch.where(weight > 0, carried, generated))
    difference = photo - generated
    half = colour_width // 2
    low = box_mean(box_mean(difference, half), half)
    albedo = generated + inner_ramp(valid, colour_width) * low + inner_ramp(valid, detail_width) * (difference - low)
    return albedo.clamp(0, 1)


def delight(albedo: Tensor, shading: Tensor) -> Tensor:
    """Divides out the fitted SH shading (1, 3, S, S), so the texture relights correctly."""
    return (albedo / shading.clamp(min=MIN_SHADING)).clamp(0, 1)


def uint8_images(textures: Tensor) -> Tensor:
    """(B, 3, H, W) in [0, 1] -> (B, H, W, 3) uint8 on the same device, rounded, laid out as images (a
    permuted tensor keeps its strides, and every later reader, the mesh, the pickling to a writer process and
    the PNG encoder, would copy it strided at a fraction of the speed)."""
    return (textures.permute(0, 2, 3, 1).clamp(0, 1) * 255).round().to(torch.uint8).contiguous()


def official_uint8(textures: Tensor) -> Tensor:
    """(B, C, H, W) in [0, 1] -> (B, H, W, C) uint8 as visualize.py writes its images:
    `Image.fromarray((x * 255.).astype(np.uint8))`, i.e. truncated, not rounded."""
    return (textures.permute(0, 2, 3, 1).float() * 255.0).to(torch.uint8).contiguous()


def read_only_images(images: Tensor) -> list[np.ndarray]:
    """(B, H, W, C) on any device -> B read-only (H, W, C) arrays from one copy (meshes and writers keep them
    without copies). From a GPU the copy lands in page-locked memory (several times faster than into pageable
    memory, a tenth of a second a batch of 32 heads' textures; the caching host allocator keeps the blocks)."""
    if images.is_cuda:
        host = torch.empty(images.shape, dtype=images.dtype, pin_memory=True)
        host.copy_(images, non_blocking=True)
        torch.cuda.current_stream(images.device).synchronize()
        images = host
    array = images.cpu().numpy()
    array.setflags(write=False)
    return list(array)


def to_uint8_image(texture: Tensor) -> np.ndarray:
    """(1, 3, H, W) in [0, 1] -> (H, W, 3) uint8, rounded."""
    return read_only_images(uint8_images(texture[:1]))[0]


def official_uint8_image(texture: Tensor) -> np.ndarray:
    """(1, C, H, W) in [0, 1] -> (H, W, C) uint8, as `official_uint8`."""
    return read_only_images(official_uint8(texture[:1]))[0]
