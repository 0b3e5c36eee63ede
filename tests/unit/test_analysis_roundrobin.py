"""Tests for analysis.roundrobin: cycle maps of round-robin EASGD and linearized ADMM."""

import numpy as np
import pytest

from analysis import roundrobin as rr

# ---------------------------------------------------------------- hand-built maps, p = 2


def _easgd_hand_p2(worker, eta, h, alpha):
    """F^i on (x_1, x_2, x~), written out by hand."""
    a, b = 1.0 - eta * h - alpha, 1.0 - alpha
    if worker == 0:
        return np.array([[a, 0.0, alpha], [0.0, 1.0, 0.0], [alpha, 0.0, b]])
    return np.array([[1.0, 0.0, 0.0], [0.0, a, alpha], [0.0, alpha, b]])


def _admm_hand_p2(worker, eta, h, rho):
    """Worker update on (lambda_1, x_1, lambda_2, x_2, x~), derived by hand.

    lambda' = lambda - x + c;  x' = (a x + k (lambda' + c)) / d = (k lambda + (a - k) x + 2k c)/d;
    c' = (x_1' + x_2' - lambda_1' - lambda_2') / 2,  with a = 1 - eta h, k = eta rho, d = 1 + k.
    """
    a, k = 1.0 - eta * h, eta * rho
    d = 1.0 + k
    lam = [1.0, -1.0, 1.0]  # coefficients of (lambda_i, x_i, c) in lambda_i'
    x = [k / d, (a - k) / d, 2 * k / d]  # same for x_i'
    m = np.eye(5)
    li, xi = 2 * worker, 2 * worker + 1
    lo, xo = 2 * (1 - worker), 2 * (1 - worker) + 1  # the idle worker
    m[li] = 0.0
    m[li, [li, xi, 4]] = lam
    m[xi] = 0.0
    m[xi, [li, xi, 4]] = x
    c = np.zeros(5)
    c[[li, xi, 4]] += np.array(x) - np.array(lam)
    c[xo] += 1.0
    c[lo] -= 1.0
    m[4] = c / 2.0
    return m


def test_easgd_maps_match_hand_built_p2():
    eta, h, alpha = 0.07, 1.3, 0.21
    w = [_easgd_hand_p2(i, eta, h, alpha) for i in range(2)]
    for i in range(2):
        np.testing.assert_allclose(rr.easgd_worker_map(i, 2, eta, h, alpha), w[i], atol=1e-15)
    np.testing.assert_allclose(rr.easgd_cycle_map(2, eta, h, alpha), w[1] @ w[0], atol=1e-15)


def test_admm_maps_match_hand_built_p2():
    eta, h, rho = 0.1, 1.0, 2.0
    w = [_admm_hand_p2(i, eta, h, rho) for i in range(2)]
    # spot values worked out on paper for eta = 0.1, h = 1, rho = 2 (k = 0.2, d = 1.2)
    np.testing.assert_allclose(w[0][1], [1 / 6, 7 / 12, 0, 0, 1 / 3])
    np.testing.assert_allclose(w[0][4], [-5 / 12, 19 / 24, -1 / 2, 1 / 2, -1 / 3])
    for i in range(2):
        np.testing.assert_allclose(rr.admm_worker_map(i, 2, eta, h, rho), w[i], atol=1e-15)
    np.testing.assert_allclose(rr.admm_cycle_map(2, eta, h, rho), w[1] @ w[0], atol=1e-15)


# ---------------------------------------------------------------- reference values


def test_reference_spectral_radii_p3():
    """Independent check values from the reference: p = 3, eta = 0.001, rho = 2.5, h = 1."""
    admm = float(rr.admm_cycle_radius(3, 0.001, 1.0, 2.5))
    easgd = float(rr.easgd_cycle_radius(3, 0.001, 1.0, 0.001 * 2.5))
    assert abs(admm - 1.000974) <= 1e-6
    assert abs(easgd - 0.99927) <= 5e-6
    assert admm > 1.0 > easgd


