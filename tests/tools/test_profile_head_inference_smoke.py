"""tools/analysis/profile_head_inference.py on the tiny config: both setups timed, operator
tables filled, the products' share within the profiled total (no timing assertions)."""
import os.path as osp

import torch

from tests.conftest import ROOT, load_script


def test_profile_head_inference_tiny(tmp_path):
    module = load_script('tools/analysis/profile_head_inference.py')
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
