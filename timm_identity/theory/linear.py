"""Linear residual networks: Section 2 and Appendix A of Hardt & Ma, "Identity Matters in Deep Learning".

Model: ``y_hat = (I + A_l) ... (I + A_1) x`` with ``A_j`` in R^{d x d}; data ``y = R x + xi`` with
``xi ~ N(0, noise_var * I_d)`` and ``Sigma = E[x x^T]``. The weights ``A = (A_1, ..., A_l)`` are held as one
tensor of shape ``(l, d, d)``; ``A[0]`` is ``A_1``, the layer applied first. ``|||A||| = max_j ||A_j||``
(spectral norm).

- :func:`population_risk` -- Claim 2.3, ``f(A) = ||(prod - R) Sigma^{1/2}||_F^2 + C`` with ``C = d * noise_var``.
- :func:`risk_gradient` -- Lemma 2.4, ``df/dA_i = 2 (I + A_l^T)...(I + A_{i+1}^T) E Sigma
  (I + A_{i-1}^T)...(I + A_1^T)`` with ``E = prod - R``.
- :func:`small_norm_optimum` / :func:`psd_small_norm_optimum` -- Theorem 2.1, constructive.
- :func:`gradient_lower_bound` -- Theorem 2.2 in its quantitative form (eq. 2.3).
- :func:`gradient_descent` -- plain gradient descent on ``f`` for the residual parameterisation and for the
  standard one, ``y_hat = A_l ... A_1 x`` (Section 2's contrast: ``A = 0`` is a critical point there).

Everything is float64 torch on CPU.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal

import torch
from torch import Tensor

Parameterisation = Literal['residual', 'standard']
DTYPE = torch.float64


# ---------------------------------------------------------------------------------------------------------
# The model, its risk and its gradient (Claim 2.3, Lemma 2.4)
# ---------------------------------------------------------------------------------------------------------

def _factors(A: Tensor, parameterisation: Parameterisation = 'residual') -> Tensor:
    """The layer matrices: ``I + A_j`` (residual) or ``A_j`` (standard), shape ``(l, d, d)``."""
    if A.dim() != 3 or A.shape[1] != A.shape[2]:
        raise ValueError(f'A must have shape (l, d, d); got {tuple(A.shape)}')
    if parameterisation == 'residual':
        return A + torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)
    if parameterisation == 'standard':
        return A
    raise ValueError(f"parameterisation must be 'residual' or 'standard'; got {parameterisation!r}")


def chain_product(F: Tensor) -> Tensor:
    """``F_l ... F_1`` for ``F`` of shape ``(l, d, d)`` (``F[0]`` applied first); identity when ``l = 0``."""
    out = torch.eye(F.shape[-1], dtype=F.dtype, device=F.device)
    for F_j in F:
        out = F_j @ out
    return out


def network_matrix(A: Tensor, parameterisation: Parameterisation = 'residual') -> Tensor:
    """The end-to-end map: ``(I + A_l)...(I + A_1)`` (residual) or ``A_l...A_1`` (standard)."""
    return chain_product(_factors(A, parameterisation))


def norm_3(A: Tensor) -> float:
    """``|||A||| = max_j ||A_j||`` (largest spectral norm over the layers)."""
    return float(torch.linalg.matrix_norm(A, ord=2).max()) if A.shape[0] else 0.0


def _psd_sqrt(Sigma: Tensor) -> Tensor:
    w, Q = torch.linalg.eigh(Sigma)
    if float(w.min()) < -1e-12 * max(1.0, float(w.abs().max())):
        raise ValueError('Sigma must be positive semi-definite')
    return (Q * w.clamp_min(0).sqrt()) @ Q.T


def population_risk(A: Tensor, R: Tensor, Sigma: Tensor, noise_var: float = 1.0,
                    parameterisation: Parameterisation = 'residual') -> Tensor:
    """Claim 2.3: ``f(A) = E||y - y_hat||^2 = ||(prod - R) Sigma^{1/2}||_F^2 + C``, ``C = d * noise_var``.

    Differentiable in ``A`` (used to check :func:`risk_gradient` against autograd).
    """
    E = network_matrix(A, parameterisation) - R
    return torch.linalg.matrix_norm(E @ _psd_sqrt(Sigma)) ** 2 + R.shape[0] * noise_var


def excess_risk(A: Tensor, R: Tensor, Sigma: Tensor, parameterisation: Parameterisation = 'residual') -> float:
    """``f(A) - C_opt = ||(prod - R) Sigma^{1/2}||_F^2`` (``C_opt = C``: the optimum ``prod = R`` is reachable)."""
    E = network_matrix(A, parameterisation) - R
    return float(torch.trace(E @ Sigma @ E.T))


def risk_gradient(A: Tensor, R: Tensor, Sigma: Tensor,
                  parameterisation: Parameterisation = 'residual') -> Tensor:
    """Lemma 2.4: ``df/dA_i = 2 P_{>i}^T E Sigma P_{<i}^T`` with ``E = prod - R``, ``P_{>i} = F_l...F_{i+1}``
    and ``P_{<i} = F_{i-1}...F_1`` (``F_j = I + A_j``; for the standard parameterisation ``F_j = A_j``).

    Computed with prefix and suffix products (O(l) matrix products), shape ``(l, d, d)``.
    """
    F = _factors(A, parameterisation)
    l, d = F.shape[0], F.shape[-1]
    eye = torch.eye(d, dtype=F.dtype, device=F.device)
    before = [eye]  # before[i] = F_i ... F_1 (i factors)
    for F_j in F:
        before.append(F_j @ before[-1])
    after = [eye]  # after[i] = F_l ... F_{l-i+1} (i factors)
    for F_j in reversed(F):
        after.append(after[-1] @ F_j)
    E_Sigma = (before[l] - R) @ Sigma
    return torch.stack([2 * after[l - 1 - i].T @ E_Sigma @ before[i].T for i in range(l)])


# ---------------------------------------------------------------------------------------------------------
# Theorem 2.2 / eq. (2.3)
# ---------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GradientBound:
    """Both sides of eq. (2.3): ``lhs = ||grad f(A)||_F^2 >= rhs = 4 l (1 - tau)^{2(l-1)} sigma_min(Sigma)
    (f(A) - C_opt)``, for ``|||A||| <= tau < 1``."""
    lhs: float
    rhs: float
    tau: float
    norm_3: float
    excess_risk: float

    @property
    def holds(self) -> bool:
        return self.lhs >= self.rhs * (1 - 1e-12)


def gradient_lower_bound(A: Tensor, R: Tensor, Sigma: Tensor, tau: float | None = None) -> GradientBound:
    """Theorem 2.2, quantitative form (eq. 2.3): for every ``A`` with ``|||A||| <= tau < 1``,

        ``||grad f(A)||_F^2 >= 4 l (1 - tau)^{2(l-1)} sigma_min(Sigma) (f(A) - C_opt)``,

    so a critical point inside the ball has ``f(A) = C_opt``: it is a global minimum. Proof: each
    ``I + A_j`` has ``sigma_min >= 1 - tau``, so by Lemma 2.4 ``||df/dA_i||_F >= 2 (1 - tau)^{l-1}
    ||E Sigma||_F`` and ``||E Sigma||_F^2 >= sigma_min(Sigma) ||E Sigma^{1/2}||_F^2 = sigma_min(Sigma)
    (f - C_opt)``. (The exponent ``2(l-1)`` and the single power of ``sigma_min(Sigma)`` are what this
    argument gives; both sides then scale alike when ``Sigma`` is scaled.)

    ``tau`` defaults to ``|||A|||``; a given ``tau`` must satisfy ``|||A||| <= tau < 1``.
    """
    n3 = norm_3(A)
    tau = n3 if tau is None else float(tau)
    if not n3 <= tau + 1e-12 or not tau < 1:
        raise ValueError(f'eq. (2.3) needs |||A||| <= tau < 1; got |||A||| = {n3:.6g}, tau = {tau:.6g}')
    l = A.shape[0]
    lhs = float(torch.sum(risk_gradient(A, R, Sigma) ** 2))
    gap = excess_risk(A, R, Sigma)
    sigma_min = float(torch.linalg.eigvalsh(Sigma)[0])
    rhs = 4 * l * (1 - tau) ** (2 * (l - 1)) * sigma_min * gap
    return GradientBound(lhs=lhs, rhs=rhs, tau=tau, norm_3=n3, excess_risk=gap)


# ---------------------------------------------------------------------------------------------------------
# Theorem 2.1: a global optimum of small norm, constructively
# ---------------------------------------------------------------------------------------------------------

def rotation(theta: Tensor) -> Tensor:
    """``T(theta) = [[cos, -sin], [sin, cos]]`` for each angle, shape ``(..., 2, 2)``."""
    c, s = torch.cos(theta), torch.sin(theta)
    return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)


@dataclass(frozen=True)
class RealSchur:
    """``U = S T S^T`` with ``S`` orthogonal and ``T = diag(T(theta_1), ..., T(theta_m), 1, ..., 1)``:
    2x2 rotation blocks in the first ``2m`` columns of ``S``, then 1x1 blocks ``+1``."""
    S: Tensor
    angles: Tensor

    def block_matrix(self, power: float = 1.0) -> Tensor:
        """``T^power`` where each rotation angle is multiplied by ``power``: ``diag(T(power theta_i), 1...)``."""
        d = self.S.shape[0]
        T = torch.eye(d, dtype=self.S.dtype)
        for i, theta in enumerate(self.angles * power):
            T[2 * i:2 * i + 2, 2 * i:2 * i + 2] = rotation(theta)
        return T

    def matrix(self, power: float = 1.0) -> Tensor:
        """``S T^power S^T`` (``power = 1/q`` gives the rotation ``B`` of the proof with ``B^q = U``)."""
        return self.S @ self.block_matrix(power) @ self.S.T

    @property
    def max_angle(self) -> float:
        return float(self.angles.abs().max()) if self.angles.numel() else 0.0


def real_schur_orthogonal(U: Tensor, tol_cos: float = 1e-9, tol_sin: float = 1e-12) -> RealSchur:
    """Real Schur form of an orthogonal ``U`` with ``det(U) = +1``: ``U = S diag(T(theta_i), 1, ...) S^T``.

    Without a Schur routine: ``U`` is normal, so it commutes with ``M = (U + U^T)/2`` (eigenvalues
    ``cos theta``) and with the Hermitian ``H = i (U - U^T)/2`` (eigenvalues ``-sin theta``). Eigenspaces of
    ``M`` (eigenvalues grouped when closer than ``tol_cos``) are ``U``-invariant; inside each, an eigenvector
    ``z = (x + i y)/sqrt 2`` of ``H`` with ``sin theta > 0`` gives the orthonormal pair ``x, y`` that spans a
    rotation block. What is left (``|sin theta| <= tol_sin``) is ``+1`` (1x1 blocks) or ``-1``, which has even
    multiplicity when ``det U = +1`` and is paired into rotations by ``theta = pi``. Angles within
    ``tol_sin`` of 0 or pi are rounded to it, an error of that size in ``U = S T S^T``.
    """
    d = U.shape[0]
    U = U.to(DTYPE)
    if float(torch.linalg.matrix_norm(U.T @ U - torch.eye(d, dtype=DTYPE))) > 1e-8:
        raise ValueError('real_schur_orthogonal needs an orthogonal matrix')
    if float(torch.linalg.det(U)) < 0:
        raise ValueError('real_schur_orthogonal needs det(U) = +1 (a rotation)')
    c, Q = torch.linalg.eigh((U + U.T) / 2)
    split = (torch.nonzero(torch.diff(c) > tol_cos).flatten() + 1).tolist()
    pairs: list[Tensor] = []     # (d, 2) bases of rotation blocks
    fixed: list[Tensor] = []     # (d, 1) eigenvectors for +1
    for lo, hi in zip([0] + split, split + [d]):
        Qc = Q[:, lo:hi]
        Uc = Qc.T @ U @ Qc
        s, Z = torch.linalg.eigh(1j * (Uc - Uc.T).to(torch.complex128) / 2)
        pos = s < -tol_sin
        if int(pos.sum()) != int((s > tol_sin).sum()):
            raise RuntimeError('real_schur_orthogonal: eigenvalues of U do not come in conjugate pairs')
        for z in Z[:, pos].T:
            pairs.append(Qc @ (math.sqrt(2) * torch.stack([z.real, z.imag], 1)))
        real = Z[:, s.abs() <= tol_sin]
        if real.shape[1]:
            # a real orthonormal basis of the (conjugation-invariant) eigenspace of U for +1 or -1
            basis = torch.linalg.svd(torch.cat([real.real, real.imag], 1), full_matrices=False)[0]
            basis = Qc @ basis[:, :real.shape[1]]
            if float(c[lo:hi].mean()) > 0:
                fixed.extend(basis.T[:, :, None])
            else:
                if basis.shape[1] % 2:
                    raise RuntimeError('real_schur_orthogonal: eigenvalue -1 with odd multiplicity')
                pairs.extend(basis[:, i:i + 2] for i in range(0, basis.shape[1], 2))
    S = torch.cat(pairs + fixed, 1)
    # the angle of each block as U acts on it; a -1 pair reads atan2(+-0, -1) = +-pi, a rotation by pi
    angles = torch.stack([torch.atan2(P[:, 1] @ U @ P[:, 0], P[:, 0] @ U @ P[:, 0]) for P in pairs]) \
        if pairs else torch.zeros(0, dtype=DTYPE)
    return RealSchur(S=S, angles=angles)


def log_condition(R: Tensor) -> float:
    """``gamma = max(|log sigma_max(R)|, |log sigma_min(R)|)`` (Theorem 2.1)."""
    sv = torch.linalg.svdvals(R.to(DTYPE))
    return max(abs(math.log(float(sv[0]))), abs(math.log(float(sv[-1])))) if float(sv[-1]) > 0 else math.inf


def theorem21_bound(gamma: float, depth: int) -> float:
    """Theorem 2.1's bound ``2 (sqrt(pi) + sqrt(3 gamma))^2 / l`` on ``|||A*|||``."""
    return 2 * (math.sqrt(math.pi) + math.sqrt(3 * gamma)) ** 2 / depth


