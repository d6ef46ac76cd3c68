import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='session')
def repo_root():
    return ROOT


def load_script(path, name=None):
    """Import the repository script ``path`` (relative to the root, e.g.
    ``'tools/analysis/benchmark.py'``) as a module, to call its functions in-process."""
    import importlib.util
    name = name or 'hclip_script_' + os.path.splitext(path)[0].replace('/', '_')
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_tool(args, cwd=None, env=None, timeout=900):
    """Run a repository script with this interpreter; return the CompletedProcess."""
    import subprocess
    full_env = dict(os.environ)
    full_env.setdefault('OMP_NUM_THREADS', '1')
    if env:
        full_env.update(env)
    return subprocess.run([sys.executable] + list(args), cwd=cwd or ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
