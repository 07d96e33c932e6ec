"""bf16 autocast only where the hardware has it (helpers.run.compute)."""
import torch

from helpers.run import compute


def test_autocast_follows_the_hardware(monkeypatch):
    x = torch.ones(2, 3)
    w = torch.ones(3, 4)
    monkeypatch.setattr(compute, "bf16_supported", lambda device="cpu": True)
    with compute.autocast("cpu", True):
        assert (x @ w).dtype == torch.bfloat16
    with compute.autocast("cpu", False):
        assert (x @ w).dtype == torch.float32
    monkeypatch.setattr(compute, "bf16_supported", lambda device="cpu": False)
    with compute.autocast("cpu", True):  # asked for, but emulated bf16 is 10-20x slower: float32
        assert (x @ w).dtype == torch.float32
    assert not compute.uses_bf16("cpu", True)


def test_bf16_supported_answers_for_this_machine():
    assert isinstance(compute.bf16_supported("cpu"), bool)