def psd_theorem21_bound(gamma: float, depth: int) -> float:
    """Theorem 2.1's PSD special case: ``|||A*||| <= 3 gamma / l``."""
    return 3 * gamma / depth


@dataclass(frozen=True)
class SmallNormOptimum:
    """A global optimum of Theorem 2.1: ``(I + A_l)...(I + A_1) = R``.

    ``counts``: how many factors each component got, in the order they act on ``x``: ``(V^T, K, U)`` for
    ``method='svd'`` (the paper's ``(q, p, q)``), ``(P, O)`` for ``method='polar'``, ``(l,)`` for the PSD
    case. ``residual`` = ``||prod - R|| / ||R||`` (spectral norms).
    """
    A: Tensor
    gamma: float
    bound: float
    max_norm: float
    residual: float
    counts: tuple[int, ...]
    method: str


def _check_theorem21_input(R: Tensor, depth: int) -> float:
    if R.dim() != 2 or R.shape[0] != R.shape[1]:
        raise ValueError(f'R must be a square matrix; got shape {tuple(R.shape)}')
    det = float(torch.linalg.det(R))
    if not det > 0:
        raise ValueError(
            f'det(R) = {det:.6g} <= 0: Theorem 2.1 needs det(R) > 0. Every I + A_j with ||A_j|| < 1 has '
            'positive determinant (its eigenvalues never cross 0), so a product of near-identity matrices '
            'cannot have det <= 0; the paper reaches such R only by adding an output dimension.')
    gamma = log_condition(R)
    if depth < 3 * gamma * (1 - 1e-12):  # (round-off in gamma)
        raise ValueError(f'depth l = {depth} is too small: Theorem 2.1 needs l >= 3 gamma = {3 * gamma:.6g} '
                         f'(gamma = max |log sigma(R)| = {gamma:.6g}).')
    return gamma


