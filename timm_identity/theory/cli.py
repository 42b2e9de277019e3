"""``timm-identity theory {linear,expressivity}``: the paper's Sections 2 and 3 as runnable experiments."""
from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from ..atomic_io import write_json
from ..cli_args import (
    DefaultsHelpFormatter, environment, float_in_range, int_at_least, non_negative_int, positive_float, positive_int,
    writable_dir,
)
from . import expressivity, linear, plots


# ---------------------------------------------------------------------------------------------------------
# theory linear
# ---------------------------------------------------------------------------------------------------------

def run_linear(args: argparse.Namespace) -> int:
    try:
        out = writable_dir(args.out)  # before minutes of work, not after
    except ValueError as e:
        print(f'timm-identity theory linear: error: {e}', file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    sweep = linear.theorem21_sweep(args.sweep_dims, args.sweep_gammas, args.sweep_depths, seed=args.seed)
    eq23 = linear.eq23_check(args.eq23_points, args.dim, args.depths, seed=args.seed)
    crit = linear.critical_point_experiment(args.critical_starts, min(args.dim, 4), 4, seed=args.seed)
    gd = linear.gradient_descent_experiment(args.dim, args.depths, args.steps, args.lr, args.gamma,
                                            args.init_scales, seed=args.seed)

    summary: dict = {'theorem21': {}}
    for method in ('svd', 'polar', 'psd'):
        recs = [r for r in sweep if r['method'] == method]
        summary['theorem21'][method] = {
            'constructions': len(recs), 'max_residual': max(r['residual'] for r in recs),
            'max_ratio_to_bound': max([r['max_norm'] / r['bound'] for r in recs if r['bound'] > 1e-9], default=None),
            # a violation: max ||A_i|| above the bound by more than round-off
            'bound_violations': [{k: r[k] for k in ('d', 'gamma', 'depth', 'max_norm', 'bound', 'counts')}
                                 for r in recs if r['max_norm'] > r['bound'] + 1e-12]}
    summary['eq23'] = {'points': len(eq23), 'all_hold': all(r['holds'] for r in eq23),
                       'min_lhs_over_rhs': min(r['lhs'] / r['rhs'] for r in eq23 if r['rhs'] > 0)}
    found = [r for r in crit if r['grad_norm_sq'] < 1e-12]
    summary['critical_points'] = {
        'searches': len(crit),
        'residual_found_inside_ball': sum(r['parameterisation'] == 'residual' and r['norm_3'] < 1 for r in found),
        'residual_inside_ball_max_excess': max([r['excess_risk'] for r in found
                                                if r['parameterisation'] == 'residual' and r['norm_3'] < 1],
                                               default=None),
        'residual_non_global_found_min_norm3': min([r['norm_3'] for r in found if r['parameterisation'] ==
                                                    'residual' and r['excess_risk'] > 1e-8], default=None),
        'standard_non_global_found': sum(r['parameterisation'] == 'standard' and r['excess_risk'] > 1e-8
                                         for r in found)}
    summary['gradient_descent'] = [{k: r[k] for k in ('depth', 'label', 'initial_grad_norm', 'final_excess_risk')}
                                   for r in gd]
    summary['seconds'] = time.perf_counter() - t0

    d_plot = max(args.sweep_dims)
    curves = []
    for gamma in args.sweep_gammas:
        for method in ('svd', 'polar', 'psd'):
            recs = [r for r in sweep if r['d'] == d_plot and r['gamma'] == gamma and r['method'] == method]
            if recs:
                curves.append({'gamma': gamma, 'method': method, 'psd': method == 'psd',
                               'label': f'γ={gamma:g}, {method}', 'depths': [r['depth'] for r in recs],
                               'max_norm': [r['max_norm'] for r in recs], 'bound': [r['bound'] for r in recs]})
    png_decay = plots.plot_norm_decay(curves, out / 'linear_theorem21.png')
    png_gd = plots.plot_loss_curves(gd, out / 'linear_gd.png')
    path = write_json(out / 'linear.json', {
        'summary': summary, 'environment': environment(args), 'theorem21': sweep, 'eq23': eq23,
        'critical_points': crit, 'gradient_descent': gd})
    print(json.dumps({k: v for k, v in summary.items() if k != 'gradient_descent'}, indent=1, default=float))
    for r in summary['gradient_descent']:
        print(f"  l={r['depth']:3d}  {r['label']:32s} |grad(A0)|={r['initial_grad_norm']:.3g}  "
              f"final f - C_opt = {r['final_excess_risk']:.3g}")
    print(f'wrote {path}, {png_decay}, {png_gd}')
    return 0


# ---------------------------------------------------------------------------------------------------------
# theory expressivity
# ---------------------------------------------------------------------------------------------------------

def _load_inputs(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor, int, str]:
    if args.dataset == 'synthetic':
        n = args.n or 500
        x, y = expressivity.synthetic_dataset(n, args.dim, args.classes, seed=args.seed,
                                              close_pairs=args.close_pairs)
        return x, y, args.classes, f'synthetic Gaussian n={n} d={args.dim} r={args.classes}'
    from timm_identity.data.cifar import load_cifar
    if not args.data_root:
        raise ValueError(f'--dataset {args.dataset} needs --data-root: the official CIFAR python release '
                         f'(archive or unpacked folder)')
    # re-packed archives (such as the CIFAR-10 rebuilt from shared/data) have their own md5: not checked here
    split = load_cifar(args.data_root, dataset=args.dataset, split='train', verify_md5=False)
    n = args.n or len(split.labels)
    x = torch.from_numpy(split.images[:n]).to(torch.float64)
    y = torch.from_numpy(split.labels[:n]).long()
    return x, y, len(split.classes), f'{args.dataset} train[:{n}] from {args.data_root}'


def run_expressivity(args: argparse.Namespace) -> int:
    t = time.perf_counter()
    try:
        out = writable_dir(args.out)  # before the construction, not after
        if args.dataset == 'synthetic' and 2 * args.close_pairs > (args.n or 500):
            raise ValueError(f'--close-pairs {args.close_pairs}: at most n / 2 = {(args.n or 500) // 2} pairs '
                             f'fit in --n {args.n or 500} points')
        x, y_true, r, source = _load_inputs(args)
    except (FileNotFoundError, ValueError) as e:  # no / not a CIFAR release at --data-root, a bad --out
        print(f'timm-identity theory expressivity: error: {e}', file=sys.stderr)
        return 2
    load_seconds = time.perf_counter() - t
    results = []
    rho = None
    for kind in args.labels:
        y = y_true if kind == 'true' else \
            torch.randint(0, r, y_true.shape, generator=torch.Generator().manual_seed(args.seed + 1))
        print(f'[{kind} labels] building Theorem 3.2 network for {source}', flush=True)
        try:
            rep = expressivity.build_interpolating_resnet(
                x, y, r, k=args.k, max_k=args.max_k, seed=args.seed, order=args.order, center=not args.no_center,
                measure_rho=rho is None and not args.no_rho, progress=True)
        except expressivity.ConstructionError as e:  # the conditions of Lemma B.1/B.2 fail: say which
            print(f'timm-identity theory expressivity: error: {e}', file=sys.stderr)
            return 1
        if rho is not None:   # the separation does not depend on the labels: measured once
            rep.rho, rep.rho_pair = rho
        elif rep.rho is not None:
            rho = (rep.rho, rep.rho_pair)
        row = {'labels': kind, **rep.to_dict(),
               'params_over_n_log_n_plus_r2': rep.num_parameters / rep.n_log_n_plus_r2}
        results.append(row)
        keys = ('labels', 'n', 'n_distinct', 'k', 'l', 'num_parameters', 'n_log_n_plus_r2', 'rho', 'min_margin',
                'max_error', 'seconds')
        print(json.dumps({k: row[k] for k in keys}, default=float), flush=True)
        plots.plot_interpolation(rep.margins.tolist(), rep.errors.tolist(),
                                 f'Theorem 3.2 on {source}, {kind} labels: k={rep.k}, l={rep.l}, '
                                 f'max error {rep.max_error:.1e}', out / f'expressivity_{args.name}_{kind}.png')
    path = write_json(out / f'expressivity_{args.name}.json', {
        'source': source, 'load_seconds': load_seconds, 'results': results, 'environment': environment(args)})
    print(f'wrote {path}')
    return 0


# ---------------------------------------------------------------------------------------------------------
# parsers
# ---------------------------------------------------------------------------------------------------------

GAMMA = float_in_range(0.0, 20.0)  # max |log sigma(R)|: sigma up to e^20 keeps R well inside float64


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    theory = subparsers.add_parser(
        'theory', help="the paper's theory (Sections 2-3) as runnable experiments",
        description='Hardt & Ma, Sections 2 (linear residual networks) and 3 (finite-sample expressivity).')
    sub = theory.add_subparsers(dest='theory_command', metavar='EXPERIMENT')
    sub.required = True
    fmt = DefaultsHelpFormatter

    lin = sub.add_parser(
        'linear', formatter_class=fmt, help='Section 2: Theorem 2.1 sweep, eq. (2.3), critical points, GD',
        description='Theorem 2.1 constructions on random R (1/l decay of |||A|||), eq. (2.3) at random points, '
                    'critical-point search inside the ball (Theorem 2.2), and gradient descent for the residual '
                    'vs the standard parameterisation. Writes linear.json, linear_theorem21.png, linear_gd.png.')
    lin.add_argument('--out', default='results/theory', help='output folder')
    lin.add_argument('--seed', type=int, default=0, help='seed of every random R, point and init')
    lin.add_argument('--dim', type=positive_int, default=8, help='d for gradient descent and eq. (2.3)')
    lin.add_argument('--depths', type=positive_int, nargs='+', default=[2, 4, 8, 16],
                     help='depths for gradient descent')
    lin.add_argument('--steps', type=positive_int, default=1500, help='gradient steps per run')
    lin.add_argument('--lr', type=positive_float, default=0.1, help='step size; each run uses lr / depth')
    lin.add_argument('--gamma', type=GAMMA, default=0.5, help='gamma of the target R for gradient descent')
    lin.add_argument('--init-scales', type=positive_float, nargs='+', default=[0.01, 0.1],
                     help='entry std of the small random inits (standard parameterisation)')
    lin.add_argument('--sweep-dims', type=positive_int, nargs='+', default=[3, 8, 32],
                     help='sizes d of R (Theorem 2.1)')
    lin.add_argument('--sweep-gammas', type=GAMMA, nargs='+', default=[0.05, 0.5, 2.0],
                     help='gamma = max |log sigma(R)| of the random R, in [0, 20]')
    lin.add_argument('--sweep-depths', type=int_at_least(3), nargs='+',
                     help='depths l (Theorem 2.1; at least 3: one factor for each of U, K, V^T)',
                     default=[3, 4, 5, 6, 7, 8, 11, 16, 23, 32, 45, 64, 91, 128, 181, 256])
    lin.add_argument('--eq23-points', type=positive_int, default=200, help='random points for eq. (2.3)')
    lin.add_argument('--critical-starts', type=positive_int, default=10, help='critical-point searches (each kind)')
    lin.set_defaults(func=run_linear)

    exp = sub.add_parser(
        'expressivity', formatter_class=fmt, help='Section 3: Theorem 3.2 network that fits every training point',
        description='Builds the Theorem 3.2 residual network (Lemma B.1 blocks chained as in Lemma B.2) that maps '
                    'every training input to exactly its one-hot label, checks it on all inputs and writes '
                    'expressivity_NAME.json and one PNG per label kind.')
    exp.add_argument('--out', default='results/theory', help='output folder')
    exp.add_argument('--name', default='synthetic', help='file stem: expressivity_NAME.json')
    exp.add_argument('--seed', type=int, default=0, help='seed of the data, A_0 and surrogate labels')
    exp.add_argument('--dataset', choices=['synthetic', 'cifar10', 'cifar100'], default='synthetic')
    exp.add_argument('--data-root', default=None,
                     help='the official CIFAR python release, archive or folder (required for cifar10/cifar100)')
    exp.add_argument('--n', type=int_at_least(2), default=None,
                     help='number of training points (synthetic: 500; CIFAR: all 50,000)')
    exp.add_argument('--dim', type=positive_int, default=64, help='synthetic: input dimension d')
    exp.add_argument('--classes', type=positive_int, default=10, help='synthetic: number of classes r')
    exp.add_argument('--close-pairs', type=non_negative_int, default=10,
                     help='synthetic: near-duplicate pairs with different labels (small rho)')
    exp.add_argument('--labels', nargs='+', choices=['true', 'random'], default=['true', 'random'],
                     help='fit the true labels and/or uniformly random ones')
    exp.add_argument('--k', type=positive_int, default=None, help='width k (default ceil(8 ln n)); doubled on failure')
    exp.add_argument('--max-k', type=positive_int, default=None, help='largest width tried (default 8 k)')
    exp.add_argument('--order', choices=['norm', 'index'], default='norm',
                     help="batches by decreasing ||A_0 x|| ('norm') or the paper's index order")
    exp.add_argument('--no-center', action='store_true', help='do not subtract the mean input')
    exp.add_argument('--no-rho', action='store_true', help='skip measuring the separation rho (O(n^2 d))')
    exp.set_defaults(func=run_expressivity)
