"""The estimators behind `vaegen evaluate`, each checked against closed forms in the tests.

iwae_log_likelihood                   the importance-weighted bound on log p(x) (Burda et al. 2016)
latent_means / knn_accuracy           the latent space as features for k-nearest neighbours
frechet_distance                      between Gaussians fitted to two feature sets (as in FID)
precision_recall                      of a generated set against a real one, by k-NN manifolds
                                      (Kynkaenniemi et al. 2019)
kth_nearest_sq / nearest / nearness  how near images lie to the training images, against unseen
                                      images' own distances
class_agreement                       how often a classifier's class is the class asked for
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..console import show_progress
from ..errors import VaegenError
from ..model.likelihoods import Likelihood

KNN_K = 5
PR_K = 3  # the neighbourhood size of Kynkaenniemi et al. 2019


# --------------------------------------------------------------------------------- likelihood


@torch.no_grad()
def iwae_log_likelihood(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None,
    lk: Likelihood,
    *,
    k: int,
    seed: int = 0,
    max_rows: int = 8192,
    progress: bool = False,
) -> torch.Tensor:
    """The importance-weighted lower bound on log p(x) (Burda, Grosse & Salakhutdinov 2016), nats.

    L_K(x) = log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x), z_k ~ q(z|x) = N(mu, diag(exp(logvar))).
    L_1 is the ELBO in expectation; L_K rises with K towards log p(x) and equals it for every K
    when q is the exact posterior. x: N x C x H x W floats; y: N labels or None (a conditional
    model then bounds log p(x|y)). Returns N float64 values on x's device.

    Work is bounded: at most `max_rows` decoded samples exist at once (images x samples); a
    sample count above that is split into chunks joined with a running logaddexp.
    Noise comes from a CPU generator seeded with `seed`, so the result is repeatable.
    """
    if k < 1:
        raise VaegenError(f"iw_samples = {k} is not valid: use an integer >= 1")
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    n = len(x)
    per_image = min(k, max_rows)  # samples decoded together for one image
    batch = max(1, max_rows // per_image)  # images per step
    out = torch.empty(n, dtype=torch.float64, device=x.device)
    bar = tqdm(
        total=n * k,
        desc=f"IWAE K={k}",
        unit="sample",
        unit_scale=True,
        disable=not show_progress(progress),
        leave=False,
    )
    for i in range(0, n, batch):
        xb = x[i : i + batch]
        yb = None if y is None else y[i : i + batch]
        b = len(xb)
        mu, logvar = model.encode(xb, yb)
        std = torch.exp(0.5 * logvar)
        pixels = xb.flatten(1).unsqueeze(1)  # b x 1 x P, broadcast over samples
        acc = torch.full((b,), -math.inf, dtype=torch.float64, device=x.device)
        for j in range(0, k, per_image):
            kc = min(per_image, k - j)
            eps = torch.randn((b, kc, mu.shape[1]), generator=gen, dtype=mu.dtype)
            eps = eps.to(x.device)
            z = mu.unsqueeze(1) + eps * std.unsqueeze(1)  # b x kc x d
            y_rep = None if yb is None else yb.repeat_interleave(kc)
            recon = model.decode(z.reshape(b * kc, -1), y_rep).reshape(b, kc, -1)
            # log p(z) - log q(z|x): the log(2*pi) terms cancel, and (z - mu)^2 / var = eps^2
            log_prior_ratio = -0.5 * z.pow(2).sum(-1) + 0.5 * (
                eps.pow(2) + logvar.unsqueeze(1)
            ).sum(-1)
            log_w = lk.log_density(recon, pixels) + log_prior_ratio
            acc = torch.logaddexp(acc, torch.logsumexp(log_w.double(), dim=1))
            bar.update(b * kc)
        out[i : i + b] = acc - math.log(k)
    bar.close()
    return out


# ------------------------------------------------------------------------------------- latent


def knn_predict(
    train_z: torch.Tensor,
    train_y: torch.Tensor,
    test_z: torch.Tensor,
    k: int = KNN_K,
    chunk: int = 512,
    progress: bool = False,
) -> torch.Tensor:
    """Majority vote of the k nearest training points (Euclidean), ties broken toward the nearest.

    train_z: M x d, train_y: M int labels, test_z: N x d -> N predicted labels (int64, CPU).
    Distances come from torch.cdist over `chunk` test rows at a time (chunk x M floats at once).
    """
    if len(train_z) == 0:
        raise VaegenError("k-nearest-neighbour accuracy needs at least one training point")
    k = min(k, len(train_z))
    num_classes = int(train_y.max()) + 1
    train_y = train_y.to(torch.int64)
    preds = []
    for i in tqdm(
        range(0, len(test_z), chunk), desc="kNN", disable=not show_progress(progress), leave=False
    ):
        # the direct formula, not the matrix-product shortcut: exact distances, so near-ties
        # between neighbours are ordered the same on every machine
        dist = torch.cdist(
            test_z[i : i + chunk], train_z, compute_mode="donot_use_mm_for_euclid_dist"
        )
        nearest = dist.topk(k, dim=1, largest=False, sorted=True).indices  # c x k, nearest first
        votes_of = train_y[nearest]  # c x k
        votes = F.one_hot(votes_of, num_classes).sum(1)  # c x classes
        tied = votes == votes.max(1, keepdim=True).values
        # the first neighbour (nearest first) whose class is among the most voted
        first = tied.gather(1, votes_of).to(torch.uint8).argmax(1, keepdim=True)
        preds.append(votes_of.gather(1, first).squeeze(1))
    return torch.cat(preds)


def knn_accuracy(
    train_z: torch.Tensor,
    train_y: torch.Tensor,
    test_z: torch.Tensor,
    test_y: torch.Tensor,
    k: int = KNN_K,
    progress: bool = False,
) -> float:
    """Fraction of test points whose kNN prediction (see knn_predict) equals test_y."""
    pred = knn_predict(train_z, train_y, test_z, k, progress=progress)
    return float((pred == test_y.cpu().to(torch.int64)).double().mean())


# ---------------------------------------------------------------------------------- Frechet


def feature_stats(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """N x F features -> (mean F, covariance F x F with the N - 1 divisor), both float64."""
    f = features.double()
    if len(f) < 2:
        raise VaegenError(f"a covariance needs at least 2 samples, got {len(f)}")
    mu = f.mean(0)
    centred = f - mu
    return mu, centred.T @ centred / (len(f) - 1)


def _sqrt_psd(s: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric positive semi-definite matrix via eigh (eigenvalues < 0 from
    rounding are clamped to 0)."""
    w, v = torch.linalg.eigh(s)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def frechet_distance(
    mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor
) -> float:
    """Frechet (2-Wasserstein squared) distance between N(mu1, sigma1) and N(mu2, sigma2):

    ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2), in squared feature units.
    Computed in float64 from symmetric matrices only (eigh), which stays real and stable where
    the general sqrtm of S1 S2 (scipy, as FID code uses) can return complex noise.
    """
    mu1, mu2, s1, s2 = (t.double() for t in (mu1, mu2, sigma1, sigma2))
    root1 = _sqrt_psd(s1)
    middle = root1 @ s2 @ root1
    middle = 0.5 * (middle + middle.T)  # symmetric up to rounding; make it exactly so
    cross = torch.linalg.eigvalsh(middle).clamp(min=0).sqrt().sum()
    fd = (mu1 - mu2).pow(2).sum() + torch.trace(s1) + torch.trace(s2) - 2 * cross
    return max(float(fd), 0.0)