def _finish(R: Tensor, F: Tensor, gamma: float, bound: float, counts: tuple[int, ...],
            method: str) -> SmallNormOptimum:
    A = F - torch.eye(R.shape[0], dtype=DTYPE)
    residual = float(torch.linalg.matrix_norm(chain_product(F) - R, ord=2) / torch.linalg.matrix_norm(R, ord=2))
    return SmallNormOptimum(A=A, gamma=gamma, bound=bound, max_norm=norm_3(A), residual=residual,
                            counts=counts, method=method)


@dataclass(frozen=True)
class _Component:
    """A factor of R split into ``n`` equal near-identity factors: ``root(n)^n = matrix``."""
    root: Callable[[int], Tensor]
    factor_norm: Callable[[int], float]   # ||root(n) - I||; inf for n = 0 unless the component is I

    @staticmethod
    def rotation(schur: RealSchur) -> '_Component':
        theta = schur.max_angle
        return _Component(root=lambda n: schur.matrix(1 / n),
                          factor_norm=lambda n: (2 * math.sin(theta / (2 * n)) if n
                                                 else (0.0 if theta == 0 else math.inf)))

    @staticmethod
    def scaling(log_k: Tensor, basis: Tensor | None = None) -> '_Component':
        """``basis diag(k^{1/n}) basis^T`` (``basis = None``: the diagonal ``K' = diag(k^{1/n})``)."""
        # singular values within round-off of 1 are 1: the SVD of an orthogonal matrix returns 1 +- eps
        log_k = torch.where(log_k.abs() <= 64 * torch.finfo(DTYPE).eps, torch.zeros_like(log_k), log_k)
        trivial = bool((log_k == 0).all())

        def root(n: int) -> Tensor:
            K = torch.diag(torch.exp(log_k / n))
            return K if basis is None else basis @ K @ basis.T
        return _Component(root=root, factor_norm=lambda n: float((torch.exp(log_k / n) - 1).abs().max()) if n
                          else (0.0 if trivial else math.inf))


