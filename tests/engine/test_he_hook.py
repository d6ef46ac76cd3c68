"""HypersphericalEnergyHook: logs the relative HE drift of the adapted text targets."""
from types import SimpleNamespace

import pytest
import torch
from mmengine.logging import MessageHub, MMLogger
from torch import nn

import mmseg_hclip  # noqa: F401  (registers the modules)
from mmseg.registry import HOOKS
from mmseg_hclip.engine.hooks import HypersphericalEnergyHook
from mmseg_hclip.peft import HCLIPAdapter
from mmseg_hclip.peft.testing import perturb_adapter, tiny_clip


class Backbone(nn.Module):

    def __init__(self, with_adapter=True, trained=True):
        super().__init__()
        self.clip = tiny_clip()
        self.adapter = None
        if with_adapter:
            self.adapter = HCLIPAdapter(self.clip, block_size=32, sides='official', dcrc='off')
            if trained:
                perturb_adapter(self.adapter, seed=3)


class Segmentor(nn.Module):

    def __init__(self, **kwargs):
        super().__init__()
        self.backbone = Backbone(**kwargs)


def make_runner(model, name, it=0):
    return SimpleNamespace(
        model=model, iter=it, message_hub=MessageHub.get_instance(name),
        logger=MMLogger.get_instance(name))


def test_hook_logs_drift_of_every_text_target():
    model = Segmentor()
    runner = make_runner(model, 'he_hook_test', it=9)
    hook = HOOKS.build(dict(type='HypersphericalEnergyHook', interval=5))
    assert isinstance(hook, HypersphericalEnergyHook)
    hook.after_train_iter(runner, batch_idx=9)  # iteration 10: logged
    hub = runner.message_hub
    expected = model.backbone.adapter.energy_drift(model.backbone.clip)
    assert len(expected) == 2 * 4  # 2 text layers x (q, k, v, out)
    for key, value in expected.items():
        assert hub.get_scalar(f'he_drift/{key}').current() == pytest.approx(value)
    assert hub.get_info('he_drift') == pytest.approx(expected)
    # POF: input-side targets (q, k, v) keep their energy; out_proj here is on the output side
    assert max(v for k, v in expected.items() if not k.endswith('out')) <= 1e-8
    assert hub.get_scalar('train/he_drift_max').current() == pytest.approx(
        max(expected.values()))
    assert hub.get_scalar('train/he_drift_max').current() > 1e-7
    assert hub.get_scalar('train/he_drift_mean').current() == pytest.approx(
        sum(expected.values()) / len(expected))
    # not on the interval: nothing new
    runner.iter = 10
    hook.after_train_iter(runner, batch_idx=10)
    assert len(hub.get_scalar('train/he_drift_max').data[0]) == 1
    # before training: logged once, drift of an untrained adapter is zero
    runner2 = make_runner(Segmentor(trained=False), 'he_hook_test_fresh')
    hook.before_train(runner2)
    assert runner2.message_hub.get_scalar('train/he_drift_max').current() <= 1e-12


def test_hook_without_adapter_is_a_no_op():
    runner = make_runner(Segmentor(with_adapter=False), 'he_hook_test_none', it=0)
    hook = HypersphericalEnergyHook(interval=1)
    hook.after_train_iter(runner, batch_idx=0)
    hook.after_train_iter(runner, batch_idx=0)
    assert 'train/he_drift_max' not in runner.message_hub.log_scalars


def test_hook_skips_adapters_without_energy_drift():
    """E.g. the LoRA baseline: nothing to log, no error."""
    model = Segmentor(with_adapter=False)
    model.backbone.adapter = torch.nn.Linear(1, 1)  # an adapter without energy_drift
    runner = make_runner(model, 'he_hook_test_lora', it=0)
    hook = HypersphericalEnergyHook(interval=1)
    hook.after_train_iter(runner, batch_idx=0)
    assert 'train/he_drift_max' not in runner.message_hub.log_scalars


def test_hook_argument_errors():
    with pytest.raises(ValueError, match='interval'):
        HypersphericalEnergyHook(interval=0)
    with pytest.raises(ValueError, match='dtype'):
        HypersphericalEnergyHook(dtype='float99')
