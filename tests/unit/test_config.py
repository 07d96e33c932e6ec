import dataclasses

import pytest

from helpers import config


def test_profiles_are_frozen():
    p = config.make_profile("smoke")
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.cls_epochs = 3  # type: ignore[misc]


def test_paper_profile_carries_the_paper_values():
    p = config.make_profile("paper")
    assert (p.seg_size, p.seg_folds, p.unet_epochs, p.unet_lr) == (512, 10, 25, 0.005)
    assert (p.dilate_iters, p.close_iters, p.area_threshold) == (8, 2, 50_000)
    assert (p.n_folds, p.cls_lr, p.momentum, p.weight_decay, p.lr_factor) == (10, 0.01, 0.8, 1e-4, 0.1)
    assert p.lr_milestones() == [30, 60, 90]
    assert p.baselines == ("resnet152", "densenet121", "efficientnet_b4")
    assert p.unet_base_channels == 32 and p.data == "real"


def test_area_threshold_scales_with_area():
    assert config.make_profile("paper", {"seg_size": 256}).area_threshold == 12_500
    assert config.make_profile("paper", {"seg_size": 64}).area_threshold == round(50_000 / 64)


def test_lr_steps_scale_with_epochs():
    p = config.make_profile("paper", {"cls_epochs": 10})
    assert p.lr_milestones() == [3, 6, 9]
    assert config.make_profile("paper", {"cls_epochs": 1}).lr_milestones() == []


def test_unknown_override_is_rejected_with_the_valid_keys():
    with pytest.raises(KeyError, match="cls_epoch.*valid keys"):
        config.make_profile("smoke", {"cls_epoch": 2})


def test_unknown_profile_and_bad_values():
    with pytest.raises(ValueError, match="unknown profile"):
        config.make_profile("laptop")
    with pytest.raises(ValueError, match="multiple of 16"):
        config.make_profile("smoke", {"seg_size": 50})
    with pytest.raises(ValueError, match="shortcut_strength"):
        config.make_profile("smoke", {"shortcut_strength": 1.5})
    with pytest.raises(TypeError):
        config.make_profile("smoke", {"bf16": 1})


def test_override_types_are_coerced():
    p = config.make_profile("smoke", {"lr_steps": [1, 2], "cls_lr": 1, "cls_epochs": 4.0})
    assert p.lr_steps == (1, 2) and isinstance(p.cls_lr, float) and p.cls_epochs == 4


def test_resolve_defaults_and_out_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("HRNET_CXR_OUT_ROOT", str(tmp_path))
    cfg = config.resolve("smoke")
    assert cfg.out_dir == (tmp_path / "smoke").resolve() and cfg.data_dir is None
    assert "smoke" in cfg.summary()


def test_resolve_rejects_data_dir_for_phantom_profile(tmp_path):
    with pytest.raises(ValueError, match="generates its own phantoms"):
        config.resolve("smoke", data_dir=tmp_path, out_dir=tmp_path / "o")


def test_resolve_real_profile_without_data_explains(tmp_path, monkeypatch):
    monkeypatch.setenv("CXR_DATA_DIR", str(tmp_path / "nowhere"))
    from helpers import paths
    monkeypatch.setattr(paths, "repo_root", lambda: tmp_path)
    with pytest.raises(FileNotFoundError, match="CXR_DATA_DIR"):
        config.resolve("cpu", out_dir=tmp_path / "o")


def test_missing_external_dir_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="EXTERNAL_DATA_DIR"):
        config.resolve("smoke", out_dir=tmp_path, external_data_dir=tmp_path / "missing")


def test_cosine_schedule_ends_near_zero_and_has_no_steps():
    import torch

    from helpers import train

    p = config.make_profile("cpu")
    assert p.lr_schedule == "cosine" and p.lr_milestones() == []
    opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=p.cls_lr)
    sched = train.make_scheduler(opt, p)
    lrs = []
    for _ in range(p.cls_epochs):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(p.cls_lr) and all(a >= b for a, b in zip(lrs, lrs[1:]))
    assert lrs[-1] < 0.02 * p.cls_lr
    paper = config.make_profile("paper")
    assert paper.lr_schedule == "steps" and paper.lr_milestones() == [30, 60, 90]


def test_for_network_roles_and_fast_path():
    p = config.make_profile("cpu")
    assert p.for_network(p.hrnet).cls_epochs == p.cls_epochs
    assert p.for_network("resnet152", "baseline").cls_epochs == p.baseline_epochs < p.cls_epochs
    assert p.for_network(p.audit_model, "audit").cls_epochs == p.audit_epochs
    # the cpu profile leaves each network's path to the measured table (helpers.run.compute) ...
    assert p.for_network("efficientnet_b4", "baseline").bf16
    # ... and a profile can still keep a network off the fast path by name prefix
    off = dataclasses.replace(p, fast_path_off=("efficientnet",))
    eff = off.for_network("efficientnet_b4", "baseline")
    assert not eff.bf16 and not eff.channels_last
    assert p.for_network("densenet121", "baseline").bf16
    paper = config.make_profile("paper")  # 0 = the classifier's epochs, the paper's protocol
    assert paper.for_network("resnet152", "baseline").cls_epochs == paper.cls_epochs == 100
    with pytest.raises(ValueError, match="role"):
        p.for_network("resnet152", "teacher")
    with pytest.raises(ValueError, match="lr_schedule"):
        config.make_profile("cpu", {"lr_schedule": "linear"})
    with pytest.raises(ValueError, match="baseline_epochs"):
        config.make_profile("cpu", {"baseline_epochs": -1})
