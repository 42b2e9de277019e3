"""Finite-sample expressivity of ReLU residual networks: Section 3 and Appendix B of Hardt & Ma.

Theorem 3.2: ``n`` unit-norm inputs with pairwise ``||x_i - x_j||^2 >= rho`` (Assumption 3.1) and ``r``
classes can be mapped *exactly* to their one-hot labels by a residual network with
``O(n log n + r^2)`` parameters built from the block

    ``T_{U,V,s}(h) = V ReLU(U h + s)``,  residual step ``h -> h + T_{U,V,s}(h)``.

The construction (Lemmas B.1, B.2), as :func:`build_interpolating_resnet` implements it:

1. ``h_0 = A_0 x`` with ``A_0`` a random Gaussian ``k x d`` matrix (entries ``N(0, 1/k)``).
2. Random unit *surrogate labels* ``q_1..q_r`` in R^k.
3. ``l`` residual blocks. Block ``j`` takes a batch ``S_j`` of at most ``k`` points still at their
   ``h_0``-position ``alpha_i``: row ``i`` of ``U`` is ``alpha_i^T``, ``s_i = -b_i``, column ``i`` of ``V`` is
   ``(q_{y_i} - alpha_i) / (||alpha_i||^2 - b_i)`` (Lemma B.1). If every other current point ``z`` has
   ``<alpha_i, z> < b_i < ||alpha_i||^2``, the block moves each ``alpha_i`` (``i`` in ``S_j``) exactly to
   ``q_{y_i}`` and leaves every other point exactly where it is (all its ReLUs are 0).
4. A last, non-residual block ``T_{U,V,s}: R^k -> R^r`` with rows ``q_c`` of ``U``, maps ``q_c -> e_c``.

Where we differ from the paper's text, and why (the conditions are *checked* either way):

- Thresholds: the paper uses one threshold ``s = -(1 - 2 rho') 1``, which needs the JL distortion of all
  norms and inner products below ``~rho``, i.e. ``k ~ log n / rho^2``: for real images ``rho`` is small and
  that ``k`` exceeds what fits in memory. We pick ``b_i`` per row, halfway between ``||alpha_i||^2`` and the
  largest ``<alpha_i, z>`` over the other current points (measured). ``s`` is a vector in T_{U,V,s}
  anyway; the parameter count is unchanged.
- Order of the batches (``order='norm'``, default): points sorted by decreasing ``||alpha_i||``. Then a
  row ``alpha_m`` meets only later points ``alpha_i`` with ``||alpha_i|| <= ||alpha_m||``, so
  ``<alpha_m, alpha_i> <= ||alpha_m|| ||alpha_i|| <= ||alpha_m||^2`` with equality only for ``alpha_i =
  alpha_m``: Lemma B.1's condition between points holds for *any* distinct inputs and any ``k``; what is
  left to check is that no row is triggered by a surrogate label, and inside a batch (a batch is closed
  early rather than hold two points that would trigger each other). ``order='index'`` is the paper's
  literal split into consecutive groups of ``k``, with the same checks.
- Inputs are centred (optional) and normalised to unit norm inside the module (Assumption 3.1); the
  achieved ``rho`` is measured, not assumed.
- Exact duplicates (equal inputs, as real data sets have: CIFAR-100 train holds 14) with the same label
  are one point to the construction: it fits the first copy, and the forward pass checks every copy.
  Duplicates with different labels cannot be fitted by any function, and are an error naming them.

If a check fails, ``k`` is doubled (up to ``max_k``) and the construction starts again; past ``max_k`` a
:class:`ConstructionError` says which condition failed. A network is only returned after a forward pass
over all training inputs has confirmed the fit.
"""
from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

DTYPE = torch.float64
BatchOrder = Literal['norm', 'index']


class ConstructionError(RuntimeError):
    """The conditions of Lemma B.1 / B.2 fail for these data at every width tried."""