def frechet_distance_batch(
    mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor
) -> torch.Tensor:
    """frechet_distance of R pairs at once: means R x F, covariances R x F x F -> R float64 values.

    The trace term through a Cholesky factor, which needs no eigenvectors (eigenvectors make
    most of frechet_distance's cost): with S1 = L L^T, S1 S2 has the eigenvalues of L^T S2 L,
    so Tr (S1^1/2 S2 S1^1/2)^1/2 is the sum of the square roots of eigvalsh(L^T S2 L). A pair
    whose S1 is only semi-definite (a feature that never varies, or fewer images than features)
    is factored with 1e-9 of its mean variance added to the diagonal, which moves the distance
    by about 1e-4 of itself (the tests compare with frechet_distance); one that still fails is
    measured by frechet_distance.
    """
    mu1, mu2, s1, s2 = (t.double() for t in (mu1, mu2, sigma1, sigma2))
    factor, info = torch.linalg.cholesky_ex(s1)
    if bool((info != 0).any()):
        eye = torch.eye(s1.shape[1], dtype=s1.dtype)
        ridge = 1e-9 * s1.diagonal(dim1=1, dim2=2).mean(1).clamp(min=1e-300)
        factor, info = torch.linalg.cholesky_ex(s1 + ridge[:, None, None] * eye)
    middle = factor.transpose(1, 2) @ s2 @ factor
    middle = 0.5 * (middle + middle.transpose(1, 2))
    cross = torch.linalg.eigvalsh(middle).clamp(min=0).sqrt().sum(1)
    diag1, diag2 = s1.diagonal(dim1=1, dim2=2), s2.diagonal(dim1=1, dim2=2)
    fd = (mu1 - mu2).pow(2).sum(1) + diag1.sum(1) + diag2.sum(1) - 2 * cross
    out = fd.clamp(min=0)
    for i in (info != 0).nonzero().flatten().tolist():
        out[i] = frechet_distance(mu1[i], s1[i], mu2[i], s2[i])
    return out


