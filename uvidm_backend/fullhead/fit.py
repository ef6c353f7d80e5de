"""Fitting the ICT head to the photo's BFM head: pose, identity, expression.

1. Rigid (similarity) alignment on the 68 landmark vertices of both models.
2. Identity: ridge least squares of ICT's identity coefficients, pulling ICT's matched face vertices onto
   their points on the fitted BFM surface (`correspondence`); the similarity is then re-estimated on
   all those vertices, twice.
3. Expression ("photo"): the BFM expression's displacement at the same points, expressed with the ICT
   expression shapes by bounded least squares (weights in [0, 1], as ARKit's).

The normal equations depend only on the models and are solved once for any right-hand side
(`FitSystem`); a request costs a few matrix-vector products.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.optimize

from uvidm_backend.fullhead.correspondence import Correspondence, similarity
from uvidm_backend.fullhead.ict_files import ICTModel

# Ridge weights, relative to the mean diagonal of each normal matrix (so the same for any mesh density).
IDENTITY_PRIOR = 1e-3
EXPRESSION_PRIOR = 1e-3
POSE_ITERATIONS = 3


@dataclass(frozen=True, eq=False)
class FitSystem:
    """The ICT model restricted to the fitted vertices, with its normal equations solved for any right-hand side."""

    vertices: np.ndarray  # (n,) ICT vertices pulled onto the BFM surface
    neutral: np.ndarray  # (n, 3) float64
    identity: np.ndarray  # (3n, K)
    identity_solve: np.ndarray  # (K, 3n): (I^T I + prior)^-1 I^T, the ridge solution of a residual
    landmark_identity: np.ndarray  # (K, 68, 3) float64, the identity shapes at ICT's landmarks
    expression_solve: np.ndarray  # (E, 3n): L^-1 E^T, with L L^T = E^T E + prior
    expression_factor: np.ndarray  # lower Cholesky factor L of expressions.T @ expressions + prior

    @classmethod
    def build(cls, ict: ICTModel, correspondence: Correspondence) -> FitSystem:
        vertices = correspondence.fit_vertices
        identity = ict.identity[:, vertices].reshape(len(ict.identity), -1).T.astype(np.float64)
        expressions = ict.expressions[:, vertices].reshape(len(ict.expressions), -1).T.astype(np.float64)
        gram = identity.T @ identity
        gram += IDENTITY_PRIOR * np.mean(np.diag(gram)) * np.eye(len(gram))
        expression_gram = expressions.T @ expressions
        expression_gram += EXPRESSION_PRIOR * np.mean(np.diag(expression_gram)) * np.eye(len(expression_gram))
        factor = np.linalg.cholesky(expression_gram)
        return cls(vertices, ict.neutral[vertices].astype(np.float64), identity,
                   np.ascontiguousarray(scipy.linalg.cho_solve(scipy.linalg.cho_factor(gram), identity.T)),
                   ict.identity[:, ict.landmarks].astype(np.float64),
                   np.ascontiguousarray(scipy.linalg.solve_triangular(factor, expressions.T, lower=True)), factor)


@dataclass(frozen=True)
class FullHeadFit:
    """ICT coefficients and the similarity that puts the ICT head (cm) onto the BFM head (BFM units)."""

    scale: float
    rotation: np.ndarray  # (3, 3)
    translation: np.ndarray  # (3,)
    identity: np.ndarray  # (K,)
    expression: np.ndarray  # (E,) in [0, 1]; zeros for a neutral head
    landmark_residual: float  # RMS distance of the 68 landmarks after the fit, BFM units
    surface_residual: float  # RMS distance of the fitted vertices to their BFM points, BFM units

    def place(self, points_cm: np.ndarray) -> np.ndarray:
        """ICT-frame points (cm) -> BFM frame (BFM units)."""
        return self.scale * points_cm @ self.rotation.T + self.translation

    def place_offsets(self, offsets_cm: np.ndarray) -> np.ndarray:
        """ICT-frame displacements (cm) -> BFM-frame displacements."""
        return self.scale * offsets_cm @ self.rotation.T


def _to_ict(points: np.ndarray, scale: float, rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    return (points - translation) @ rotation / scale


def fit_full_head(ict: ICTModel, correspondence: Correspondence, system: FitSystem, bfm_identity_shape: np.ndarray,
                  bfm_keypoints: np.ndarray, bfm_shape: np.ndarray | None = None) -> FullHeadFit:
    """Fits the ICT head to a BFM head: `bfm_identity_shape` (Nb, 3) without expression, `bfm_shape` with it
    (None: a neutral head), both in BFM units and the BFM model's canonical frame."""
    bfm_identity_shape = np.asarray(bfm_identity_shape, np.float64)
    targets = correspondence.on_bfm(bfm_identity_shape, system.vertices)
    scale, rotation, translation = similarity(ict.neutral[ict.landmarks], bfm_identity_shape[bfm_keypoints])
    coefficients = np.zeros(system.identity.shape[1])
    for _ in range(POSE_ITERATIONS):
        residual = (_to_ict(targets, scale, rotation, translation) - system.neutral).reshape(-1)
        coefficients = system.identity_solve @ residual
        fitted = system.neutral + (system.identity @ coefficients).reshape(-1, 3)
        scale, rotation, translation = similarity(fitted, targets)
    surface = np.sqrt(np.mean(np.sum((scale * fitted @ rotation.T + translation - targets) ** 2, axis=1)))
    landmarks = ict.neutral[ict.landmarks] + np.einsum("k,knc->nc", coefficients, system.landmark_identity)
    placed = scale * landmarks @ rotation.T + translation
    landmark_rms = np.sqrt(np.mean(np.sum((placed - bfm_identity_shape[bfm_keypoints]) ** 2, axis=1)))

    expression = np.zeros(system.expression_solve.shape[0])
    if bfm_shape is not None:
        displacement = correspondence.on_bfm(np.asarray(bfm_shape, np.float64) - bfm_identity_shape, system.vertices)
        target = (displacement @ rotation / scale).reshape(-1)
        # min |E w - d|^2 + prior |w|^2  ==  min |L^T w - L^-1 E^T d|^2 (+ const), with L L^T = E^T E + prior
        rhs = system.expression_solve @ target
        expression = scipy.optimize.lsq_linear(system.expression_factor.T, rhs, bounds=(0.0, 1.0), method="bvls").x
        expression = np.clip(expression, 0.0, 1.0)  # BVLS may leave a bound by rounding (-4e-19 was seen)
    return FullHeadFit(scale, rotation, translation, coefficients, expression, float(landmark_rms), float(surface))