# ---------------------------------------------------------------------------------------------------------
# The network
# ---------------------------------------------------------------------------------------------------------

class ReLUBlock(nn.Module):
    """``T_{U,V,s}``: ``h -> h + V ReLU(U h + s)`` (``residual=True``) or ``h -> V ReLU(U h + s)``.

    ``U``: ``(m, k_in)``, ``V``: ``(k_out, m)``, ``s``: ``(m,)``; acts on rows of ``h`` (shape ``(N, k_in)``).
    """

    def __init__(self, U: Tensor, V: Tensor, s: Tensor, residual: bool = True) -> None:
        super().__init__()
        if residual and V.shape[0] != U.shape[1]:
            raise ValueError('a residual block needs V U to be square')
        self.U = nn.Parameter(U.to(DTYPE), requires_grad=False)
        self.V = nn.Parameter(V.to(DTYPE), requires_grad=False)
        self.s = nn.Parameter(s.to(DTYPE), requires_grad=False)
        self.residual = residual

    def forward(self, h: Tensor) -> Tensor:
        out = torch.relu(h @ self.U.T + self.s) @ self.V.T
        return h + out if self.residual else out


class UnitNormalise(nn.Module):
    """Assumption 3.1 as a fixed preprocessing step: ``x -> (x - mean) / ||x - mean||`` (flattened)."""

    def __init__(self, mean: Tensor) -> None:
        super().__init__()
        self.register_buffer('mean', mean.to(DTYPE))

    def forward(self, x: Tensor) -> Tensor:
        z = x.reshape(x.shape[0], -1).to(DTYPE) - self.mean
        return z / torch.linalg.vector_norm(z, dim=1, keepdim=True)


class InterpolatingResNet(nn.Sequential):
    """Theorem 3.2's network: ``UnitNormalise``, ``h_0 = A_0 x`` (``nn.Linear`` without bias, ``k x d``),
    ``l`` residual :class:`ReLUBlock` s in R^k, and a last non-residual :class:`ReLUBlock` R^k -> R^r."""

    def __init__(self, mean: Tensor, A0: Tensor, blocks: list[ReLUBlock], head: ReLUBlock) -> None:
        embed = nn.Linear(A0.shape[1], A0.shape[0], bias=False, dtype=DTYPE)
        embed.weight = nn.Parameter(A0.to(DTYPE), requires_grad=False)
        super().__init__(UnitNormalise(mean), embed, *blocks, head)

    @property
    def width(self) -> int:
        return self[1].weight.shape[0]

    @property
    def num_blocks(self) -> int:
        return len(self) - 3

    def num_parameters(self) -> int:
        """``k d + l (2 k^2 + k) + (r k + r + r^2)`` (the input mean is a buffer, not counted)."""
        return sum(p.numel() for p in self.parameters())


# ---------------------------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------------------------

def unit_normalise(x: Tensor, center: bool = True) -> tuple[Tensor, Tensor]:
    """Flatten, subtract the mean (if ``center``) and scale each row to unit norm; returns ``(X, mean)``."""
    z = x.reshape(x.shape[0], -1).to(DTYPE)
    mean = z.mean(0) if center else torch.zeros(z.shape[1], dtype=DTYPE)
    z = z - mean
    norms = torch.linalg.vector_norm(z, dim=1, keepdim=True)
    if bool((norms == 0).any()):
        raise ValueError(f'input {int(torch.nonzero(norms.flatten() == 0)[0])} is zero after centring: '
                         'it cannot be normalised to unit norm (Assumption 3.1)')
    return z / norms, mean