def _split_depth(components: list[_Component], depth: int) -> list[int]:
    """Give the ``depth`` factors one at a time to the component whose factor norm is largest (this minimises
    the largest factor norm, as each norm decreases with its count)."""
    counts = [0] * len(components)
    for _ in range(depth):
        current = [comp.factor_norm(n) for comp, n in zip(components, counts)]
        counts[max(range(len(counts)), key=current.__getitem__)] += 1
    if any(math.isinf(comp.factor_norm(n)) for comp, n in zip(components, counts)):
        raise ValueError(f'depth l = {depth} is too small for the construction: it needs at least one factor '
                         f'for each of its {len(components)} components that is not the identity.')
    return counts


def _rotation_part(U: Tensor, tol_cos: float, tol_sin: float) -> _Component:
    return _Component.rotation(real_schur_orthogonal(U, tol_cos, tol_sin))


def small_norm_optimum(R: Tensor, depth: int, *, method: Literal['svd', 'polar'] = 'svd',
                       tol_cos: float = 1e-9, tol_sin: float = 1e-12) -> SmallNormOptimum:
    """Theorem 2.1, constructively: ``A_1..A_l`` with ``(I + A_l)...(I + A_1) = R`` and small ``|||A|||``.

    ``method='svd'`` is the proof of the paper (Appendix A): SVD ``R = U K V^T`` with ``det U = det V = +1``
    (possible as ``det R > 0``: if the SVD returns ``det U = det V = -1``, flipping the sign of the last
    column of both leaves ``U K V^T`` unchanged). Real Schur form ``U = S diag(T(theta_i)) S^T``;
    ``B = S diag(T(theta_i / q)) S^T`` has ``B^q = U`` and ``||B - I|| = max 2 sin(|theta_i| / 2q) <= pi / q``.
    The same for ``V^T``. ``K = (K')^p`` with ``K' = diag(k_i^{1/p})``, ``||K' - I|| <= 3 gamma / p``. Then
    ``R = B_U^q (K')^p B_V^q``: ``l = 2q + p`` near-identity factors.

    ``method='polar'`` (our variant): ``R = O P`` with ``O = U V^T`` orthogonal and ``P = V K V^T``;
    ``R = B_O^q (V K' V^T)^p`` with ``l = q + p``: one rotation instead of two, so fewer factors are needed.
    For small ``gamma`` the paper's split can miss its own bound when both ``U`` and ``V^T`` rotate by nearly pi
    (it needs ``2q ~ l`` with ``q`` an integer): at ``gamma = 0`` for every odd ``l`` from 5 up to about
    ``pi / (pi - theta)``, ``theta`` the smaller of their largest angles (results/theory/results.md); the polar
    split does not.

    Counts: the paper takes ``q`` factors for each rotation and ``p`` for ``K``; we give the ``l`` factors
    greedily to the component with the largest factor norm (optimal for the max, includes the paper's
    choice; a component equal to ``I`` gets none). Raises ``ValueError`` if ``det R <= 0`` or
    ``l < 3 gamma`` (the theorem's hypotheses), or if ``l`` is smaller than the number of components.
    """
    R = R.to(DTYPE)
    gamma = _check_theorem21_input(R, depth)
    U, k, Vh = torch.linalg.svd(R)
    if float(torch.linalg.det(U)) < 0:
        U, Vh = U.clone(), Vh.clone()
        U[:, -1] *= -1
        Vh[-1, :] *= -1
    if method == 'svd':
        components = [_rotation_part(Vh, tol_cos, tol_sin), _Component.scaling(torch.log(k)),
                      _rotation_part(U, tol_cos, tol_sin)]
    elif method == 'polar':
        components = [_Component.scaling(torch.log(k), basis=Vh.T), _rotation_part(U @ Vh, tol_cos, tol_sin)]
    else:
        raise ValueError(f"method must be 'svd' or 'polar'; got {method!r}")
    counts = _split_depth(components, depth)
    F = torch.cat([comp.root(n).expand(n, -1, -1) for comp, n in zip(components, counts) if n])
    return _finish(R, F, gamma, theorem21_bound(gamma, depth), tuple(counts), method)


