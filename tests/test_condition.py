"""The condition stage's parsing mask: the official ear quirk and its correction."""

import numpy as np
import torch

from uvidm_backend.condition import CORRECTED_EXCLUDED_LABELS, OFFICIAL_EXCLUDED_LABELS, PARSING_LABELS, skin_mask


def test_corrected_ear_mask_also_removes_the_right_ear():
    labels = torch.arange(len(PARSING_LABELS)).reshape(1, 1, -1)
    official = skin_mask(labels, OFFICIAL_EXCLUDED_LABELS)[0, 0]
    corrected = skin_mask(labels, CORRECTED_EXCLUDED_LABELS)[0, 0]
    assert PARSING_LABELS[8] == "r_ear"
    assert official[8] == 1 and corrected[8] == 0
    assert np.array_equal(np.flatnonzero((official != corrected).numpy()), [8])
    kept = [PARSING_LABELS[i] for i in np.flatnonzero(official.numpy())]
    assert kept == ["skin", "l_brow", "r_brow", "l_eye", "r_eye", "r_ear", "nose", "mouth", "u_lip", "l_lip",
                    "neck", "neck_l"]
