"""Whether generated images copy training images, calibrated against real images the model never
saw: the DCR share and per-sample authenticity.

dcr_share             the share of generated points nearer to a training point than to a held-out
                      real point (0.5 when nothing is memorised, near 1 for a copying generator)
dcr_scores            each generated point's part of it: 1 nearer the training set, 0 nearer the
                      held-out set, 1/2 on a tie
authenticity          per generated point, whether it lies farther from its nearest training point
                      than that point's own nearest training neighbour (Alaa et al. 2022)
authenticity_share    the share of generated points that are authentic

Every set is a tensor of points, one a row (N x F features, or N x C x H x W images, flattened to
N x C*H*W); distances are Euclidean in whatever space the caller gives (features of a network or
raw pixels), and exact: fast matrix-product distances only screen candidates, the direct formula
decides (as kth_nearest_sq in estimators.py), so ties are real ties, and no more than `chunk` rows
of distances to a whole set exist at once (never an M x N matrix).
"""

from __future__ import annotations

import torch

from ..errors import VaegenError
from .estimators import kth_nearest_sq, manifold_radii, nearest


def _as_points(**sets: torch.Tensor) -> list[torch.Tensor]:
    """Each set as rows (N x ...) flattened to N x F, all in one floating dtype (the promotion of
    theirs; float32 for integer pixels), with one F; named in the errors."""
    dtype = torch.float32
    for t in sets.values():
        if t.dtype.is_floating_point:
            dtype = torch.promote_types(dtype, t.dtype)
    for name, t in sets.items():
        if t.dim() < 2:
            raise VaegenError(
                f"{name} must hold one point a row (N x F, or N x C x H x W), got shape "
                f"{tuple(t.shape)}"
            )
    flat = {name: t.flatten(1).to(dtype) for name, t in sets.items()}
    widths = {name: t.shape[1] for name, t in flat.items()}
    if len(set(widths.values())) > 1:
        shown = ", ".join(f"{name} {w}" for name, w in widths.items())
        raise VaegenError(f"the sets must have the same number of features per point: {shown}")
    return list(flat.values())


def dcr_scores(
    generated: torch.Tensor, train: torch.Tensor, holdout: torch.Tensor, *, chunk: int = 512
) -> torch.Tensor:
    """Each generated point's DCR score: 1 when its nearest training point is nearer than its
    nearest held-out point (distance to closest record, DCR), 0 when farther, 1/2 on a tie;
    M float64 values on the CPU, whose mean is dcr_share (see there for the sets and sizes).
    Evaluate resamples them for the share's interval."""
    if len(train) != len(holdout):
        raise VaegenError(
            f"the DCR share needs training and held-out sets of the same size, got "
            f"{len(train)} training and {len(holdout)} held-out points: draw an equal subset of "
            f"the larger"
        )
    if len(generated) == 0 or len(train) == 0:
        raise VaegenError(
            f"the DCR share needs at least one generated and one real point, got "
            f"{len(generated)} generated and {len(train)} in each real set"
        )
    generated, train, holdout = _as_points(generated=generated, train=train, holdout=holdout)
    to_train = kth_nearest_sq(generated, train, 1, chunk)
    to_holdout = kth_nearest_sq(generated, holdout, 1, chunk)
    return (to_train < to_holdout).double() + 0.5 * (to_train == to_holdout).double()


def dcr_share(
    generated: torch.Tensor, train: torch.Tensor, holdout: torch.Tensor, *, chunk: int = 512
) -> float:
    """The share of generated points whose nearest training point is nearer than their nearest
    held-out point (distance to closest record, DCR), a tie counting one half.

    generated: M x F, train: N x F and holdout: N x F (or M x C x H x W images and so on, taken
    as flat rows), in the caller's feature or pixel space; train holds the images the model was
    fitted to, holdout real images of the same distribution it never saw. Returns a share in
    [0, 1], unitless: 0.5 when the generator does not favour its training images (as for fresh
    draws of the data's distribution: each is as likely to land nearer either set), near 1 for a
    generator that copies them, below 0.5 when the samples sit nearer the held-out images.

    The two real sets must be the same size N, or the larger would be nearer by its numbers
    alone: unequal sizes are an error naming both (draw an equal subset of the larger first; the
    estimator draws nothing itself, so its answer is a function of its inputs). A tie counts as
    one half, so identical train and holdout sets give exactly 0.5 and a sample on the boundary
    leans neither way. Distances are exact (see estimators.nearest); at most `chunk` x N at once.

    Against SDMetrics' DCROverfittingProtection (sdmetrics/single_table/privacy/
    dcr_overfitting_protection.py and dcr_utils.py): followed are the definition (each synthetic
    row's DCR to the training set against its DCR to the validation set; the share "closer to
    training" is this value) and equal sizes (SDMetrics subsamples the real sets to one size when
    asked to, and otherwise only warns when the validation set is under half the training set's).
    Differing: SDMetrics counts `dcr_real < dcr_holdout` strictly, so a tie counts as nearer the
    holdout (identical real sets give 0, not 0.5); it reports the score min(2 (1 - share), 1)
    rather than the share; and its distance is for tables (the mean over columns of |difference|
    over the column's range, capped at 1, or 0/1 for categories), where here it is the Euclidean
    distance in the space the caller gives.
    """
    return float(dcr_scores(generated, train, holdout, chunk=chunk).mean())