def separation(X: Tensor, chunk: int = 1024, progress: bool = False) -> tuple[float, tuple[int, int]]:
    """Assumption 3.1's ``rho``: the smallest ``||x_i - x_j||^2`` over pairs ``i != j`` of unit rows, and the
    pair ``(i, j)``, ``i < j``. Blockwise over the upper triangle (block rows against columns j >= the block's
    first row): about n^2 d / 2 multiply-adds, O(chunk n) memory (never the ``n x n`` matrix)."""
    n = X.shape[0]
    best, pair = math.inf, (-1, -1)
    for lo in tqdm(range(0, n, chunk), desc='separation rho', disable=not progress, leave=False):
        G = X[lo:lo + chunk] @ X[lo:].T   # (c, n - lo) inner products with j >= lo
        rows = torch.arange(G.shape[0])
        G[rows, rows] = -math.inf          # j == i
        val, idx = G.max(1)
        i = int(val.argmax())
        d2 = 2 - 2 * float(val[i])
        if d2 < best:
            best, pair = d2, tuple(sorted((lo + i, lo + int(idx[i]))))
    return best, pair


# ---------------------------------------------------------------------------------------------------------
# The construction
# ---------------------------------------------------------------------------------------------------------

@dataclass
class InterpolationReport:
    """What :func:`build_interpolating_resnet` built and measured (all JSON-serialisable but ``model``)."""
    n: int
    n_distinct: int   # n less the exact duplicates (same input and label), which the construction fits once
    d: int
    r: int
    k: int
    l: int
    num_parameters: int
    n_log_n_plus_r2: float
    rho: float | None
    rho_pair: tuple[int, int] | None
    rho_prime: float
    min_margin: float
    surrogate_max_inner: float   # max <q_c, q_c'> over c != c' (last block needs < 1)
    max_error: float
    order: str
    widths_tried: list[int]
    failures: list[str]
    seconds: dict[str, float] = field(default_factory=dict)
    model: InterpolatingResNet | None = field(default=None, repr=False)
    margins: Tensor | None = field(default=None, repr=False)   # Lemma B.1 margin of each point, block order
    errors: Tensor | None = field(default=None, repr=False)    # max_c |output - one-hot| of each input

    def to_dict(self) -> dict:
        out = {key: value for key, value in self.__dict__.items() if key not in ('model', 'margins', 'errors')}
        if self.margins is not None:
            q = torch.tensor([0.0, 0.01, 0.5, 1.0], dtype=DTYPE)
            out['margin_quantiles'] = dict(zip(['min', 'q01', 'median', 'max'],
                                               torch.quantile(self.margins, q).tolist()))
        return out


def _distinct_inputs(x: Tensor) -> tuple[Tensor, Tensor]:
    """Exact duplicates among the flattened inputs: ``(keep, copy_of)``, ``keep`` the index of the first
    copy of each distinct input (ascending), ``copy_of[i]`` the position in ``keep`` of input ``i``'s value.
    One pass of hashing (O(n) memory; equal hashes are compared in full)."""
    rows = x.detach().reshape(x.shape[0], -1).to(DTYPE).contiguous().numpy()
    seen: dict[bytes, list[int]] = {}
    keep: list[int] = []
    copy_of: list[int] = []
    for i, row in enumerate(rows):
        candidates = seen.setdefault(hashlib.blake2b(row, digest_size=16).digest(), [])
        pos = next((p for p in candidates if (rows[keep[p]] == row).all()), None)
        if pos is None:
            pos = len(keep)
            candidates.append(pos)
            keep.append(i)
        copy_of.append(pos)
    return torch.tensor(keep, dtype=torch.long), torch.tensor(copy_of, dtype=torch.long)