def psd_small_norm_optimum(R: Tensor, depth: int) -> SmallNormOptimum:
    """Theorem 2.1, PSD special case: ``R`` symmetric positive definite, ``A_j = R^{1/l} - I`` for every ``j``,
    with ``||A_j|| = max_i |lambda_i^{1/l} - 1| <= 3 gamma / l`` (when ``l >= 3 gamma``)."""
    R = R.to(DTYPE)
    if float(torch.linalg.matrix_norm(R - R.T)) > 1e-12 * float(torch.linalg.matrix_norm(R)):
        raise ValueError('psd_small_norm_optimum needs a symmetric R')
    gamma = _check_theorem21_input(R, depth)
    lam, Q = torch.linalg.eigh(R)
    if float(lam.min()) <= 0:
        raise ValueError('psd_small_norm_optimum needs a positive definite R')
    root = (Q * lam ** (1 / depth)) @ Q.T
    return _finish(R, root.expand(depth, -1, -1).clone(), gamma, psd_theorem21_bound(gamma, depth), (depth,), 'psd')


# ---------------------------------------------------------------------------------------------------------
# Random problems and gradient descent (the experiment)
# ---------------------------------------------------------------------------------------------------------

def random_orthogonal(d: int, generator: torch.Generator) -> Tensor:
    """Haar-distributed orthogonal matrix (QR of a Gaussian with the sign fix)."""
    Q, Rr = torch.linalg.qr(torch.randn(d, d, dtype=DTYPE, generator=generator))
    return Q * torch.sign(torch.diagonal(Rr))