def authenticity(generated: torch.Tensor, train: torch.Tensor, *, chunk: int = 512) -> torch.Tensor:
    """Per generated point, whether it is authentic (Alaa, van Breugel, Saveliev & van der Schaar
    2022, "How Faithful is your Synthetic Data?", the authenticity of a sample).

    generated: M x F, train: N x F (N >= 2; images are taken as flat rows), in the caller's
    feature or pixel space -> M bools on the CPU. With x* the training point nearest to a
    generated point g (the lowest index among equally near ones), g is unauthentic when
    d(g, x*) <= d(x*, NN(x*)), the distance from x* to its nearest other training point: g sits
    nearer to x* than the data put any other point, as a copy (with noise) of x* does. Squared
    distances are compared, which orders them as the distances; all are exact (see estimators.nearest).

    Against the reference code, synthcity's AlphaPrecision.metrics
    (src/synthcity/metrics/eval_statistical.py), which computes `authen = real_to_real[
    real_to_synth_args] < real_to_synth`:
    - The inequality is followed: authentic only when strictly farther, so a tie is unauthentic.
      The paper's wording, unauthentic when strictly nearer, would differ on ties only; the
      strict choice makes every exact copy of a training point unauthentic, that of a duplicated
      training point too (both distances are 0).
    - Duplicates are followed: a training point's nearest other point counts its duplicate (a
      distance of 0, as sklearn's two nearest neighbours of a set in itself give), so a point
      that is duplicated in the training set has a radius of 0, and a generated point near it but
      not exactly on it counts as authentic.
    - The roles differ: synthcity loops over real points (each real point's nearest synthetic
      point) and indexes the real points' neighbour distances with the synthetic point's index,
      a mix-up carried over from the paper's code (ahmedmalaa/evaluating-generative-models,
      issue #4) that only runs for sets of one size. Here, as the paper defines it, each
      generated point is judged against its own nearest training point, for any M and N.
    - The space differs: synthcity measures in a one-class network's embedding or on min-max
      scaled columns; here the caller gives the space.

    Calibration: fresh draws of the data's distribution are not all authentic. A fresh g is
    unauthentic exactly when g and x* are each other's nearest neighbours among the N + 1 points
    of train and g; by exchangeability that has the probability that a point of N + 1 draws is in
    such a mutual pair. For many points of a smooth density that is 2/3 on a line, about 0.62 in
    the plane and 0.59 in space, falling towards 1/2 as the dimension grows, so fresh draws score
    about 1/3 to 1/2. Read a generator's share against held-out real images' share, not against 1.
    """
    if len(train) < 2:
        raise VaegenError(
            f"authenticity needs at least 2 training points (each one's nearest other), got "
            f"{len(train)}"
        )
    generated, train = _as_points(generated=generated, train=train)
    to_train, train_index = nearest(generated, train, chunk)
    radii = manifold_radii(train, 1, chunk).cpu()  # squared distance to the nearest other point
    return to_train > radii[train_index]


def authenticity_share(generated: torch.Tensor, train: torch.Tensor, *, chunk: int = 512) -> float:
    """The share of generated points that are authentic (see authenticity): M x F and N x F ->
    a share in [0, 1], unitless; that of fresh real images is the floor to read it against."""
    if len(generated) == 0:
        raise VaegenError("the authenticity share needs at least one generated point, got 0")
    return float(authenticity(generated, train, chunk=chunk).double().mean())