def _batches(H: Tensor, order: BatchOrder, k: int, margin: float) -> list[Tensor]:
    """Split the points into batches of at most ``k``. ``'norm'``: by decreasing ``||alpha_i||``, closing a
    batch early before a point ``i`` with ``<alpha_i, alpha_m> >= ||alpha_i||^2 - margin`` for some member
    ``m`` (inside a batch both rows are live). ``'index'``: consecutive groups of ``k`` (the paper)."""
    n = H.shape[0]
    if order == 'index':
        return list(torch.arange(n).split(k))
    if order != 'norm':
        raise ValueError(f"order must be 'norm' or 'index'; got {order!r}")
    sq = (H * H).sum(1)
    perm = torch.sort(-sq, stable=True).indices
    batches: list[Tensor] = []
    start = 0
    while start < n:
        group = perm[start:start + k]      # the next k points in norm order; cut at the first conflict
        conflict = H[group] @ H[group].T >= sq[group][:, None] - margin   # [i, m]: point m triggers row i
        conflict.fill_diagonal_(False)
        conflict = conflict | conflict.T
        first = torch.nonzero(torch.tril(conflict).any(1)).flatten()
        size = int(first[0]) if len(first) else len(group)
        batches.append(group[:size])
        start += size
    return batches


def _construct(X: Tensor, labels: Tensor, r: int, k: int, generator: torch.Generator, order: BatchOrder,
               min_margin: float, progress: bool) -> tuple[Tensor, list[ReLUBlock], ReLUBlock, dict]:
    """One attempt at width ``k``. Raises :class:`ConstructionError` naming the first failed condition."""
    n, d = X.shape
    A0 = torch.randn(k, d, dtype=DTYPE, generator=generator) / math.sqrt(k)
    Q = torch.randn(r, k, dtype=DTYPE, generator=generator)
    Q = Q / torch.linalg.vector_norm(Q, dim=1, keepdim=True)
    # last block: q_c -> e_c needs <q_c, q_c'> < b_out < 1 for c != c'
    QQ = Q @ Q.T
    QQ.fill_diagonal_(-math.inf)
    q_max = float(QQ.max()) if r > 1 else -1.0
    if not q_max < 1 - 2 * min_margin:
        raise ConstructionError(f'surrogate labels not separated at k = {k}: max <q_c, q_c\'> = {q_max:.4g}')
    b_out = (max(q_max, 0.0) + 1) / 2
    head = ReLUBlock(Q, torch.eye(r, dtype=DTYPE) / (1 - b_out), torch.full((r,), -b_out, dtype=DTYPE),
                     residual=False)

    H = X @ A0.T                        # current position of every point; alpha_i = H[i] before its block
    rho_prime = float((torch.linalg.vector_norm(H, dim=1) - 1).abs().max())
    batches = _batches(H, order, k, min_margin)
    blocks: list[ReLUBlock] = []
    margins: list[Tensor] = []
    for S in tqdm(batches, desc=f'Lemma B.1 blocks (k={k})', disable=not progress, leave=False):
        alpha = H[S]                                   # (m, k) rows of U
        P = H @ alpha.T                                # (n, m): <alpha_i, z> for every current point z
        self_ip = P[S, torch.arange(len(S))]
        P[S, torch.arange(len(S))] = -math.inf
        cross, culprit = P.max(0)
        gap = self_ip - cross
        bad = torch.nonzero(gap < 2 * min_margin).flatten()
        if len(bad):
            i, m = int(S[bad[0]]), int(culprit[bad[0]])
            raise ConstructionError(
                f'Lemma B.1 fails at k = {k} in block {len(blocks) + 1}: row of point {i} has '
                f'||alpha||^2 = {float(self_ip[bad[0]]):.6g} but point {m} (current position) gives '
                f'<alpha, z> = {float(cross[bad[0]]):.6g} (margin needed {2 * min_margin:.1e})')
        b = (self_ip + cross) / 2
        target = Q[labels[S]]
        U = torch.zeros(k, k, dtype=DTYPE)
        V = torch.zeros(k, k, dtype=DTYPE)
        s = torch.full((k,), -1.0, dtype=DTYPE)       # unused rows: ReLU(0 h - 1) = 0
        m = len(S)
        U[:m] = alpha
        s[:m] = -b
        V[:, :m] = ((target - alpha) / (self_ip - b)[:, None]).T
        blocks.append(ReLUBlock(U, V, s))
        margins.append(gap / 2)
        H[S] = target
    stats = {'rho_prime': rho_prime, 'margins': torch.cat(margins), 'q_max': q_max}
    return A0, blocks, head, stats


