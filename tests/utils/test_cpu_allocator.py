"""The CPU allocator modes, checked by what the kernel counts: page faults of reallocating a
large tensor (a subprocess, so that the test process keeps glibc's own settings)."""
import subprocess
import sys
import textwrap

import pytest

from mmseg_hclip.utils.cpu_allocator import _glibc, set_cpu_allocator

needs_glibc = pytest.mark.skipif(_glibc() is None, reason='needs glibc (Linux)')

SCRIPT = textwrap.dedent('''
    import resource, sys
    import torch
    from mmseg_hclip.utils.cpu_allocator import set_cpu_allocator, cpu_allocator_mode
    mode = sys.argv[1]
    if mode != 'glibc':
        assert set_cpu_allocator(mode) and cpu_allocator_mode() == mode
    def faults_of_one_step():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        x = torch.empty(64 * 2**20 // 4)  # 64 MiB: above glibc's largest mmap threshold
        x.fill_(1.0)
        y = x + 1  # a second one, freed with x at the end of the step
        del x, y
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    faults_of_one_step()  # the first step grows the heap in any mode
    print(min(faults_of_one_step() for _ in range(3)))
''')


def _faults(mode):
    out = subprocess.run([sys.executable, '-c', SCRIPT, mode], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return int(out.stdout.split()[-1])


@needs_glibc
def test_keep_reuses_freed_memory_without_page_faults():
    pages = 2 * 64 * 2**20 // 4096  # two 64 MiB tensors per step
    glibc, default, keep = _faults('glibc'), _faults('default'), _faults('keep')
    assert glibc > 0.9 * pages, glibc  # glibc maps and zeroes every large block again
    assert default > 0.9 * pages, default  # 'default' = that behaviour
    assert keep < 0.05 * pages, keep  # 'keep': the freed heap is reused


def test_bad_mode_names_the_choices():
    with pytest.raises(ValueError, match="'keep'"):
        set_cpu_allocator('tcmalloc')


@needs_glibc
def test_hook_sets_the_mode_for_the_run_and_restores_it(monkeypatch):
    from mmseg_hclip.engine.hooks import CPUAllocatorHook
    from mmseg_hclip.utils import cpu_allocator
    calls = []
    monkeypatch.setattr(cpu_allocator, '_mode', None)
    real = cpu_allocator.set_cpu_allocator

    def spy(mode, release=True):
        calls.append(mode)
        return real(mode, release)
    monkeypatch.setattr('mmseg_hclip.engine.hooks.cpu_allocator_hook.set_cpu_allocator', spy)
    hook = CPUAllocatorHook()
    hook.before_run(None)
    assert cpu_allocator.cpu_allocator_mode() == 'keep'
    hook.after_run(None)
    assert calls == ['keep', 'default'] and cpu_allocator.cpu_allocator_mode() == 'default'
    with pytest.raises(ValueError, match='CPUAllocatorHook'):
        CPUAllocatorHook(mode='never')
