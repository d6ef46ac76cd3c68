"""Install-script behaviour that can be checked without reinstalling."""
import importlib.util
import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _cxx_std():
    spec = importlib.util.spec_from_file_location(
        'cxx_std', os.path.join(ROOT, 'tools', 'install', 'cxx_std.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.cxx_std_for_torch


@pytest.mark.parametrize('version,std', [
    ('2.1.0', 'c++17'), ('2.13.0+cpu', 'c++17'), ('2.14.1', 'c++20'),
    ('2.14.1+cu130', 'c++20'), ('2.15.0.dev20261101', 'c++20'), ('3.0.0', 'c++20'),
    ('1.13.1', 'c++17')])
def test_cxx_standard_for_torch(version, std):
    assert _cxx_std()(version) == std


def test_cxx_standard_bad_version():
    with pytest.raises(ValueError, match='torch version'):
        _cxx_std()('latest')


def test_install_script_parses():
    proc = subprocess.run(['bash', '-n', os.path.join(ROOT, 'tools', 'install.sh')],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_install_is_idempotent_when_complete():
    """In the environment the tests run in, a re-run skips every step quickly."""
    if os.environ.get('HCLIP_SKIP_INSTALL_RERUN'):
        pytest.skip('HCLIP_SKIP_INSTALL_RERUN set')
    venv = os.path.join(ROOT, '.venv')
    if not os.path.isdir(venv):
        pytest.skip('no .venv made by tools/install.sh here')
    env = dict(os.environ, HCLIP_VENV=os.path.realpath(venv))
    proc = subprocess.run(['bash', os.path.join(ROOT, 'tools', 'install.sh')],
                          capture_output=True, text=True, env=env, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    for msg in ('already installed', 'already satisfied', 'already importable, skipping build'):
        assert msg in out, out[-3000:]
    assert 'Building wheel' not in out


def test_ci_runs_the_readme_commands():
    """.ci/run calls exactly the install and test commands the README gives."""
    ci = open(os.path.join(ROOT, '.ci', 'run')).read()
    readme = open(os.path.join(ROOT, 'README.md')).read()
    cmds = [ln.strip() for ln in ci.splitlines() if ln.strip().startswith(('bash tools/', '.venv/'))]
    assert cmds, 'no commands found in .ci/run'
    for cmd in cmds:
        assert cmd in readme, f'.ci/run runs {cmd!r}, which the README does not give'