def random_target(d: int, gamma: float, generator: torch.Generator, psd: bool = False) -> Tensor:
    """A random ``R`` with ``det R > 0`` and ``max |log sigma(R)| = gamma`` exactly (log singular values
    uniform in ``[-gamma, gamma]`` with both ends attained; symmetric positive definite if ``psd``)."""
    log_s = (2 * torch.rand(d, dtype=DTYPE, generator=generator) - 1) * gamma
    if d >= 2:
        log_s[0], log_s[1] = gamma, -gamma
    elif d == 1:
        log_s[0] = gamma
    U = random_orthogonal(d, generator)
    V = U if psd else random_orthogonal(d, generator)
    if float(torch.linalg.det(U @ V.T)) < 0:
        V = V.clone()
        V[:, 0] *= -1
    return (U * torch.exp(log_s)) @ V.T


def random_covariance(d: int, generator: torch.Generator, condition: float = 4.0) -> Tensor:
    """A random ``Sigma`` with eigenvalues spaced geometrically in ``[1 / condition, 1]``."""
    Q = random_orthogonal(d, generator)
    w = torch.logspace(0, -math.log10(condition), d, dtype=DTYPE)
    return (Q * w) @ Q.T


def gradient_descent(A0: Tensor, R: Tensor, Sigma: Tensor, *, steps: int, lr: float,
                     parameterisation: Parameterisation = 'residual', record_every: int = 1) -> dict:
    """Gradient descent ``A <- A - lr * grad f(A)`` with the closed-form gradient (Lemma 2.4).

    Returns ``{'A': final A, 'steps': [...], 'excess_risk': [...], 'grad_norm': [...]}`` recorded every
    ``record_every`` steps (and at the last step). Stops early if the risk becomes non-finite.
    """
    A = A0.clone().to(DTYPE)
    log: dict = {'steps': [], 'excess_risk': [], 'grad_norm': []}
    for t in range(steps + 1):
        G = risk_gradient(A, R, Sigma, parameterisation)
        if t % record_every == 0 or t == steps:
            gap = excess_risk(A, R, Sigma, parameterisation)
            log['steps'].append(t)
            log['excess_risk'].append(gap)
            log['grad_norm'].append(float(torch.linalg.vector_norm(G)))
            if not math.isfinite(gap):
                break
        if t < steps:
            A = A - lr * G
    log['A'] = A
    return log


