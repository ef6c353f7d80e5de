"""The whole photos of a batch, those of one size stacked together.

Photos of a batch differ in size, so the steps that read whole photos (the skin parsing, the photo's samples
in UV space, the preview) cannot run on one tensor. Run once per photo, they cost hundreds of small kernel
launches a batch, each of which waits for the GIL in a busy process; a studio's folder comes from a few
cameras, so run once per size they cost a few. Each step computes every photo as it would alone: the
results do not depend on which photos share a group.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor


class PhotoGroups:
    """B photos as groups of one size: `tensors[g]` (B_g, ...) holds the photos `members[g]` of the batch."""

    def __init__(self, tensors: Sequence[Tensor], members: Sequence[Sequence[int]]):
        if len(tensors) != len(members) or any(len(t) != len(m) for t, m in zip(tensors, members, strict=True)):
            raise ValueError("each group needs one tensor row per member")
        self.tensors = list(tensors)
        self.members = [list(m) for m in members]
        order = [index for group in self.members for index in group]
        if sorted(order) != list(range(len(order))):
            raise ValueError("the groups must hold each photo of the batch once")
        self._order = order
        self._identity = order == list(range(len(order)))

    @classmethod
    def of(cls, photos: Tensor | Sequence[Tensor]) -> PhotoGroups:
        """From a (B, C, H, W) batch (one group) or B photos (1, C, H, W) of their own sizes (one group a size,
        in the order sizes first appear)."""
        if isinstance(photos, Tensor):
            return cls([photos], [range(len(photos))])
        return cls.grouping(photos, lambda group: torch.cat(group) if len(group) > 1 else group[0])

    @classmethod
    def from_pixels(cls, pixels: Sequence[np.ndarray], device: torch.device | str) -> PhotoGroups:
        """B (H, W, 3) uint8 photos as groups of (B_g, 3, H, W) in [-1, 1] on `device`: each group is sent as
        bytes, once, and converted there."""

        def upload(group: Sequence[np.ndarray]) -> Tensor:
            return upload_stacked(group, device).permute(0, 3, 1, 2).float() / 127.5 - 1

        return cls.grouping(pixels, upload, size=lambda image: image.shape[:2])

    @classmethod
    def grouping(cls, photos: Sequence, stack: Callable[[list], Tensor],
                 size: Callable[[object], tuple] = lambda photo: tuple(photo.shape[-2:])) -> PhotoGroups:
        by_size: dict[tuple, list[int]] = {}
        for index, photo in enumerate(photos):
            by_size.setdefault(tuple(size(photo)), []).append(index)
        members = list(by_size.values())
        return cls([stack([photos[i] for i in group]) for group in members], members)

    def __len__(self) -> int:
        return len(self._order)

    def map(self, fn: Callable[[Tensor], Tensor]) -> PhotoGroups:
        """`fn` of each group's tensor, the same members."""
        return PhotoGroups([fn(tensor) for tensor in self.tensors], self.members)

    def rows(self, batched: Tensor, group: int) -> Tensor:
        """The rows of a batch-ordered (B, ...) tensor that belong to group `group`."""
        members = self.members[group]
        if self._identity and len(self.members) == 1:
            return batched
        if members == list(range(members[0], members[0] + len(members))):
            return batched[members[0]:members[0] + len(members)]
        return batched[torch.as_tensor(members, device=batched.device)]

    def gather(self, per_group: Sequence[Tensor]) -> Tensor:
        """Per-group results (B_g, ...) of one shape back into one (B, ...) tensor in batch order."""
        stacked = torch.cat(list(per_group)) if len(per_group) > 1 else per_group[0]
        if self._identity:
            return stacked
        inverse = np.argsort(self._order)
        return stacked[torch.as_tensor(inverse, device=stacked.device)]


def upload_stacked(arrays: Sequence[np.ndarray], device: torch.device | str) -> Tensor:
    """(B, ...) on `device` from B arrays of one shape and dtype, stacked once (a copy: the callers' arrays stay
    read-only). For a GPU the stack is page-locked memory from torch's caching host allocator, reused from batch
    to batch: a batch's photos (a hundred megabytes) are then copied without the page faults of a fresh buffer
    and sent without the driver's synchronous staging of pageable memory."""
    device = torch.device(device)
    if device.type != "cuda":
        return torch.from_numpy(np.stack(arrays)).to(device)
    dtype = torch.from_numpy(np.empty(0, arrays[0].dtype)).dtype
    host = torch.empty((len(arrays), *arrays[0].shape), dtype=dtype, pin_memory=True)
    np.stack(arrays, out=host.numpy())
    # The allocator keeps the block from reuse until this copy is done.
    return host.to(device, non_blocking=True)
