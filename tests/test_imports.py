"""`import mmseg_hclip` registers the package's modules into MMSeg's registries."""
import importlib
import pkgutil

import mmseg_hclip


def test_version():
    assert isinstance(mmseg_hclip.__version__, str)


def test_every_submodule_imports():
    for mod in pkgutil.walk_packages(mmseg_hclip.__path__, 'mmseg_hclip.'):
        importlib.import_module(mod.name)


def test_peft_imports_no_mm_packages():
    """The method package is plain PyTorch: it must not import mm* packages."""
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, '-c', _isolated_peft_import()],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _isolated_peft_import() -> str:
    # Load mmseg_hclip.peft with a stub parent package so the parent's
    # __init__ (which registers MMSeg modules) does not run.
    return '''
import importlib.util, os, sys, types
spec = importlib.util.find_spec("mmseg_hclip")
pkg = types.ModuleType("mmseg_hclip")
pkg.__path__ = list(spec.submodule_search_locations)
sys.modules["mmseg_hclip"] = pkg
import mmseg_hclip.peft
bad = sorted(m for m in sys.modules if m.split(".")[0] in ("mmcv", "mmengine", "mmseg", "mmpretrain"))
print(bad)
sys.exit(1 if bad else 0)
'''


def test_registrations():
    from mmseg.registry import DATASETS, HOOKS, METRICS, MODELS, TRANSFORMS
    expected = {
        MODELS: ['HCLIPBackbone', 'HCLIPCostAggHead', 'HCLIPSegmentor'],
        DATASETS: ['ADE20K847Dataset', 'PascalContext459Dataset', 'PascalVOC20Dataset',
                   'PascalVOC20bDataset'],
        TRANSFORMS: ['LoadAnnotations16'],
        HOOKS: ['VocabularyHook'],
    }
    missing = [(reg.name, name) for reg, names in expected.items() for name in names
               if reg.get(name) is None]
    assert not missing, f'not registered: {missing}'
    assert METRICS.get('IoUMetric') is not None


def test_package_imports_without_the_mmseg_stack():
    """Where mmseg/mmengine/mmcv are not installed, mmseg_hclip.peft still works."""
    import subprocess
    import sys
    code = '''
import sys, warnings
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("mmseg", "mmengine", "mmcv", "mmpretrain"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Block())
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import mmseg_hclip
from mmseg_hclip.peft import HCLIPAdapter, cayley
assert any("only mmseg_hclip.peft is available" in str(w.message) for w in caught), caught
assert not hasattr(mmseg_hclip, "models")
'''
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