def critical_point_search(A0: Tensor, R: Tensor, Sigma: Tensor, *, steps: int = 300,
                          parameterisation: Parameterisation = 'residual') -> Tensor:
    """Look for a critical point of ``f`` near ``A0`` by minimising ``||grad f(A)||_F^2`` (L-BFGS with
    autograd through Lemma 2.4). Unlike descent on ``f``, this is drawn to saddles as well as to minima,
    so it probes Theorem 2.2: started inside ``|||A||| <= tau < 1`` it should only find points with
    ``f = C_opt``, while for the standard parameterisation it finds the saddle ``A = 0`` (``f > C_opt``)."""
    A = A0.clone().to(DTYPE).requires_grad_()
    opt = torch.optim.LBFGS([A], lr=1, max_iter=steps, tolerance_grad=1e-30, tolerance_change=1e-30,
                            history_size=50, line_search_fn='strong_wolfe')

    def closure() -> Tensor:
        opt.zero_grad()
        g2 = torch.sum(risk_gradient(A, R, Sigma, parameterisation) ** 2)
        g2.backward()
        return g2
    opt.step(closure)
    return A.detach()


# ---------------------------------------------------------------------------------------------------------
# Experiments (what `timm-identity theory linear` runs)
# ---------------------------------------------------------------------------------------------------------

def theorem21_sweep(dims: list[int], gammas: list[float], depths: list[int], seed: int = 0) -> list[dict]:
    """Theorem 2.1 on random ``R`` (one per ``(d, gamma)``, see :func:`random_target`) for every depth
    ``l >= 3 gamma``: the paper's construction (``'svd'``), the polar variant and, for a random symmetric
    positive definite ``R`` of the same ``gamma``, the PSD case. One record per construction."""
    g = torch.Generator().manual_seed(seed)
    records = []
    for d in dims:
        for gamma in gammas:
            targets = {'general': random_target(d, gamma, g), 'psd': random_target(d, gamma, g, psd=True)}
            for depth in depths:
                if depth < 3 * gamma:
                    continue
                for kind, method in (('general', 'svd'), ('general', 'polar'), ('psd', 'psd')):
                    R = targets[kind]
                    opt = psd_small_norm_optimum(R, depth) if method == 'psd' else \
                        small_norm_optimum(R, depth, method=method)
                    records.append({'d': d, 'gamma': gamma, 'gamma_measured': opt.gamma, 'depth': depth,
                                    'method': method, 'max_norm': opt.max_norm, 'bound': opt.bound,
                                    'residual': opt.residual,
                                    'counts': list(opt.counts)})
    return records