# ---------------------------------------------------------------- structure and batching


def _shift(p, block):
    """Permutation moving worker j's block to worker j+1 (mod p); the center stays."""
    n = p * block + 1
    s = np.zeros((n, n))
    for j in range(p):
        for b in range(block):
            s[((j + 1) % p) * block + b, j * block + b] = 1.0
    s[-1, -1] = 1.0
    return s


@pytest.mark.parametrize("p", [2, 3, 5])
def test_cycle_is_power_of_shifted_first_worker(p):
    """F^(i+1) = S^i F^1 S^-i, hence cycle = F^p...F^1 = (S^-1 F^1)^p, exactly."""
    rng = np.random.default_rng(p)
    eta, h, k = rng.uniform(1e-3, 0.5), rng.uniform(0.5, 2.0), rng.uniform(0.05, 0.6)
    for scheme, block in (("easgd", 1), ("admm", 2)):
        worker_map = rr.easgd_worker_map if scheme == "easgd" else rr.admm_worker_map
        cycle_map = rr.easgd_cycle_map if scheme == "easgd" else rr.admm_cycle_map
        s = _shift(p, block)
        f1 = worker_map(0, p, eta, h, k)
        for i in range(p):
            si = np.linalg.matrix_power(s, i)
            np.testing.assert_allclose(worker_map(i, p, eta, h, k), si @ f1 @ si.T, atol=1e-14)
        expected = np.linalg.matrix_power(s.T @ f1, p)
        np.testing.assert_allclose(cycle_map(p, eta, h, k), expected, atol=1e-12)


def test_batched_radius_matches_pointwise():
    rng = np.random.default_rng(0)
    eta = rng.uniform(1e-4, 1e-2, size=(3, 4))
    rho = rng.uniform(0.1, 10.0, size=(3, 4))
    batched = rr.admm_cycle_radius(4, eta, 1.0, rho, chunk=5)
    easgd = rr.easgd_cycle_radius(4, eta, 1.0, eta * rho, chunk=5)
    assert batched.shape == easgd.shape == (3, 4)
    for idx in np.ndindex(3, 4):
        m = rr.admm_cycle_map(4, float(eta[idx]), 1.0, float(rho[idx]))
        assert m.shape == (9, 9)
        assert batched[idx] == pytest.approx(np.abs(np.linalg.eigvals(m)).max(), abs=1e-12)
        m = rr.easgd_cycle_map(4, float(eta[idx]), 1.0, float(eta[idx] * rho[idx]))
        assert easgd[idx] == pytest.approx(np.abs(np.linalg.eigvals(m)).max(), abs=1e-12)


def test_radius_map_orientation():
    etas, rhos, radius = rr.radius_map("admm", 3, n=6)
    assert radius.shape == (6, 6)
    np.testing.assert_allclose(etas, 1e-2 * (np.arange(6) + 0.5) / 6)
    j, k = 4, 1  # row = rho, column = eta
    assert radius[j, k] == pytest.approx(float(rr.admm_cycle_radius(3, etas[k], 1.0, rhos[j])))
    assert radius[j, k] != pytest.approx(float(rr.admm_cycle_radius(3, etas[j], 1.0, rhos[k])))


# ---------------------------------------------------------------- trajectories


def _admm_loop(p, eta, h, rho, lam, x, c, n_steps):
    """The ADMM round robin with plain Python floats, straight from the update rules."""
    lam, x, out = list(lam), list(x), [c]
    for t in range(n_steps):
        i = t % p
        lam[i] = lam[i] - (x[i] - c)
        x[i] = (x[i] - eta * h * x[i] + eta * rho * (lam[i] + c)) / (1 + eta * rho)
        c = sum(xj - lj for xj, lj in zip(x, lam, strict=True)) / p
        out.append(c)
    return np.array(out)


