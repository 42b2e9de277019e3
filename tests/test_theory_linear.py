"""Section 2 (timm_identity.theory.linear): Claim 2.3, Lemma 2.4, Theorems 2.1 and 2.2, the GD contrast."""
import math

import pytest
import torch

from timm_identity.theory import linear as L
from timm_identity.theory.linear import DTYPE


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_population_risk_matches_monte_carlo():
    """Claim 2.3: E||R x + xi - prod x||^2 = ||(prod - R) Sigma^{1/2}||_F^2 + d (xi ~ N(0, I))."""
    g = gen(1)
    d, l, n = 3, 3, 400_000
    R, Sigma = L.random_target(d, 0.5, g), L.random_covariance(d, g)
    A = 0.2 * torch.randn(l, d, d, dtype=DTYPE, generator=g)
    x = torch.randn(n, d, dtype=DTYPE, generator=g) @ torch.linalg.cholesky(Sigma).T
    y = x @ R.T + torch.randn(n, d, dtype=DTYPE, generator=g)
    empirical = float(((y - x @ L.network_matrix(A).T) ** 2).sum(1).mean())
    assert float(L.population_risk(A, R, Sigma)) == pytest.approx(empirical, rel=0.01)


@pytest.mark.parametrize('parameterisation', ['residual', 'standard'])
@pytest.mark.parametrize('depth', [1, 2, 5])
def test_gradient_closed_form_matches_autograd(parameterisation, depth):
    """Lemma 2.4 against autograd through Claim 2.3."""
    g = gen(depth)
    d = 4
    R, Sigma = L.random_target(d, 1.0, g), L.random_covariance(d, g)
    A = (0.3 * torch.randn(depth, d, d, dtype=DTYPE, generator=g)).requires_grad_()
    L.population_risk(A, R, Sigma, parameterisation=parameterisation).backward()
    closed = L.risk_gradient(A.detach(), R, Sigma, parameterisation)
    assert torch.allclose(A.grad, closed, rtol=1e-10, atol=1e-12)
    assert float(closed.abs().max()) > 1e-3


def test_standard_parameterisation_has_zero_gradient_at_zero():
    g = gen(2)
    R, Sigma = L.random_target(5, 0.5, g), L.random_covariance(5, g)
    zero = torch.zeros(3, 5, 5, dtype=DTYPE)
    assert torch.count_nonzero(L.risk_gradient(zero, R, Sigma, 'standard')) == 0
    assert float(L.risk_gradient(zero, R, Sigma, 'residual').abs().max()) > 0.1


def _orthogonal_with_angles(angles, extra_ones, g):
    blocks = [L.rotation(torch.tensor(a, dtype=DTYPE)) for a in angles] + [torch.eye(extra_ones, dtype=DTYPE)]
    T = torch.block_diag(*blocks)
    Q = L.random_orthogonal(T.shape[0], g)
    return Q @ T @ Q.T


@pytest.mark.parametrize('angles,ones', [
    ([], 4),                                   # identity
    ([math.pi, math.pi], 0),                   # -I: eigenvalue -1 paired into rotations by pi
    ([math.pi, 0.3, 0.3, 0.3], 1),             # repeated angle, a -1 pair, a 1x1 block
    ([0.5, 0.5 + 1e-10, 2e-9, 3.0], 1),        # nearly equal angles and a tiny one
])
def test_real_schur_of_orthogonal_matrix(angles, ones):
    g = gen(3)
    U = _orthogonal_with_angles(angles, ones, g)
    schur = L.real_schur_orthogonal(U)
    d = U.shape[0]
    assert torch.allclose(schur.S.T @ schur.S, torch.eye(d, dtype=DTYPE), atol=1e-13)
    assert float((schur.matrix() - U).abs().max()) < 1e-12
    expected = sorted(abs(a) for a in angles if a != 0)
    assert sorted(schur.angles.abs().tolist()) == pytest.approx(expected, abs=1e-9)
    # B = U^{1/q}: B^q = U and ||B - I|| = 2 sin(theta_max / 2q)
    q = 5
    B = schur.matrix(1 / q)
    assert float((torch.linalg.matrix_power(B, q) - U).abs().max()) < 1e-12
    theta = max(expected, default=0.0)
    assert float(torch.linalg.matrix_norm(B - torch.eye(d, dtype=DTYPE), ord=2)) == \
        pytest.approx(2 * math.sin(theta / (2 * q)), abs=1e-12)


