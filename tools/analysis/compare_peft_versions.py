"""Time two versions of ``mmseg_hclip/peft/`` against each other in one process (issue 16).

``--against REV`` (default ``d2a1ae2``, the package before the refactor into reference, engine
and wiring) is extracted from git into a temporary folder and imported under a unique name,
beside the working tree's package (or ``--new REV``), so both run in the same process on the
same random CLIP. Both adapters hold the same parameters: the new one is perturbed with its own
``testing.perturb_adapter`` and its parameters are copied into the old one (generators and
blocks matched through ``raw_parameters()``, or ``blocks.<tower>`` where a version has none).
Before any timing the two must give the same transformed weights and the same parameter
gradients (relative difference at most ``--rtol``); otherwise the script stops.

Timed with the setups of ``benchmark_peft.py``, interleaved rounds (old and new alternate in a
rotating order, so a busy machine slows both alike), per variant (``paper``, ``official`` with
each package's own ``OFFICIAL_COMPAT``):

* ``param``: the adapter alone, all transformed weights and their backward from given weight
  gradients (``benchmark_peft.parametrisation_setup``);
* ``step`` (with ``--step``): the whole adapted CLIP training step
  (``benchmark_peft.adapted_setup``).

Usage::

    python tools/analysis/compare_peft_versions.py --threads 2 --repeats 7 --step
    python tools/analysis/compare_peft_versions.py --model tiny --image-size 32 --block-size 16
"""
import argparse
import ast
import atexit
import io
import itertools
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import types
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

TOOLS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(TOOLS))
sys.path.insert(0, TOOLS)
import benchmark_peft as bp  # noqa: E402  (its setups and timing loop are reused, not copied)

PEFT = 'mmseg_hclip/peft'
DEFAULT_AGAINST = 'd2a1ae2'
VARIANTS = ('paper', 'official')
_counter = itertools.count()


class RevisionError(ValueError):
    """A revision that is missing or whose peft package cannot be loaded alone."""


class VersionsDiffer(RuntimeError):
    """The two versions do not compute the same weights from the same parameters."""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--against', default=DEFAULT_AGAINST,
                        help='git revision of the old package (default: %(default)s)')
    parser.add_argument('--new', default=None,
                        help='git revision of the new package (default: the working tree)')
    parser.add_argument('--model', default='ViT-B-16',
                        help="open_clip architecture name, or 'tiny' (peft.testing.tiny_clip)")
    parser.add_argument('--image-size', type=int, default=224)
    parser.add_argument('--prompts', type=int, default=8,
                        help='class prompts (of the model context length) for --step')
    parser.add_argument('--batch', type=int, default=1, help='images per step (--step)')
    parser.add_argument('--block-size', type=int, default=128)
    parser.add_argument('--variants', nargs='+', default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument('--step', action='store_true',
                        help='also time the whole adapted CLIP training step')
    parser.add_argument('--repeats', type=int, default=7, help='timed rounds')
    parser.add_argument('--warmup', type=int, default=1, help='untimed rounds')
    parser.add_argument('--threads', type=int, default=None, help='torch intra-op threads')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--rtol', type=float, default=1e-5,
                        help='largest allowed max|new - old| / max|old| of weights and gradients')
    parser.add_argument('--out', default='docs/benchmark_peft_refactor.md',
                        help="markdown report ('' for none)")
    args = parser.parse_args(argv)
    for name in ('repeats', 'image_size', 'prompts', 'batch', 'block_size'):
        if getattr(args, name) < 1:
            parser.error(f'--{name.replace("_", "-")} must be >= 1, got {getattr(args, name)}')
    if args.threads is not None and args.threads < 1:
        parser.error(f'--threads must be >= 1, got {args.threads}')
    return args


# --------------------------------------------------------------------------- loading
def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(['git', '-C', ROOT, *args], capture_output=True)


def resolve(rev: str) -> str:
    """Full commit hash of ``rev``; a clear error if this clone lacks it."""
    proc = _git('rev-parse', '--verify', '--quiet', f'{rev}^{{commit}}')
    if proc.returncode != 0:
        raise RevisionError(
            f'git revision {rev!r} is not in this clone ({ROOT}); fetch the history first, '
            f'e.g. `git fetch --unshallow origin` or `git fetch origin {rev}`, or pass '
            f'another revision')
    return proc.stdout.decode().strip()


