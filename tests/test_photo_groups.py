"""PhotoGroups: a batch's photos grouped by size, and per-group results put back in the batch's order."""

import numpy as np
import pytest
import torch

from uvidm_backend.photo_groups import PhotoGroups


def photo(groups: PhotoGroups, index: int) -> torch.Tensor:
    """(1, ...) the row of photo `index`, found through the groups' members."""
    (g, row), = [(g, members.index(index)) for g, members in enumerate(groups.members) if index in members]
    return groups.tensors[g][row:row + 1]


def test_photos_are_grouped_by_size_and_results_come_back_in_batch_order():
    sizes = [(4, 6), (5, 3), (4, 6), (5, 3), (2, 2)]
    photos = [torch.full((1, 3, h, w), float(i)) for i, (h, w) in enumerate(sizes)]
    groups = PhotoGroups.of(photos)
    assert groups.members == [[0, 2], [1, 3], [4]] and len(groups) == 5
    assert [tuple(t.shape) for t in groups.tensors] == [(2, 3, 4, 6), (2, 3, 5, 3), (1, 3, 2, 2)]
    for index in range(5):
        assert torch.equal(photo(groups, index), photos[index])
    # A per-photo value computed per group, then gathered: each photo's own value at its own row.
    means = groups.gather([tensor.mean(dim=(1, 2, 3)) for tensor in groups.tensors])
    assert means.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    batched = torch.arange(5) * 10
    assert [groups.rows(batched, g).tolist() for g in range(3)] == [[0, 20], [10, 30], [40]]


def test_photos_of_one_size_stay_one_group_in_order():
    batch = torch.rand(3, 3, 8, 8)
    groups = PhotoGroups.of(batch)
    assert groups.members == [[0, 1, 2]] and groups.tensors[0] is batch
    per_photo = torch.arange(3.0)
    assert groups.rows(per_photo, 0) is per_photo and groups.gather([per_photo]) is per_photo


def test_pixels_are_uploaded_per_size_in_minus_one_to_one():
    pixels = [np.full((4, 6, 3), 255, np.uint8), np.zeros((5, 3, 3), np.uint8), np.full((4, 6, 3), 0, np.uint8)]
    for array in pixels:
        array.setflags(write=False)  # as a loaded photo's
    groups = PhotoGroups.from_pixels(pixels, "cpu")
    assert groups.members == [[0, 2], [1]]
    assert photo(groups, 0).shape == (1, 3, 4, 6) and float(photo(groups, 0).min()) == 1.0
    assert float(photo(groups, 2).max()) == -1.0 and photo(groups, 1).shape == (1, 3, 5, 3)


def test_groups_must_hold_each_photo_once():
    with pytest.raises(ValueError, match="once"):
        PhotoGroups([torch.zeros(2, 1), torch.zeros(1, 1)], [[0, 1], [1]])
    with pytest.raises(ValueError, match="row per member"):
        PhotoGroups([torch.zeros(2, 1)], [[0]])