def _easgd_loop(p, eta, h, alpha, x, c, n_steps):
    x, out = list(x), [c]
    for t in range(n_steps):
        i = t % p
        x[i], c = (1 - eta * h - alpha) * x[i] + alpha * c, alpha * x[i] + (1 - alpha) * c
        out.append(c)
    return np.array(out)


def test_trajectories_match_plain_loops():
    p, eta, h, rho, n = 3, 0.01, 1.0, 2.5, 200
    rng = np.random.default_rng(1)
    lam, x, c = rng.normal(size=p), rng.normal(size=p), 0.3
    s0 = np.empty(2 * p + 1)
    s0[0:-1:2], s0[1::2], s0[-1] = lam, x, c
    got = rr.trajectory("admm", p, eta, h, rho, s0, n)
    assert got.shape == (n + 1, 2 * p + 1)
    np.testing.assert_allclose(got[:, -1], _admm_loop(p, eta, h, rho, lam, x, c, n), rtol=1e-11)
    got = rr.trajectory("easgd", p, eta, h, eta * rho, np.append(x, c), n)
    np.testing.assert_allclose(got[:, -1], _easgd_loop(p, eta, h, eta * rho, x, c, n), rtol=1e-11)


def test_admm_diverges_and_easgd_converges_from_1000():
    """The paper's example: ADMM's center eventually blows up, EASGD's goes to 0."""
    p, eta, rho = 3, 0.001, 2.5
    s0 = np.zeros(2 * p + 1)
    s0[1::2], s0[-1] = 1000.0, 1000.0
    admm = rr.trajectory("admm", p, eta, 1.0, rho, s0, 60_000)[:, -1]
    easgd = rr.trajectory("easgd", p, eta, 1.0, eta * rho, np.full(p + 1, 1000.0), 60_000)[:, -1]
    assert np.abs(admm[-300:]).max() > 1e6
    assert np.abs(easgd[-300:]).max() < 1e-2


# ---------------------------------------------------------------- analytic EASGD condition


def test_analytic_condition_is_exact_for_the_2x2_block():
    rng = np.random.default_rng(2)
    n = 20_000
    h = rng.uniform(0.2, 3.0, n)
    eta = rng.uniform(-1.0, 5.0, n) / h
    alpha = rng.uniform(-1.0, 3.0, n)
    # eigenvalues of [[1 - eta h - alpha, alpha], [alpha, 1 - alpha]], built here by hand
    blocks = np.stack(
        [np.stack([1 - eta * h - alpha, alpha], -1), np.stack([alpha, 1 - alpha], -1)], -2
    )
    radius = np.abs(np.linalg.eigvals(blocks)).max(-1)
    keep = np.abs(radius - 1.0) > 1e-9  # drop draws on the boundary itself
    analytic = rr.easgd_analytic_stable(eta, h, alpha)
    assert keep.mean() > 0.99 and 0.05 < analytic.mean() < 0.5
    np.testing.assert_array_equal(analytic[keep], radius[keep] <= 1.0)


def test_analytic_condition_is_sufficient_not_necessary_for_the_cycle():
    rng = np.random.default_rng(3)
    for p in (2, 3, 5, 8):
        u = rng.uniform(0.0, 2.0, 2000)
        alpha = rng.uniform(0.0, 1.0, 2000) * rr.easgd_alpha_bound(u)
        assert rr.easgd_analytic_stable(u, 1.0, alpha).all()
        assert (rr.easgd_cycle_radius(p, u, 1.0, alpha) <= 1.0 + 1e-12).all()
    # p = 2, eta h = 0.98, alpha = 0.7: the block has an eigenvalue below -1, the cycle is stable
    assert not rr.easgd_analytic_stable(0.98, 1.0, 0.7)
    assert rr.easgd_block_radius(0.98, 1.0, 0.7) > 1.0
    assert rr.easgd_cycle_radius(2, 0.98, 1.0, 0.7) < 0.98
