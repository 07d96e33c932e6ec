"""Two cross-validation runs with the same seed give byte-identical fold predictions (README,
"Determinism"). Trains two tiny classifiers twice: run under /tmp/hrnet-cpu.lock."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from helpers import config, curate, train
from helpers.data import decode, phantoms
from helpers.data import manifest as mf


@pytest.fixture(scope="module")
def phantom_set(tmp_path_factory):
    root = phantoms.generate(tmp_path_factory.mktemp("ph"), n_patients=16, images_per_patient=(1, 1),
                             n_seg_pairs=6, size=64, seed=3)
    p = config.make_profile("smoke", {"n_folds": 2, "seg_folds": 2, "cls_size": 32, "seg_size": 32,
                                      "cls_epochs": 1, "cls_batch": 8, "cls_val_fraction": 0.25,
                                      "head_hidden": 8, "bf16": False, "channels_last": False})
    cls, _ = curate.build_indices(mf.read_manifest(root), p, seed=0)
    images = decode.load_stack([root / f for f in cls["path"]], p.cls_size)
    return p, cls, images


def test_same_seed_gives_identical_fold_predictions(phantom_set, tmp_path):
    p, cls, images = phantom_set
    y = cls["y"].to_numpy()
    threads = torch.get_num_threads()
    for run in ("a", "b"):
        train.cross_validate(p, "resnet18", "det", images, y, cls, tmp_path / run, seed=7, save_weights=False)
    assert torch.get_num_threads() == threads
    a = (tmp_path / "a" / "det" / "preds.csv").read_bytes()
    b = (tmp_path / "b" / "det" / "preds.csv").read_bytes()
    assert a == b and len(a) > 100
    other = train.cross_validate(p, "resnet18", "det", images, y, cls, tmp_path / "c", seed=8,
                                 save_weights=False)
    assert (tmp_path / "c" / "det" / "preds.csv").read_bytes() != a  # the seed matters
    assert len(other) == len(cls)


def test_stage_settings_with_the_depthwise_backward_are_byte_identical(phantom_set, tmp_path):
    """As a stage trains (repro.seed_everything: deterministic kernels, new memory not filled)
    on the fast path, EfficientNet-B4 (depthwise convolutions with helpers.run.depthwise's
    backward) gives the same bytes twice."""
    from helpers.run import repro

    p, cls, images = phantom_set
    p = dataclasses.replace(p, bf16=True, channels_last=True, cls_lr=1e-4)  # 32 px: a small step
    y = cls["y"].to_numpy()
    out = []
    for run in ("a", "b"):
        repro.seed_everything(0)
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.utils.deterministic.fill_uninitialized_memory is False
        train.cross_validate(p, "efficientnet_b4", "dw", images, y, cls, tmp_path / run, seed=5,
                             save_weights=False, role="baseline")
        out.append((tmp_path / run / "dw" / "preds.csv").read_bytes())
    assert out[0] == out[1] and len(out[0]) > 100
    assert "nan" not in out[0].decode().lower()