def frechet_distance_features(a: torch.Tensor, b: torch.Tensor) -> float:
    """Frechet distance between the Gaussians fitted to two feature sets N1 x F and N2 x F."""
    return frechet_distance(*feature_stats(a), *feature_stats(b))


# --------------------------------------------------------------------- precision and recall


def _exact_sq(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared distances of a: ... x P x F to b: ... x Q x F by the direct formula (no
    cancellation: a point's distance to itself is exactly 0, and the same pair always gets the
    same number), as knn_predict measures them."""
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist").square_()


def _fast_sq(
    a: torch.Tensor, b: torch.Tensor, b_sq: torch.Tensor, b_norm: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared distances c x M through a matrix product (several times faster than the direct
    formula), and a bound c x M on how far each can be from _exact_sq's.

    Both are sums of d products, each within gamma_d = d * eps (relative) of exact whatever the
    summation order; with the three roundings that join them, each result lies within
    (2 gamma_d + 3 eps) (|a| + |b|)^2 of the other. The bound is doubled to cover the rounding of
    the norms themselves.
    """
    a_sq = a.pow(2).sum(1)
    d2 = torch.addmm(a_sq[:, None] + b_sq[None, :], a, b.T, alpha=-2.0)
    eps = torch.finfo(a.dtype).eps / 2
    gamma = 2 * (2 * a.shape[1] * eps + 3 * eps)
    err = (a_sq.sqrt()[:, None] + b_norm[None, :]).square_().mul_(gamma)
    return d2, err


def kth_nearest_sq(
    queries: torch.Tensor, points: torch.Tensor, kth: int, chunk: int = 512
) -> torch.Tensor:
    """Squared distance of each query to its kth nearest point (kth = 1: the nearest).
    queries: N x F, points: M x F (M >= kth) -> N values, squared feature units.

    The candidates come from fast distances; their exact distances decide, and a row whose bound
    leaves doubt is measured exactly in full, so the result is that of exact distances
    throughout. At most `chunk` x M distances at once.
    """
    m_all = len(points)
    sq = points.pow(2).sum(1)
    norm = sq.sqrt()
    m = min(m_all, kth + 8)  # a few spare candidates, so that rounding rarely leaves doubt
    out = torch.empty(len(queries), dtype=points.dtype)
    for i in range(0, len(queries), chunk):
        a = queries[i : i + chunk]
        d2, err = _fast_sq(a, points, sq, norm)
        cand_d2, cand = d2.topk(m, dim=1, largest=False, sorted=True)
        exact = _exact_sq(a[:, None, :], points[cand]).squeeze(1)  # c x m
        value = exact.kthvalue(kth, dim=1).values
        if m < m_all:
            # every point left out is at least this far: if that is beyond value, value is exact
            floor = cand_d2[:, -1] - err.max(1).values
            doubt = (floor < value).nonzero().squeeze(1)
            if len(doubt):
                full = _exact_sq(a[doubt], points)
                value[doubt] = full.kthvalue(kth, dim=1).values
        out[i : i + len(a)] = value
    return out


def nearest(
    queries: torch.Tensor, points: torch.Tensor, chunk: int = 512
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each query's nearest point: its squared distance and its index (among equally near points,
    the lowest index). queries: N x F, points: M x F (M >= 1) -> N values (squared units of F) and
    N int64 indices into points, on the CPU.

    Exact as kth_nearest_sq is: fast distances pick a few candidates, their exact distances
    decide, and a row where the fast distances' error bound leaves any doubt (a point left out
    that could be as near, and so could also tie at a lower index) is measured exactly in full.
    At most `chunk` x M distances at once.
    """
    m_all = len(points)
    sq = points.pow(2).sum(1)
    norm = sq.sqrt()
    m = min(m_all, 1 + 8)  # spare candidates, so that rounding rarely leaves doubt
    values = torch.empty(len(queries), dtype=points.dtype)
    indices = torch.empty(len(queries), dtype=torch.int64)
    for i in range(0, len(queries), chunk):
        a = queries[i : i + chunk]
        d2, err = _fast_sq(a, points, sq, norm)
        cand_d2, cand = d2.topk(m, dim=1, largest=False, sorted=True)
        exact = _exact_sq(a[:, None, :], points[cand]).squeeze(1)  # c x m
        value = exact.min(1).values
        index = torch.where(exact == value[:, None], cand, m_all).min(1).values
        if m < m_all:
            # every point left out is at least this far (exactly): if that is beyond value, no
            # point left out is as near, and the value and the lowest tied index stand
            floor = cand_d2[:, -1] - err.max(1).values
            doubt = (floor <= value).nonzero().squeeze(1)
            if len(doubt):
                full = _exact_sq(a[doubt], points)
                value[doubt] = full.min(1).values
                # argmax gives the first of several maxima: the lowest index at the minimum
                index[doubt] = (full == value[doubt][:, None]).to(torch.uint8).argmax(1)
        values[i : i + len(a)] = value.cpu()
        indices[i : i + len(a)] = index.cpu()
    return values, indices


NEAR_QUANTILE = 0.05  # "near": closer to a training image than this fraction of unseen images are


def nearness(
    distances: torch.Tensor, reference: torch.Tensor, quantile: float = NEAR_QUANTILE
) -> tuple[float, float]:
    """How near a set of images lies to the training images, against unseen real images.
    distances: M and reference: R, each image's distance to its nearest training image (the
    reference from images no model was trained on). Returns the median of `distances` over the
    median of `reference`, and the fraction of `distances` below the reference's `quantile`
    (its near copies: `quantile` for images like the reference's)."""
    near = torch.quantile(reference.double(), quantile)
    ratio = float(distances.median() / reference.median())
    return ratio, float((distances < near).double().mean())


def manifold_radii(points: torch.Tensor, k: int = PR_K, chunk: int = 512) -> torch.Tensor:
    """Squared distance of each point to its k-th nearest other point (the radius of its ball in
    the k-NN manifold estimate). points: M x F (M > k) -> M values, squared feature units.

    A point's own distance (0) is counted as its first neighbour, as in the paper's code, so a
    duplicate point counts as a neighbour at distance 0. Exact distances (kth_nearest_sq).
    """
    if len(points) <= k:
        raise VaegenError(
            f"a k-NN manifold with k = {k} needs more than {k} points, got {len(points)}"
        )
    return kth_nearest_sq(points, points, k + 1, chunk)


def ball_counts(
    queries: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk: int
) -> torch.Tensor:
    """For each query, the number of balls B(centre_i, radius_i) holding it:
    #{i : |query - centre_i|^2 <= radii[i]} (the boundary is inside). queries: M x F,
    centres: N x F, radii: N squared distances -> M int64 counts.

    Fast distances decide each pair their error bound leaves no doubt about; the rest are
    measured exactly, so the counts are those of exact distances. At most `chunk` x N at once.
    """
    sq = centres.pow(2).sum(1)
    norm = sq.sqrt()
    out = torch.empty(len(queries), dtype=torch.int64)
    for i in range(0, len(queries), chunk):
        a = queries[i : i + chunk]
        d2, err = _fast_sq(a, centres, sq, norm)
        count = (d2 + err <= radii).sum(1)
        # pairs too near a boundary to tell from the fast distance
        unsure = ((d2 - err <= radii) & (d2 + err > radii)).nonzero()
        for j in range(0, len(unsure), 1 << 16):  # bounded memory: 65,536 pairs at a time
            rows, cols = unsure[j : j + (1 << 16)].unbind(1)
            pair = _exact_sq(a[rows][:, None, :], centres[cols][:, None, :]).flatten()
            count.index_add_(0, rows, (pair <= radii[cols]).to(torch.int64))
        out[i : i + len(a)] = count
    return out


def inside_manifold(
    queries: torch.Tensor, points: torch.Tensor, radii: torch.Tensor, chunk: int = 512
) -> torch.Tensor:
    """Whether each query lies in the union of balls around `points`: some point j with
    |query - point_j|^2 <= radii[j] (squared, as manifold_radii gives them; the boundary is inside).
    queries: N x F, points: M x F, radii: M -> N bools.

    Fast distances decide every pair their error bound leaves no doubt about; the rest are
    measured exactly, so the answer is that of exact distances. At most `chunk` x M at once.
    `ball_counts(...) > 0` is the same answer; this loop stops measuring a row once it is known
    inside, which made it 12 % faster on 10,000 x 10,000 128-D features (2 AMD EPYC cores).
    """
    sq = points.pow(2).sum(1)
    norm = sq.sqrt()
    out = torch.empty(len(queries), dtype=torch.bool)
    for i in range(0, len(queries), chunk):
        a = queries[i : i + chunk]
        d2, err = _fast_sq(a, points, sq, norm)
        inside = (d2 + err <= radii).any(1)
        # pairs too close to the boundary to tell, in rows not yet known to be inside
        unsure = ((d2 - err <= radii) & ~inside[:, None]).nonzero()
        for j in range(0, len(unsure), 1 << 16):  # bounded memory: 65,536 pairs at a time
            rows, cols = unsure[j : j + (1 << 16)].unbind(1)
            pair = _exact_sq(a[rows][:, None, :], points[cols][:, None, :]).flatten()
            inside[rows[pair <= radii[cols]]] = True
        out[i : i + len(a)] = inside
    return out


def precision_recall_inside(
    real: torch.Tensor, generated: torch.Tensor, k: int = PR_K, chunk: int = 512
) -> tuple[torch.Tensor, torch.Tensor]:
    """The images precision and recall count (see precision_recall): M bools, whether each
    generated point lies inside the real manifold, and N bools, whether each real point lies
    inside the generated manifold."""
    real, generated = real.float(), generated.float()
    inside_real = inside_manifold(generated, real, manifold_radii(real, k, chunk), chunk)
    inside_gen = inside_manifold(real, generated, manifold_radii(generated, k, chunk), chunk)
    return inside_real, inside_gen


def precision_recall(
    real: torch.Tensor, generated: torch.Tensor, k: int = PR_K, chunk: int = 512
) -> tuple[float, float]:
    """Improved precision and recall (Kynkaenniemi, Karras, Laine, Lehtinen & Aila 2019).

    real: N x F and generated: M x F features. Each set's manifold is the union of balls around
    its points, each ball's radius the distance to the point's k-th nearest neighbour in its own
    set. Precision: fraction of generated points inside the real manifold (are samples
    realistic?). Recall: fraction of real points inside the generated manifold (is the data's
    variety covered?). Both in [0, 1]; identical sets give 1 and 1. Work: four passes of
    `chunk` rows against a whole set; memory: a few chunk x max(N, M) float32 arrays (about
    0.5 GB for chunk 512 and 60,000 points).
    """
    inside_real, inside_gen = precision_recall_inside(real, generated, k, chunk)
    return float(inside_real.double().mean()), float(inside_gen.double().mean())


# ----------------------------------------------------------------------------- agreement


def class_agreement(
    predicted: torch.Tensor, requested: torch.Tensor, num_classes: int
) -> tuple[float, list[float | None]]:
    """Fraction of images whose predicted class is the requested one: overall, and per requested
    class (None for a class nothing was requested of). predicted, requested: N int labels."""
    if len(requested) == 0:
        raise VaegenError("class agreement needs at least one image")
    requested = requested.cpu().to(torch.int64)
    hit = predicted.cpu().to(torch.int64) == requested
    asked = requested.bincount(minlength=num_classes)
    agreed = requested[hit].bincount(minlength=num_classes)
    per_class = [float(a) / int(n) if n else None for a, n in zip(agreed, asked, strict=True)]
    return float(hit.double().mean()), per_class
