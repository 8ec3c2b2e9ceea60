"""The memorisation estimators of evaluation/memorisation.py (the DCR share and authenticity)
against answers worked out by hand, direct computations and what symmetry makes of fresh draws."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vaegen.errors import VaegenError
from vaegen.evaluation.estimators import nearest
from vaegen.evaluation.memorisation import (
    authenticity,
    authenticity_share,
    dcr_share,
)


def _col(*values: float) -> torch.Tensor:
    """Points on a line as an N x 1 tensor."""
    return torch.tensor(values, dtype=torch.float64)[:, None]


def _grid(seed: int, n: int, m: int, high: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer points in 4-D, full of exact ties and duplicates (exact in float32)."""
    g = torch.Generator().manual_seed(seed)
    points = torch.randint(0, high, (n, 4), generator=g).float()
    queries = torch.randint(0, high + 1, (m, 4), generator=g).float()
    return points, queries


def _direct_sq(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """All squared distances of integer points at once, in exact integers (M x N)."""
    a64, b64 = a.numpy().astype(np.int64), b.numpy().astype(np.int64)
    return ((a64[:, None, :] - b64[None, :, :]) ** 2).sum(-1)


# ----------------------------------------------------------------------------------- DCR share


def test_dcr_share_by_hand():
    train, holdout = _col(0, 10, 20), _col(1, 12, 30)
    # 0.5: 0.5 from 0 and from 1, a tie (1/2); 2: 2 from 0, 1 from 1 (0); 9: 1 from 10, 3 from
    # 12 (1); 26: 6 from 20, 4 from 30 (0): 1.5 of 4
    generated = _col(0.5, 2, 9, 26)
    assert dcr_share(generated, train, holdout) == 0.375
    assert dcr_share(generated, train, holdout, chunk=1) == 0.375
    # the roles swapped: 1 - 0.375
    assert dcr_share(generated, holdout, train) == 0.625


def test_dcr_share_of_fresh_draws_is_one_half():
    """A fresh draw of the data's distribution is, by symmetry, as likely to lie nearer the
    training set as the held-out set (ties have probability 0): each of the M indicators is 1
    with probability exactly 1/2. Binomial sd sqrt(1/(4M)) = 0.011 for M = 2000; the draws share
    the two real sets, which adds a little; 4 sd, 0.045, is the interval."""
    g = torch.Generator().manual_seed(0)
    train, holdout, fresh = (torch.randn(2000, 4, generator=g) for _ in range(3))
    assert dcr_share(fresh, train, holdout) == pytest.approx(0.5, abs=4 * math.sqrt(1 / 8000))


def test_dcr_share_of_copies_is_one_and_of_held_out_images_zero():
    g = torch.Generator().manual_seed(1)
    train, holdout = torch.randn(500, 8, generator=g), torch.randn(500, 8, generator=g)
    # training points with noise of sd 1e-3 (about 0.003 away) against neighbours about 1 away
    copies = train[:300] + 1e-3 * torch.randn(300, 8, generator=g)
    assert dcr_share(copies, train, holdout) >= 0.99
    # the held-out points themselves: 0 from the held-out set, more than 0 from the training set
    assert dcr_share(holdout, train, holdout) == 0.0


def test_dcr_share_of_identical_real_sets_is_exactly_one_half():
    g = torch.Generator().manual_seed(2)
    train, generated = torch.randn(300, 6, generator=g), torch.randn(200, 6, generator=g)
    assert dcr_share(generated, train, train.clone()) == 0.5
    # in another order: the same pairs, the same exact distances, every one a tie
    assert dcr_share(generated, train, train[torch.randperm(300, generator=g)], chunk=7) == 0.5
    # copies of the training set too: 0 from either
    assert dcr_share(train, train, train.clone()) == 0.5


def test_dcr_share_refuses_real_sets_of_different_sizes():
    g = torch.Generator().manual_seed(3)
    with pytest.raises(VaegenError, match="got 100 training and 80 held-out points"):
        dcr_share(torch.randn(10, 3, generator=g), torch.randn(100, 3), torch.randn(80, 3))
    with pytest.raises(VaegenError, match="same number of features"):
        dcr_share(torch.randn(10, 3), torch.randn(5, 3), torch.randn(5, 2))
    with pytest.raises(VaegenError, match="at least one generated"):
        dcr_share(torch.zeros(0, 3), torch.randn(5, 3), torch.randn(5, 3))


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
def test_dcr_share_in_chunks_equals_a_direct_computation(chunk):
    """Integer points, full of exact ties (each counted one half), near the origin and far from it
    (where the matrix product's rounding swamps the distances and exact distances must decide)."""
    holdout, generated = _grid(4, 150, 200)
    train, _ = _grid(5, 150, 0)
    to_train = _direct_sq(generated, train).min(1)
    to_holdout = _direct_sq(generated, holdout).min(1)
    want = float(np.mean((to_train < to_holdout) + 0.5 * (to_train == to_holdout)))
    assert 0.2 < float(np.mean(to_train == to_holdout)) < 0.8  # ties matter here
    assert dcr_share(generated, train, holdout, chunk=chunk) == want
    assert dcr_share(generated + 3000, train + 3000, holdout + 3000, chunk=chunk) == want
    # images (N x C x H x W) are flat rows
    images = [t.reshape(-1, 1, 2, 2) for t in (generated, train, holdout)]
    assert dcr_share(*images, chunk=chunk) == want


# -------------------------------------------------------------------------------- authenticity


def test_authenticity_by_hand():
    # training points 0, 1, 5, 11: their nearest others are 1, 1, 4 and 6 away
    train = _col(0, 1, 5, 11)
    generated = _col(0.25, 2.5, 7, 9.5, 20, -1)
    # 0.25: 0.25 from 0 (<= 1, no); 2.5: 1.5 from 1 (> 1, yes); 7: 2 from 5 (<= 4, no); 9.5: 1.5
    # from 11 (<= 6, no); 20: 9 from 11 (> 6, yes); -1: 1 from 0, a tie with 0's 1 (no)
    want = [False, True, False, False, True, False]
    assert authenticity(generated, train).tolist() == want
    assert authenticity(generated, train, chunk=1).tolist() == want
    assert authenticity_share(generated, train) == pytest.approx(2 / 6)


def test_authenticity_with_a_duplicated_training_point():
    # 3 is in the training set twice: its nearest other point is 0 away
    train = _col(0, 3, 3, 10)
    # an exact copy of it: 0 <= 0, unauthentic; a point 0.5 from it: 0.5 > 0, authentic; an exact
    # copy of 0: unauthentic as every exact copy is
    generated = _col(3, 3.5, 0)
    assert authenticity(generated, train).tolist() == [False, True, False]


def test_copies_of_training_points_are_unauthentic():
    g = torch.Generator().manual_seed(6)
    train = torch.randn(500, 8, generator=g)
    # noise about 0.003 away, nearest other training points about 1 away
    copies = train[:300] + 1e-3 * torch.randn(300, 8, generator=g)
    assert not authenticity(copies, train).any()
    assert authenticity_share(train, train) == 0.0


def test_fresh_draws_on_a_line_are_one_third_authentic():
    """A fresh draw g is unauthentic exactly when g and its nearest training point are each
    other's nearest neighbours among the N + 1 points; by exchangeability that is the chance that
    a point of N + 1 uniform draws has a mutual nearest neighbour, 2/3 on a line for large N (at
    unit density the nearest neighbour lies r away with density 2 exp(-2r), and the neighbour's
    next point beyond lies farther than r with chance exp(-r): the integral is 2/3).
    Expected share 1/3. One set's share spreads with sd about 0.02 (the draws share the training
    set); the mean of 10 independent sets, about 0.006; the interval 0.03."""
    g = torch.Generator().manual_seed(7)
    shares = [
        authenticity_share(torch.rand(3000, 1, generator=g), torch.rand(2000, 1, generator=g))
        for _ in range(10)
    ]
    assert float(np.mean(shares)) == pytest.approx(1 / 3, abs=0.03)


def test_fresh_draws_in_8d_are_mostly_authentic_as_mutual_neighbours_predict():
    """In 8-D (Gaussian) the chance of a mutual nearest neighbour is below 1/2, so fresh draws are
    mostly authentic; its value, measured directly on independent sets of N + 1 points (the
    share of points that are their nearest neighbour's nearest neighbour), predicts the share.
    Each mean of 10 sets spreads with sd about 0.005; the interval 0.03."""
    g = torch.Generator().manual_seed(8)
    n = 1000
    shares, unpaired = [], []
    for _ in range(10):
        train, fresh = torch.randn(n, 8, generator=g), torch.randn(2000, 8, generator=g)
        shares.append(authenticity_share(fresh, train))
        s = torch.randn(n + 1, 8, generator=g)
        d = torch.cdist(s, s).fill_diagonal_(math.inf)
        nn = d.argmin(1)
        unpaired.append(float((nn[nn] != torch.arange(n + 1)).double().mean()))
    assert float(np.mean(shares)) > 0.5
    assert float(np.mean(shares)) == pytest.approx(float(np.mean(unpaired)), abs=0.03)


def test_authenticity_needs_two_training_points():
    with pytest.raises(VaegenError, match="at least 2 training points"):
        authenticity(_col(1), _col(0))


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
def test_nearest_equals_a_direct_argmin(chunk):
    """Value and index (the lowest among ties) against all distances at once, on integer points
    full of ties and duplicates, near the origin and far from it."""
    points, queries = _grid(9, 300, 250)
    direct = _direct_sq(queries, points)
    want_value, want_index = direct.min(1), direct.argmin(1)  # argmin: the first minimum
    assert float(np.mean((direct == want_value[:, None]).sum(1) > 1)) > 0.5  # ties matter here
    # exact distances are float32 square roots of exact integer sums, squared again
    want_sq = torch.from_numpy(want_value).float().sqrt().square()
    for shift in (0.0, 3000.0):
        value, index = nearest(queries + shift, points + shift, chunk)
        assert torch.equal(value, want_sq)
        assert index.tolist() == want_index.tolist()


def test_nearest_takes_the_lowest_of_many_tied_indices_when_the_bound_is_zero():
    """40 points and the queries all at the origin: every fast distance and its error bound are
    exactly 0, so the candidates alone cannot rule out a tie at a lower index left out of them."""
    value, index = nearest(torch.zeros(3, 2), torch.zeros(40, 2), chunk=2)
    assert value.tolist() == [0.0] * 3
    assert index.tolist() == [0] * 3
