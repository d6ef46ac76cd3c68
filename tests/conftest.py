import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='session')
def repo_root():
    return ROOT


def run_tool(args, cwd=None, env=None, timeout=900):
    """Run a repository script with this interpreter; return the CompletedProcess."""
    import subprocess
    full_env = dict(os.environ)
    full_env.setdefault('OMP_NUM_THREADS', '1')
    if env:
        full_env.update(env)
    return subprocess.run([sys.executable] + list(args), cwd=cwd or ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
