"""tools/analysis/profile_head_inference.py on the tiny config: both setups timed, operator
tables filled, the products' share within the profiled total (no timing assertions)."""
import importlib.util
import os.path as osp

import torch

from tests.conftest import ROOT


def test_profile_head_inference_tiny(tmp_path):
    spec = importlib.util.spec_from_file_location(
        'hclip_tool_profile_head_inference',
        osp.join(ROOT, 'tools', 'analysis', 'profile_head_inference.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / 'inference.md'
    threads = torch.get_num_threads()
    results = module.main(['--config', osp.join(ROOT, 'configs/_base_/models/hclip_tiny.py'),
                           '--classes', '3', '--repeats', '1', '--threads', '1', '--out',
                           str(out)])
    torch.set_num_threads(threads)
    assert set(results) == {'fast, keep', 'reference, default'}
    for times, table, products, _ in results.values():
        assert len(times) == 1 and times[0] > 0
        assert 0 < products <= table['total_s'] and table['rows']
    text = out.read_text()
    assert '## Operators of head[fast, keep]' in text and '| reference, default |' in text