@pytest.mark.parametrize('method', ['svd', 'polar'])
def test_theorem21_construction_on_random_targets(method):
    """prod = R to round-off and max ||A_i|| <= 2 (sqrt(pi) + sqrt(3 gamma))^2 / l, over sizes, condition
    numbers (gamma) and depths."""
    g = gen(4)
    checked = 0
    for d in (1, 2, 3, 6, 16):
        for gamma in (0.1, 1.0, 3.0):
            R = L.random_target(d, gamma, g)
            assert L.log_condition(R) == pytest.approx(gamma)
            for depth in (3, 9, 10, 40):
                if depth < 3 * gamma:
                    continue
                opt = L.small_norm_optimum(R, depth, method=method)
                assert opt.A.shape == (depth, d, d)
                assert float((L.network_matrix(opt.A) - R).abs().max()) < 1e-11 * max(1.0, math.exp(gamma))
                assert opt.max_norm <= opt.bound
                assert opt.max_norm == pytest.approx(L.norm_3(opt.A))
                assert sum(opt.counts) == depth
                checked += 1
    assert checked >= 35


def test_theorem21_norm_decays_like_one_over_depth():
    R = L.random_target(6, 1.0, gen(5))
    norms = {l: L.small_norm_optimum(R, l).max_norm for l in (16, 32, 64, 128)}
    for l in (16, 32, 64):
        assert norms[2 * l] / norms[l] == pytest.approx(0.5, abs=0.05)


def test_theorem21_psd_case():
    g = gen(6)
    for d, gamma, depth in ((1, 0.5, 3), (4, 1.0, 3), (8, 2.0, 7), (8, 2.0, 50)):
        R = L.random_target(d, gamma, g, psd=True)
        opt = L.psd_small_norm_optimum(R, depth)
        assert float((L.network_matrix(opt.A) - R).abs().max()) < 1e-11 * math.exp(gamma)
        assert opt.max_norm <= 3 * gamma / depth
        assert torch.allclose(opt.A[0], opt.A[-1])


def test_theorem21_errors_say_why():
    g = gen(7)
    R = L.random_target(4, 0.5, g)
    flip = torch.diag(torch.tensor([-1.0, 1, 1, 1], dtype=DTYPE))
    with pytest.raises(ValueError, match=r'det\(R\).*near-identity'):
        L.small_norm_optimum(R @ flip, 10)
    with pytest.raises(ValueError, match='too small.*3 gamma'):
        L.small_norm_optimum(L.random_target(4, 2.0, g), 5)
    with pytest.raises(ValueError, match='too small.*3 gamma'):
        L.psd_small_norm_optimum(L.random_target(4, 2.0, g, psd=True), 5)


def test_eq23_gradient_lower_bound_at_random_points():
    records = L.eq23_check(60, 4, [1, 2, 5, 10], seed=8)
    assert all(r['holds'] for r in records)
    assert all(r['rhs'] > 0 for r in records)
    with pytest.raises(ValueError, match='tau < 1'):
        L.gradient_lower_bound(torch.eye(3, dtype=DTYPE)[None] * 1.5, torch.eye(3, dtype=DTYPE),
                               torch.eye(3, dtype=DTYPE))


def test_critical_points_inside_ball_are_global_minima():
    """Theorem 2.2: searching for critical points (min ||grad f||^2) only finds global minima inside the
    ball; the standard parameterisation's search finds the saddle near A = 0 with f > C_opt."""
    records = L.critical_point_experiment(6, 3, 4, seed=9)
    found = [r for r in records if r['grad_norm_sq'] < 1e-12]
    residual_inside = [r for r in found if r['parameterisation'] == 'residual' and r['norm_3'] < 1]
    assert len(residual_inside) >= 2
    assert all(r['excess_risk'] < 1e-10 * r['initial_excess_risk'] for r in residual_inside)
    standard_bad = [r for r in found if r['parameterisation'] == 'standard' and r['excess_risk'] > 0.1]
    assert standard_bad


def test_gradient_descent_residual_converges_standard_stuck():
    runs = L.gradient_descent_experiment(5, [4], steps=600, lr=0.1, gamma=0.5, init_scales=[0.01], seed=10)
    by_label = {r['label'].split(',')[0] + (' zero' if r['init_scale'] == 0 else ''): r for r in runs}
    residual, standard_zero, standard_small = by_label['residual zero'], by_label['standard zero'], by_label['standard']
    assert residual['final_excess_risk'] < 1e-10 * residual['excess_risk'][0]
    assert standard_zero['initial_grad_norm'] == 0
    assert standard_zero['excess_risk'][-1] == standard_zero['excess_risk'][0]
    assert standard_small['final_excess_risk'] > 0.5 * standard_small['excess_risk'][0]
