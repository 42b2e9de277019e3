"""Section 3 / Appendix B (timm_identity.theory.expressivity): Theorem 3.2's construction, checked."""
import json
import math

import pytest
import torch

from timm_identity.cli import main
from timm_identity.theory import expressivity as E
from timm_identity.theory.expressivity import DTYPE


def test_relu_block_is_T_UVs():
    g = torch.Generator().manual_seed(0)
    U, V, s = (torch.randn(3, 4, dtype=DTYPE, generator=g), torch.randn(4, 3, dtype=DTYPE, generator=g),
               torch.randn(3, dtype=DTYPE, generator=g))
    h = torch.randn(5, 4, dtype=DTYPE, generator=g)
    expected = h + torch.clamp(h @ U.T + s, min=0) @ V.T
    assert torch.allclose(E.ReLUBlock(U, V, s)(h), expected)
    assert torch.allclose(E.ReLUBlock(U, V, s, residual=False)(h), expected - h)


def test_separation_matches_brute_force():
    x, _ = E.synthetic_dataset(150, 7, 3, seed=1, close_pairs=2)
    X, _ = E.unit_normalise(x)
    D = torch.cdist(X, X) ** 2
    D.fill_diagonal_(math.inf)
    rho, (i, j) = E.separation(X, chunk=32)
    assert rho == pytest.approx(float(D.min()), abs=1e-12)
    assert float(D[i, j]) == pytest.approx(rho, abs=1e-12) and i < j


@pytest.mark.parametrize('order', ['norm', 'index'])
def test_network_fits_every_point_exactly(order):
    n, d, r = 300, 40, 7
    x, y = E.synthetic_dataset(n, d, r, seed=2)
    rep = E.build_interpolating_resnet(x, y, r, seed=2, order=order)
    model = rep.model
    assert isinstance(model, torch.nn.Module)
    out = model(x)
    assert out.dtype == torch.float64 and out.shape == (n, r)
    onehot = torch.nn.functional.one_hot(y, r).to(DTYPE)
    assert float((out - onehot).abs().max()) == pytest.approx(rep.max_error) and rep.max_error < 1e-9
    k, l = rep.k, rep.l
    assert l >= math.ceil(n / k) and model.num_blocks == l and model.width == k
    assert rep.num_parameters == k * d + l * (2 * k * k + k) + r * k + r + r * r
    assert rep.rho > 0 and rep.min_margin > 0


def test_each_block_moves_its_batch_and_leaves_the_rest_exactly():
    """Lemma B.1: after block j the points of its batch sit at their surrogate label q_{y_i} and every
    other point is bit-for-bit where it was (all its ReLUs are 0)."""
    x, y = E.synthetic_dataset(200, 30, 5, seed=3, close_pairs=5)
    rep = E.build_interpolating_resnet(x, y, 5, seed=3)
    model = rep.model
    Q = model[-1].U            # rows q_c
    h = model[1](model[0](x))
    moved = torch.zeros(len(y), dtype=torch.bool)
    with torch.no_grad():
        for block in list(model)[2:-1]:
            new = block(h)
            changed = (new != h).any(1)
            assert 0 < int(changed.sum()) <= rep.k
            assert not bool((changed & moved).any())          # moved points are never touched again
            assert torch.allclose(new[changed], Q[y[changed]], atol=1e-9)
            moved |= changed
            h = new
    assert bool(moved.all())


def test_close_pairs_paper_order_fails_clearly_norm_order_fits():
    x, y = E.synthetic_dataset(200, 30, 5, seed=4, close_pairs=8, distance=1e-3)
    with pytest.raises(E.ConstructionError, match='Lemma B.1 fails'):
        E.build_interpolating_resnet(x, y, 5, order='index', k=32, max_k=64, seed=4)
    rep = E.build_interpolating_resnet(x, y, 5, order='norm', k=32, seed=4)
    assert rep.rho < 1e-5 and rep.max_error < 1e-6


def test_random_labels_fit_too():
    x, _ = E.synthetic_dataset(250, 20, 10, seed=5)
    y = torch.randint(0, 10, (250,), generator=torch.Generator().manual_seed(6))
    rep = E.build_interpolating_resnet(x, y, 10, seed=5)
    assert torch.equal(rep.model(x).argmax(1), y) and rep.max_error < 1e-9