def default_width(n: int) -> int:
    """Starting width ``k = ceil(8 ln n)`` (``k = O(log n)`` as in Theorem 3.2; grown if a check fails)."""
    return max(8, math.ceil(8 * math.log(max(n, 2))))


def _checked_labels_and_copies(x: Tensor, labels, num_classes: int | None) -> tuple[Tensor, int, Tensor]:
    """(labels as a long tensor, number of classes r, indices of the distinct inputs), after checking the labels'
    shape and range and that identical inputs share their label."""
    labels = torch.as_tensor(labels, dtype=torch.long)
    n = x.shape[0]
    if labels.shape != (n,):
        raise ValueError(f'labels must have shape ({n},); got {tuple(labels.shape)}')
    r = int(num_classes if num_classes is not None else int(labels.max()) + 1)
    if int(labels.min()) < 0 or int(labels.max()) >= r:
        raise ValueError(f'labels must lie in [0, {r})')
    keep, copy_of = _distinct_inputs(x)
    clash = torch.nonzero(labels != labels[keep[copy_of]]).flatten()
    if len(clash):
        i = int(clash[0])
        j = int(keep[copy_of[i]])
        raise ConstructionError(f'inputs {j} and {i} are identical but have labels {int(labels[j])} and '
                                f'{int(labels[i])}: no network can give them different outputs')
    return labels, r, keep


def _checked_separation(X: Tensor, keep: Tensor, labels: Tensor, progress: bool) -> tuple[float, tuple[int, int]]:
    """rho of the normalised distinct inputs and its pair (indices into the original inputs); inputs that
    coincide after normalisation are a :class:`ConstructionError` (Lemma B.1 needs distinct points)."""
    rho, pair = separation(X, progress=progress)
    pair = (int(keep[pair[0]]), int(keep[pair[1]]))
    if rho <= 1e-12:   # round-off in 2 - 2 <x_i, x_j>
        i, j = pair
        why = (f'but have labels {int(labels[i])} and {int(labels[j])}: no network can give them different '
               f'outputs' if labels[i] != labels[j] else
               f'without being equal (e.g. one a positive multiple of the other), with the same label '
               f'{int(labels[i])}: Lemma B.1 needs distinct points; drop one of them (exact duplicates are '
               f'merged)')
        raise ConstructionError(f'inputs {pair} coincide after normalisation (rho = {rho:.3g}) {why}')
    return rho, pair


