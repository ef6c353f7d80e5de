"""The fit recovers a known ICT head: pose, identity and expression, from a BFM-format copy of its surface."""

import numpy as np
import pytest

from uvidm_backend.fullhead.correspondence import build_correspondence, similarity
from uvidm_backend.fullhead.fit import FitSystem, fit_full_head
from uvidm_backend.fullhead.ict_files import load_ict_model


@pytest.fixture(scope="module")
def ict(ict_folder):
    return load_ict_model(ict_folder)


def _rotation(degrees_y: float) -> np.ndarray:
    angle = np.deg2rad(degrees_y)
    return np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])


def test_similarity_is_recovered():
    rng = np.random.default_rng(0)
    points = rng.standard_normal((50, 3))
    scale, rotation, shift = similarity(points, 0.1 * points @ _rotation(20).T + [1, 2, 3])
    assert scale == pytest.approx(0.1) and np.allclose(rotation, _rotation(20)) and np.allclose(shift, [1, 2, 3])


def test_fit_recovers_identity_and_expression(ict):
    # The "BFM head" is the ICT skin itself, in BFM units (0.1 m) and turned by 10 degrees: the fit must find
    # the coefficients that made it.
    skin_triangles = ict.triangles[np.isin(ict.triangle_material, [ict.material_names.index("M_Face"),
                                                                   ict.material_names.index("M_BackHead")])]
    scale, rotation, shift = 0.1, _rotation(10), np.array([0.0, 0.4, 0.7])

    def as_bfm(points_cm):
        return scale * points_cm @ rotation.T + shift

    correspondence = build_correspondence(ict, as_bfm(ict.neutral), skin_triangles, ict.landmarks)
    system = FitSystem.build(ict, correspondence)
    identity = np.linspace(-1.5, 1.5, len(ict.identity))
    expression = np.zeros(len(ict.expressions))
    expression[[ict.expression_names.index("jawOpen"), ict.expression_names.index("mouthSmile_L")]] = 0.7, 0.4
    neutral = ict.neutral + np.einsum("k,knc->nc", identity, ict.identity)
    posed = neutral + np.einsum("e,enc->nc", expression, ict.expressions)
    fit = fit_full_head(ict, correspondence, system, as_bfm(neutral), ict.landmarks, as_bfm(posed))
    np.testing.assert_allclose(fit.identity, identity, atol=0.05)
    np.testing.assert_allclose(fit.expression, expression, atol=0.05)
    assert fit.scale == pytest.approx(scale, rel=1e-3) and np.allclose(fit.rotation, rotation, atol=1e-3)
    assert fit.landmark_residual < 1e-3 and fit.surface_residual < 1e-3  # BFM units: 0.1 mm


def test_neutral_fit_has_no_expression(ict):
    skin_triangles = ict.triangles[np.isin(ict.triangle_material, [ict.material_names.index("M_Face")])]
    correspondence = build_correspondence(ict, 0.1 * ict.neutral, skin_triangles, ict.landmarks)
    fit = fit_full_head(ict, correspondence, FitSystem.build(ict, correspondence), 0.1 * ict.neutral, ict.landmarks)
    assert not fit.expression.any() and np.abs(fit.identity).max() < 0.05