def eq23_check(num_points: int, d: int, depths: list[int], seed: int = 0) -> list[dict]:
    """Eq. (2.3) at random points: random ``R``, ``Sigma`` and ``A`` with ``|||A||| = tau`` for ``tau``
    uniform in ``(0, 0.95)`` (each ``A_j`` a Gaussian matrix scaled to spectral norm ``<= tau``)."""
    g = torch.Generator().manual_seed(seed)
    records = []
    for i in range(num_points):
        depth = depths[i % len(depths)]
        R = random_target(d, float(torch.rand(1, generator=g)) * 2, g)
        Sigma = random_covariance(d, g, condition=10.0)
        tau = 0.95 * float(torch.rand(1, generator=g))
        A = torch.randn(depth, d, d, dtype=DTYPE, generator=g)
        scale = tau * torch.rand(depth, 1, 1, dtype=DTYPE, generator=g)
        scale[0] = tau
        A = A / torch.linalg.matrix_norm(A, ord=2)[:, None, None] * scale
        b = gradient_lower_bound(A, R, Sigma, tau)
        records.append({'depth': depth, 'tau': tau, 'lhs': b.lhs, 'rhs': b.rhs, 'holds': b.holds,
                        'excess_risk': b.excess_risk})
    return records


def random_ball_point(depth: int, d: int, radius: float, generator: torch.Generator) -> Tensor:
    """``A`` with every ``||A_j|| = radius`` (Gaussian directions)."""
    A = torch.randn(depth, d, d, dtype=DTYPE, generator=generator)
    return radius * A / torch.linalg.matrix_norm(A, ord=2)[:, None, None]


def critical_point_experiment(num_starts: int, d: int, depth: int, seed: int = 0,
                              start_radius: float = 0.5, target_radius: float = 0.2) -> list[dict]:
    """Theorem 2.2 probed by :func:`critical_point_search`: ``R = (I + A*_l)...(I + A*_1)`` with
    ``|||A*||| = target_radius`` (so a global optimum lies in the ball), starts with ``|||A||| = start_radius``;
    the standard parameterisation starts at ``0.05 * start``. One record per search."""
    g = torch.Generator().manual_seed(seed)
    records = []
    for _ in range(num_starts):
        R = network_matrix(random_ball_point(depth, d, target_radius, g))
        Sigma = random_covariance(d, g)
        start = random_ball_point(depth, d, start_radius, g)
        for par, A0 in (('residual', start), ('standard', 0.05 * start)):
            A = critical_point_search(A0, R, Sigma, parameterisation=par)
            records.append({'parameterisation': par, 'norm_3': norm_3(A),
                            'grad_norm_sq': float(torch.sum(risk_gradient(A, R, Sigma, par) ** 2)),
                            'excess_risk': excess_risk(A, R, Sigma, par),
                            'initial_excess_risk': excess_risk(A0, R, Sigma, par)})
    return records


def gradient_descent_experiment(d: int, depths: list[int], steps: int, lr: float, gamma: float,
                                init_scales: list[float], seed: int = 0, record_every: int = 10) -> list[dict]:
    """Section 2's contrast: gradient descent on ``f`` (one random ``R`` with this ``gamma`` and one random
    ``Sigma``) for the residual parameterisation from ``A = 0`` and the standard one from ``A = 0`` (exactly
    zero gradient: every ``df/dA_i`` contains a product of the other, zero, layers) and from small random
    inits ``A_j ~ N(0, scale^2)`` entrywise. Step size ``lr / l`` for both (the end-to-end map moves by
    about ``l`` times a layer's step)."""
    g = torch.Generator().manual_seed(seed)
    R = random_target(d, gamma, g)
    Sigma = random_covariance(d, g)
    runs = []
    for depth in depths:
        settings = [('residual, A = 0', 'residual', 0.0), ('standard, A = 0 (from 0)', 'standard', 0.0)]
        settings += [(f'standard, N(0, {s:g}^2) init', 'standard', s) for s in init_scales]
        for label, par, scale in settings:
            A0 = scale * torch.randn(depth, d, d, dtype=DTYPE, generator=g)
            log = gradient_descent(A0, R, Sigma, steps=steps, lr=lr / depth, parameterisation=par,
                                   record_every=record_every)
            grad0 = float(torch.linalg.vector_norm(risk_gradient(A0, R, Sigma, par)))
            runs.append({'depth': depth, 'label': label, 'parameterisation': par, 'init_scale': scale,
                         'initial_grad_norm': grad0, 'steps': log['steps'], 'excess_risk': log['excess_risk'],
                         'final_excess_risk': log['excess_risk'][-1]})
    return runs