def build_interpolating_resnet(x: Tensor, labels: Tensor, num_classes: int | None = None, *,
                               k: int | None = None, max_k: int | None = None, seed: int = 0,
                               order: BatchOrder = 'norm', center: bool = True, measure_rho: bool = True,
                               min_margin: float = 1e-9, tol: float = 1e-6,
                               progress: bool = False) -> InterpolationReport:
    """Theorem 3.2, constructively: a float64 :class:`InterpolatingResNet` with ``model(x[i]) = e_{labels[i]}``.

    ``x``: ``(n, ...)`` inputs (flattened), ``labels``: ``(n,)`` ints in ``[0, r)``. ``k`` defaults to
    :func:`default_width`; on a failed Lemma B.1 / B.2 check it doubles up to ``max_k`` (default ``8 k``),
    then :class:`ConstructionError`. ``min_margin``: the smallest gap ``||alpha_i||^2 - b_i`` (and
    ``b_i - <alpha_i, z>``) accepted, so that round-off cannot flip a ReLU. The returned network has been run
    on all ``n`` inputs; ``max_error = max |model(x) - onehot|`` must be below ``tol`` or it is an error.
    Exact duplicate inputs with the same label are fitted once (``n_distinct`` in the report; every copy is
    checked); duplicates with different labels, and distinct inputs that coincide after normalisation, are a
    :class:`ConstructionError` naming them.
    """
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    labels, r, keep = _checked_labels_and_copies(x, labels, num_classes)
    n = x.shape[0]
    X, mean = unit_normalise(x, center)
    X, distinct_labels = X[keep], labels[keep]   # the construction fits one copy of each duplicate
    d = X.shape[1]
    times['normalise'] = time.perf_counter() - t0
    rho = pair = None
    if measure_rho:
        t = time.perf_counter()
        rho, pair = _checked_separation(X, keep, labels, progress)
        times['separation'] = time.perf_counter() - t
    k = k or default_width(len(keep))
    max_k = max_k or 8 * k
    widths, failures = [], []
    generator = torch.Generator().manual_seed(seed)
    t = time.perf_counter()
    while True:
        widths.append(k)
        try:
            A0, blocks, head, stats = _construct(X, distinct_labels, r, k, generator, order, min_margin, progress)
            break
        except ConstructionError as err:
            failures.append(str(err))
            if 2 * k > max_k:
                raise ConstructionError(f'no width up to max_k = {max_k} satisfies the conditions of Lemma B.1/B.2; '
                                        f'last failure: {err}') from None
            k *= 2
    times['construct'] = time.perf_counter() - t
    model = InterpolatingResNet(mean, A0, blocks, head)
    t = time.perf_counter()
    errors = interpolation_error(model, x, labels, r, progress=progress)
    max_error = float(errors.max())
    times['verify'] = time.perf_counter() - t
    times['total'] = time.perf_counter() - t0
    report = InterpolationReport(
        n=n, n_distinct=len(keep), d=d, r=r, k=k, l=len(blocks), num_parameters=model.num_parameters(),
        n_log_n_plus_r2=len(keep) * math.log(len(keep)) + r * r, rho=rho, rho_pair=pair, rho_prime=stats['rho_prime'],
        min_margin=float(stats['margins'].min()), surrogate_max_inner=stats['q_max'], max_error=max_error,
        order=order, widths_tried=widths, failures=failures, seconds=times, model=model,
        margins=stats['margins'], errors=errors)
    if not max_error < tol:
        raise ConstructionError(f'the network does not fit: max |output - label| = {max_error:.3g} >= {tol:g} '
                                f'(k = {k}, min margin {report.min_margin:.3g}); report: {report.to_dict()}')
    return report


@torch.no_grad()
def interpolation_error(model: nn.Module, x: Tensor, labels: Tensor, num_classes: int, chunk: int = 4096,
                        progress: bool = False) -> Tensor:
    """``max_c |model(x_i)_c - [c = y_i]|`` for every input ``i`` (the fit of Theorem 3.2), shape ``(n,)``."""
    errors = []
    for lo in tqdm(range(0, x.shape[0], chunk), desc='forward pass', disable=not progress, leave=False):
        out = model(x[lo:lo + chunk])
        onehot = torch.nn.functional.one_hot(labels[lo:lo + chunk], num_classes).to(DTYPE)
        errors.append((out - onehot).abs().amax(1))
    return torch.cat(errors)


def synthetic_dataset(n: int, d: int, r: int, seed: int = 0, close_pairs: int = 0,
                      distance: float = 1e-2) -> tuple[Tensor, Tensor]:
    """``n`` Gaussian points in R^d with uniformly random labels in ``[0, r)``; the first ``close_pairs``
    points get a near-duplicate (relative distance ``distance``) with another label, which makes the
    separation ``rho`` small."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, dtype=DTYPE, generator=g)
    labels = torch.randint(0, r, (n,), generator=g)
    for i in range(min(close_pairs, n // 2)):
        j = n - 1 - i
        x[j] = x[i] + distance * x[i].norm() / math.sqrt(d) * torch.randn(d, dtype=DTYPE, generator=g)
        labels[j] = (labels[i] + 1) % r
    return x, labels