def check_imports(pkg_dir: str, label: str) -> None:
    """Refuse a package that imports ``mmseg_hclip`` or any ``mm*`` package.

    Such an import would pull in the working tree's code (or the MMSeg stack) instead of the
    version under test; the package must use relative imports only.
    """
    bad = []
    for fname in sorted(os.listdir(pkg_dir)):
        if not fname.endswith('.py'):
            continue
        with open(os.path.join(pkg_dir, fname)) as f:
            tree = ast.parse(f.read(), filename=fname)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = [alias.name.split('.')[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots = [(node.module or '').split('.')[0]]
            else:
                continue
            bad += [f'{fname}:{node.lineno} imports {r}' for r in roots if r.startswith('mm')]
    if bad:
        raise RevisionError(f'{PEFT}/ of {label} cannot be loaded as a separate package: '
                            + '; '.join(bad) + ' (only relative imports are allowed)')


def _import_dir(pkg_dir: str, tag: str) -> types.ModuleType:
    import importlib.util
    name = f'_peft_{re.sub(r"[^0-9A-Za-z]", "_", tag)}_{next(_counter)}'
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(pkg_dir, '__init__.py'), submodule_search_locations=[pkg_dir])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        module.testing = importlib.import_module(f'{name}.testing')
    except Exception:
        for key in [k for k in sys.modules if k == name or k.startswith(name + '.')]:
            del sys.modules[key]
        raise
    return module


def load_peft(rev: Optional[str]) -> Tuple[types.ModuleType, str]:
    """Import ``mmseg_hclip/peft/`` of ``rev`` (None: the working tree) under a unique name.

    Returns:
        tuple: the package (with its ``testing`` module loaded) and a description of the
        version for the report.
    """
    if rev is None:
        pkg_dir = os.path.join(ROOT, PEFT)
        head = _git('rev-parse', '--short', 'HEAD').stdout.decode().strip() or '?'
        dirty = _git('status', '--porcelain', '--', PEFT).stdout.decode().split('\n')
        dirty = [line[3:] for line in dirty if line.strip()]
        label = f'working tree (HEAD {head}' + (
            f' + uncommitted changes: {", ".join(dirty)})' if dirty else ', clean)')
        check_imports(pkg_dir, label)
        return _import_dir(pkg_dir, 'worktree'), label
    commit = resolve(rev)
    archive = _git('archive', '--format=tar', commit, PEFT)
    if archive.returncode != 0:
        raise RevisionError(f'revision {rev} ({commit[:10]}) has no {PEFT}/: '
                            f'{archive.stderr.decode().strip()}')
    tmp = tempfile.mkdtemp(prefix=f'peft_{commit[:10]}_')
    atexit.register(shutil.rmtree, tmp, True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        if hasattr(tarfile, 'data_filter'):
            tar.extractall(tmp, filter='data')
        else:  # Python < 3.11.4
            tar.extractall(tmp)
    pkg_dir = os.path.join(tmp, PEFT)
    label = f'{rev} ({commit[:10]})'
    check_imports(pkg_dir, label)
    return _import_dir(pkg_dir, commit[:10]), label


# --------------------------------------------------------------------------- same parameters
def canonical_parameters(adapter: nn.Module) -> Dict[str, nn.Parameter]:
    """The adapter's parameters under version-independent names: ``tower.<image|text>`` for
    the stored blocks / generators of each tower, the parameter name for the rest."""
    if hasattr(adapter, 'raw_parameters'):
        towers = dict(adapter.raw_parameters())
    else:  # before raw_parameters(): everything of a tower under blocks.<tower>
        towers = dict(adapter.blocks.items())
    ids = {id(p) for p in towers.values()}
    out = {f'tower.{name}': p for name, p in towers.items()}
    out.update((name, p) for name, p in adapter.named_parameters() if id(p) not in ids)
    return out


def copy_parameters(src: nn.Module, dst: nn.Module) -> None:
    """Copy every parameter of ``src`` into ``dst``; the names and shapes must all match."""
    a, b = canonical_parameters(src), canonical_parameters(dst)
    if set(a) != set(b):
        only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
        raise VersionsDiffer(f'the two adapters hold different parameters: only in the new '
                             f'{only_a}, only in the old {only_b}')
    with torch.no_grad():
        for name, param in a.items():
            if param.shape != b[name].shape:
                raise VersionsDiffer(f'parameter {name}: shape {tuple(param.shape)} in the new '
                                     f'adapter, {tuple(b[name].shape)} in the old one')
            b[name].copy_(param)


def _rel_diff(new: torch.Tensor, old: torch.Tensor) -> Tuple[float, float]:
    diff = (new.detach().double() - old.detach().double()).abs().max().item()
    scale = old.detach().double().abs().max().item()
    return diff, diff / max(scale, 1e-30)


def check_same(model: nn.Module, new: nn.Module, old: nn.Module, rtol: float,
               label: str) -> Dict[str, float]:
    """Transformed weights and parameter gradients of both adapters; raise if they differ.

    Returns:
        dict: largest absolute and relative differences of weights and of gradients.
    """
    out = {}
    grads = None
    per_version = []
    for adapter in (new, old):
        adapter.zero_grad(set_to_none=True)
        weights = adapter(model)
        if grads is None:
            g = torch.Generator().manual_seed(1)
            grads = {n: torch.randn(w.shape, generator=g).to(w) for n, w in weights.items()}
        if set(weights) != set(grads):
            raise VersionsDiffer(f'{label}: the versions transform different weights: '
                                 f'{sorted(set(weights) ^ set(grads))}')
        torch.autograd.backward([weights[n] for n in grads], [grads[n] for n in grads])
        per_version.append(({n: w.detach() for n, w in weights.items()},
                            {n: p.grad for n, p in canonical_parameters(adapter).items()}))
        adapter.zero_grad(set_to_none=True)
    (w_new, g_new), (w_old, g_old) = per_version
    worst = []
    for kind, a, b in (('weight', w_new, w_old), ('gradient', g_new, g_old)):
        abs_max = rel_max = 0.0
        for name in a:
            if (a[name] is None) != (b[name] is None):
                raise VersionsDiffer(f'{label}: {kind} of {name} exists in one version only')
            if a[name] is None:
                continue
            diff, rel = _rel_diff(a[name], b[name])
            abs_max, rel_max = max(abs_max, diff), max(rel_max, rel)
            if not rel <= rtol:  # also catches NaN
                worst.append(f'{kind} {name}: max abs diff {diff:.3g} (relative {rel:.3g})')
        out[f'{kind}_abs'], out[f'{kind}_rel'] = abs_max, rel_max
    if worst:
        raise VersionsDiffer(f'{label}: the two versions differ beyond --rtol {rtol:g} on the '
                             f'same parameters, refusing to time them: ' + '; '.join(worst[:5]))
    return out


# --------------------------------------------------------------------------- main
def build_model(args) -> nn.Module:
    if args.model == 'tiny':
        from mmseg_hclip.peft.testing import tiny_clip
        return tiny_clip(image_size=args.image_size).to(args.device)
    return bp.build_clip(args)


def _uptime() -> str:
    try:
        return subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()
    except OSError:
        return 'load average: %.2f, %.2f, %.2f' % os.getloadavg()


def main(argv=None):
    args = parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    new_pkg, new_label = load_peft(args.new)
    old_pkg, old_label = load_peft(args.against)
    uptime_before = _uptime()
    print(f'new: {new_label}\nold: {old_label}\nuptime before: {uptime_before}', flush=True)

    model = build_model(args)
    image, tokens = bp.make_inputs(args, model)
    fns, checks = {}, {}
    for variant in args.variants:
        adapters = {}
        for tag, pkg in (('new', new_pkg), ('old', old_pkg)):
            kwargs = dict(pkg.OFFICIAL_COMPAT) if variant == 'official' else {}
            adapters[tag] = pkg.HCLIPAdapter(model, block_size=args.block_size, **kwargs)
        new_pkg.testing.perturb_adapter(adapters['new'])
        copy_parameters(adapters['new'], adapters['old'])
        checks[variant] = check_same(model, adapters['new'], adapters['old'], args.rtol,
                                     variant)
        print(f'{variant}: same weights (max rel diff {checks[variant]["weight_rel"]:.2e}) '
              f'and gradients ({checks[variant]["gradient_rel"]:.2e})', flush=True)
        for tag in ('old', 'new'):
            fns[f'{variant} param|{tag}'] = bp.parametrisation_setup(model, adapters[tag])
        for tag in ('old', 'new') if args.step else ():
            fns[f'{variant} step|{tag}'] = bp.adapted_setup(model, adapters[tag], image, tokens)
    print(f'timing {len(fns)} setups x {args.repeats} rounds ...', flush=True)
    times = bp.interleaved_times(fns, args.repeats, args.warmup, args.device)
    uptime_after = _uptime()
    print(f'uptime after: {uptime_after}', flush=True)

    result = dict(
        command='python ' + ' '.join([os.path.relpath(os.path.abspath(__file__))] + argv),
        new=new_label, old=old_label, model=args.model, image_size=args.image_size,
        prompts=args.prompts, batch=args.batch, block_size=args.block_size, step=args.step,
        repeats=args.repeats, warmup=args.warmup, device=args.device,
        threads=torch.get_num_threads(), torch=torch.__version__, platform=platform.platform(),
        processor=(torch.cuda.get_device_name() if args.device.startswith('cuda')
                   else bp._cpu_name()),
        uptime_before=uptime_before, uptime_after=uptime_after, checks=checks, rtol=args.rtol,
        times=times, ratios=ratios(times))
    report = render(result)
    bp.write_report(report, args.out)
    return result


def ratios(times: Dict[str, List[float]]) -> Dict[str, Dict[str, float]]:
    """setup -> new/old ratio of the medians and of the minima."""
    out = {}
    for setup in dict.fromkeys(name.split('|')[0] for name in times):
        old, new = times[f'{setup}|old'], times[f'{setup}|new']
        out[setup] = dict(median=statistics.median(new) / statistics.median(old),
                          min=min(new) / min(old))
    return out


def render(r) -> str:
    model = r['model'] + (' (peft.testing.tiny_clip)' if r['model'] == 'tiny' else '')
    lines = [
        '# Benchmark: peft package, new vs old version, one process', '',
        f"Produced by `{r['command']}` (numbers below are from that one run; script: "
        '`tools/analysis/compare_peft_versions.py`).', '',
        f"- new: {r['new']}",
        f"- old: {r['old']}",
        f"- model: {model}, random weights, {r['image_size']}², q = {r['block_size']}"
        + (f", step: {r['batch']} image(s), {r['prompts']} prompts" if r['step'] else ''),
        f"- device: {r['device']} ({r['processor']}), torch {r['torch']}, {r['threads']} "
        f"intra-op threads, {r['platform']}",
        f"- {r['warmup']} warm-up + {r['repeats']} timed rounds, setups interleaved in a "
        'rotating order',
        f"- uptime before: `{r['uptime_before']}`",
        f"- uptime after: `{r['uptime_after']}`", '',
        f"Same parameters in both versions; largest differences (must be ≤ {r['rtol']:g} "
        'relative):', '',
        '| variant | weights max abs | weights relative | gradients max abs | '
        'gradients relative |', '| --- | ---: | ---: | ---: | ---: |'
    ]
    for variant, c in r['checks'].items():
        lines.append(f"| {variant} | {c['weight_abs']:.2e} | {c['weight_rel']:.2e} | "
                     f"{c['gradient_abs']:.2e} | {c['gradient_rel']:.2e} |")
    lines += [
        '', '`param`: the adapter alone (all transformed weights, forward + backward from given '
        'weight gradients); `step`: the whole adapted CLIP training step.', '',
        '| setup | version | median (s) | min (s) | all runs (s) |',
        '| --- | --- | ---: | ---: | --- |'
    ]
    for name, times in r['times'].items():
        setup, tag = name.split('|')
        lines.append(f"| {setup} | {tag} | {statistics.median(times):.4f} | {min(times):.4f} | "
                     f"{', '.join(f'{t:.4f}' for t in times)} |")
    lines += ['', '| setup | new/old (medians) | new/old (minima) |', '| --- | ---: | ---: |']
    for setup, ratio in r['ratios'].items():
        lines.append(f"| {setup} | {ratio['median']:.3f} | {ratio['min']:.3f} |")
    return '\n'.join(lines) + '\n'


if __name__ == '__main__':
    try:
        main()
    except (RevisionError, VersionsDiffer) as err:
        sys.exit(f'error: {err}')
