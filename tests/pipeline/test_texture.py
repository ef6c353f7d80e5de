"""Building the production albedo: feathering, blending, delighting, the front-face region."""

import torch

from uvidm_backend.pipeline import texture


def square_mask(size=64, lo=16, hi=48):
    mask = torch.zeros(1, 1, size, size)
    mask[..., lo:hi, lo:hi] = 1
    return mask


def test_feathering_stays_inside_the_mask_and_reaches_one_in_the_middle():
    mask = square_mask()
    weight = texture.feathered(mask, 4)
    assert torch.all(weight[mask == 0] == 0)
    assert weight[0, 0, 32, 32] == 1
    row = weight[0, 0, 32, 16:33]
    assert torch.all(row[1:] >= row[:-1])  # rises from the edge towards the middle
    assert 0 < row[4] < 1


def test_compose_keeps_photo_pixels_and_matches_the_generated_colours_to_them():
    generated = torch.full((1, 3, 64, 64), 0.2)
    generated[:, :, ::2] += 0.1  # some texture, so that it has a spread to match
    photo = torch.zeros(1, 3, 64, 64)
    photo[:, 0] = 0.8
    photo[:, 1] = 0.5
    photo[:, 2] = 0.4
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., :, :32] = 1
    albedo = texture.compose_albedo(generated, photo * mask, mask)
    torch.testing.assert_close(albedo[..., 10:54, 4:16], photo[..., 10:54, 4:16])
    assert torch.isfinite(albedo).all()
    right = albedo[..., 48:].mean(dim=(2, 3))[0]
    assert abs(right[0] - 0.8) < 0.1 and abs(right[2] - 0.4) < 0.1  # the photo's skin tone, not 0.25 grey


def test_delight_divides_by_the_shading_and_clamps():
    albedo = torch.full((1, 3, 4, 4), 0.3)
    shading = torch.full((1, 3, 4, 4), 0.5)
    torch.testing.assert_close(texture.delight(albedo, shading), torch.full_like(albedo, 0.6))
    dark = torch.zeros_like(shading)
    assert texture.delight(albedo, dark).max() <= 1.0
    torch.testing.assert_close(texture.delight(albedo, dark), (albedo / texture.MIN_SHADING).clamp(max=1))


def test_front_region_is_where_all_three_vertices_are_front_vertices():
    triangles = torch.tensor([[0, 1, 2], [1, 2, 3]])
    buffer = torch.tensor([[0, 1], [1, 0]])
    weights = torch.tensor([[[1.0, 0, 0], [0.2, 0.3, 0.5]], [[0, 0, 0], [0.3, 0.3, 0.4]]])
    mask = texture.front_region_mask(triangles, buffer, weights, torch.tensor([0, 1, 2]))
    assert mask.shape == (1, 1, 2, 2)
    assert mask[0, 0].tolist() == [[1.0, 0.0], [0.0, 1.0]]  # (1, 0) is uncovered