@pytest.mark.parametrize('measure_rho', [True, False])
def test_exact_duplicates_with_the_same_label_are_fitted_once(measure_rho):
    x, y = E.synthetic_dataset(60, 10, 3, seed=7)
    for copy, original in ((20, 5), (40, 5), (41, 7)):
        x[copy], y[copy] = x[original], y[original]
    rep = E.build_interpolating_resnet(x, y, 3, measure_rho=measure_rho)
    assert (rep.n, rep.n_distinct) == (60, 57) and len(rep.margins) == 57
    assert rep.errors.shape == (60,) and rep.max_error < 1e-9      # every copy maps to its label
    assert torch.equal(rep.model(x).argmax(1), y)
    assert rep.n_log_n_plus_r2 == pytest.approx(57 * math.log(57) + 9)
    if measure_rho:
        i, j = rep.rho_pair
        assert rep.rho > 1e-3 and not torch.equal(x[i], x[j])


def test_exact_duplicates_with_different_labels_are_refused():
    x, y = E.synthetic_dataset(50, 10, 3, seed=7)
    x[20], y[20] = x[5], (y[5] + 1) % 3
    with pytest.raises(E.ConstructionError, match=f'inputs 5 and 20 are identical but have labels {int(y[5])} and '
                                                  f'{int(y[20])}: no network can give them different outputs'):
        E.build_interpolating_resnet(x, y, 3)


def test_inputs_that_coincide_after_normalisation_are_refused():
    x, y = E.synthetic_dataset(50, 10, 3, seed=7)
    x[10] = 2 * x[3]          # the same point after normalisation, not an exact duplicate
    y[10] = (y[3] + 1) % 3
    with pytest.raises(E.ConstructionError, match='coincide after normalisation .* but have labels'):
        E.build_interpolating_resnet(x, y, 3, center=False)
    y[10] = y[3]
    with pytest.raises(E.ConstructionError, match='without being equal .* the same label'):
        E.build_interpolating_resnet(x, y, 3, center=False)


def test_too_narrow_width_grows_then_fails_with_message():
    x, y = E.synthetic_dataset(100, 10, 40, seed=8)
    with pytest.raises(E.ConstructionError, match='max_k'):
        E.build_interpolating_resnet(x, y, 40, k=2, max_k=4, seed=8)
    rep = E.build_interpolating_resnet(x, y, 40, k=2, max_k=64, seed=8)
    assert rep.widths_tried[0] == 2 and rep.k > 4 and rep.failures and rep.max_error < 1e-9


def test_cli_expressivity_writes_json_and_png(tmp_path):
    assert main(['theory', 'expressivity', '--n', '120', '--dim', '16', '--classes', '4', '--close-pairs', '3',
                 '--out', str(tmp_path), '--name', 'tiny']) == 0
    payload = json.loads((tmp_path / 'expressivity_tiny.json').read_text())
    assert [r['labels'] for r in payload['results']] == ['true', 'random']
    assert all(r['max_error'] < 1e-9 for r in payload['results'])
    assert (tmp_path / 'expressivity_tiny_true.png').stat().st_size > 0


def test_cli_linear_writes_json_and_png(tmp_path):
    assert main(['theory', 'linear', '--out', str(tmp_path), '--dim', '3', '--depths', '2', '4', '--steps', '50',
                 '--sweep-dims', '3', '--sweep-gammas', '0.5', '--sweep-depths', '3', '8', '--eq23-points', '5',
                 '--critical-starts', '1']) == 0
    payload = json.loads((tmp_path / 'linear.json').read_text())
    assert payload['summary']['eq23']['all_hold']
    assert payload['summary']['theorem21']['svd']['max_residual'] < 1e-11
    assert (tmp_path / 'linear_theorem21.png').exists() and (tmp_path / 'linear_gd.png').exists()


def test_cli_bad_input_is_a_one_line_error_and_writes_nothing(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(['theory', 'linear', '--out', str(tmp_path / 'lin'), '--depths', '0'])
    assert e.value.code == 2 and 'must be at least 1' in capsys.readouterr().err
    assert main(['theory', 'expressivity', '--dataset', 'cifar10', '--data-root', str(tmp_path / 'nothing'),
                 '--out', str(tmp_path / 'c10')]) == 2
    assert 'no such file or folder' in capsys.readouterr().err
    # conditions of Lemma B.1 that cannot hold within --max-k: the reason, no half-written results
    assert main(['theory', 'expressivity', '--n', '40', '--close-pairs', '5', '--order', 'index', '--k', '4',
                 '--max-k', '8', '--out', str(tmp_path / 'syn')]) == 1
    assert 'Lemma B.1' in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
