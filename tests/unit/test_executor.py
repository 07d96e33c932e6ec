"""Fold-level execution (helpers.run.executor): Ray gives the same files as the local loop, retries a
failing fold once and then stops with its traceback, and resumes from the folds already written.

Trains tiny networks on an embedded Ray (two CPU workers); run under /tmp/hrnet-cpu.lock."""
from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import config, curate, segment, train
from helpers.data import decode, phantoms
from helpers.data import manifest as mf
from helpers.run import artefacts, executor, stages

TINY = {"n_folds": 2, "seg_folds": 2, "cls_size": 32, "seg_size": 32, "cls_epochs": 2, "cls_batch": 8,
        "cls_val_fraction": 0.25, "head_hidden": 8, "bf16": False, "channels_last": False,
        "unet_epochs": 2, "unet_base_channels": 4, "augment": True}


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    yield executor.ray_init()
    ray.shutdown()


@pytest.fixture(scope="module")
def phantom_set(tmp_path_factory):
    root = phantoms.generate(tmp_path_factory.mktemp("ph"), n_patients=12, images_per_patient=(1, 1),
                             n_seg_pairs=8, size=64, seed=5)
    p = config.make_profile("smoke", TINY)
    cls, seg = curate.build_indices(mf.read_manifest(root), p, seed=0)
    images = decode.load_stack([root / f for f in cls["path"]], p.cls_size)
    seg_images = decode.load_stack([root / f for f in seg["path"]], p.seg_size)
    seg_masks = decode.load_stack([root / f for f in seg["mask_path"]], p.seg_size, mask=True,
                              images=[root / f for f in seg["path"]])
    return p, cls, images, seg, seg_images, seg_masks


@contextlib.contextmanager
def _threads(n: int):
    """The local loop at the thread count the Ray folds get (``torch_threads=1``: two folds at once
    on two cores; CPU kernels round differently with another thread count)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _files(d: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in sorted(d.iterdir()) if f.suffix in (".csv", ".pt", ".npz")}


def test_plan_keeps_the_local_thread_count_and_gives_each_fold_a_gpu():
    # on CPUs a fold gets the local loop's thread count: 2 threads on 2 cores run one fold at a time
    assert executor.plan(3, cpus=2, gpus=0, threads=2) == {"num_cpus": 2, "num_gpus": 0, "threads": 2,
                                                            "device": "cpu", "at_once": 1}
    assert executor.plan(3, cpus=2, gpus=0, threads=1)["at_once"] == 2  # torch_threads=1: two at once
    assert executor.plan(3, cpus=16, gpus=0, threads=4)["at_once"] == 3
    # a fold never asks for more CPUs than the largest node has (it could never be scheduled)
    assert executor.plan(4, cpus=32, gpus=0, threads=16, node_cpus=8) == {
        "num_cpus": 8, "num_gpus": 0, "threads": 16, "device": "cpu", "at_once": 4}
    # the local loop's count when torch_threads is not set
    assert executor.plan(3, cpus=2, gpus=0, threads=0, local_threads=2)["at_once"] == 1
    # a GPU fold's torch threads are the CPUs per GPU, not the driver's (8 folds x 64 threads)
    assert executor.plan(10, cpus=64, gpus=8, threads=0, local_threads=64) == {
        "num_cpus": 8, "num_gpus": 1, "threads": 8, "device": "cuda", "at_once": 8}
    with pytest.raises(ValueError, match="executor must be one of"):
        executor.run_folds(lambda **kw: {}, [0], shared={}, write=lambda k, r: None, executor="dask")


def test_switching_executor_keeps_every_stage_key(tmp_path):
    local = config.resolve("smoke", out_dir=tmp_path, overrides={"executor": "local"})
    ray = dataclasses.replace(local, profile=config.make_profile("smoke", {"executor": "ray"}))
    for stage in artefacts.STAGES:
        assert stages.config_key(local, stage) == stages.config_key(ray, stage), stage
    with pytest.raises(ValueError, match="executor must be 'local' or 'ray'"):
        config.make_profile("smoke", {"executor": "slurm"})


def test_ray_classifier_folds_equal_local(ray_session, phantom_set, tmp_path):
    p, cls, images, *_ = phantom_set
    y = cls["y"].to_numpy()
    hook = _hook(images)
    for ex in ("local", "ray"):
        pe = dataclasses.replace(p, executor=ex, torch_threads=1)
        with _threads(1):
            train.cross_validate(pe, "resnet18", "det", images, y, cls, tmp_path / ex, seed=7,
                                 after_fold=hook)
    a, b = _files(tmp_path / "local" / "det"), _files(tmp_path / "ray" / "det")
    assert set(a) == set(b) and {"preds.csv", "fold0.pt", "fold1_extra.npz"} <= set(a)
    assert all(a[f] == b[f] for f in a if f.endswith(".csv")), "predictions or histories differ"
    wa = train.load_fold_model(p, "resnet18", tmp_path / "local", "det", 1).state_dict()
    wb = train.load_fold_model(p, "resnet18", tmp_path / "ray", "det", 1).state_dict()
    assert all(np.array_equal(wa[k].numpy(), wb[k].numpy()) for k in wa)


def _hook(images):
    def hook(k, model, test_idx):
        return {"rows": np.asarray(test_idx), "mean": np.asarray(images[test_idx]).mean(axis=(1, 2))}

    return hook


def test_ray_unet_folds_equal_local(ray_session, phantom_set, tmp_path):
    p, _, _, seg, seg_images, seg_masks = phantom_set
    for ex in ("local", "ray"):
        (tmp_path / ex).mkdir()
        with _threads(1):
            segment.cross_validate(dataclasses.replace(p, executor=ex, torch_threads=1), seg_images,
                                   seg_masks, seg, tmp_path / ex, seed=3)
    a, b = _files(tmp_path / "local"), _files(tmp_path / "ray")
    assert set(a) == set(b) and "fold1.pt" in a and "dice_fold0.csv" in a
    assert all(a[f] == b[f] for f in a if f.endswith(".csv"))


def test_failing_fold_is_retried_once_then_stops_the_stage(ray_session, tmp_path):
    tries = tmp_path / "tries"
    tries.mkdir()
    written = []

    def job(*, k, device, where):
        (Path(where) / f"fold{k}-{len(list(Path(where).glob(f'fold{k}-*')))}").touch()
        if k == 1:
            raise ValueError("fold one is broken")
        return {"k": k}

    with pytest.raises(executor.FoldFailed) as err:
        executor.run_folds(job, [0, 1], shared={"where": str(tries)}, executor="ray", desc="toy",
                           write=lambda k, r: written.append(k))
    assert "toy: fold 2 failed twice" in str(err.value) and "fold one is broken" in str(err.value)
    assert sorted(f.name for f in tries.glob("fold1-*")) == ["fold1-0", "fold1-1"]  # one retry
    assert 1 not in written


def test_interrupted_ray_run_resumes_from_written_folds(ray_session, phantom_set, tmp_path):
    p, cls, images, *_ = phantom_set
    y = cls["y"].to_numpy()
    pr = dataclasses.replace(p, executor="ray")
    train.cross_validate(pr, "resnet18", "det", images, y, cls, tmp_path, seed=7)
    d = tmp_path / "det"
    full = (d / "preds.csv").read_bytes()
    kept = (d / "fold0.pt").stat().st_mtime_ns
    for f in ("fold1_preds.csv", "fold1_history.csv", "fold1.pt", "preds.csv", "history.csv"):
        (d / f).unlink()  # as if the run stopped while fold 2 was training
    train.cross_validate(pr, "resnet18", "det", images, y, cls, tmp_path, seed=7)
    assert (d / "fold0.pt").stat().st_mtime_ns == kept  # fold 1 reused, not trained again
    assert (d / "preds.csv").read_bytes() == full


def _two_jobs(images, y, cls, hook):
    """Two cross-validations of different networks, one of them on another target and folder."""
    other = (1 - y).astype(np.int64)
    return {"det": dict(name="resnet18", images=images, y=y, index=cls, after_fold=hook),
            "flip": dict(name="resnet18", tag="flipped", images=images, y=other, index=cls,
                         save_weights=False, folder="flip_dir", role="audit")}


def test_many_cross_validations_write_what_one_call_each_writes(ray_session, phantom_set, tmp_path):
    """cross_validate_many on either executor writes, per job, the files one cross_validate call
    writes; on Ray the folds of both jobs are queued together (four tasks, two at a time)."""
    p, cls, images, *_ = phantom_set
    y = cls["y"].to_numpy()
    hook = _hook(images)
    pe = dataclasses.replace(p, executor="local", torch_threads=1)
    with _threads(1):
        for key, job in _two_jobs(images, y, cls, hook).items():
            kw = {k: v for k, v in job.items() if k not in ("name", "images", "y", "index")}
            kw.setdefault("tag", key)
            train.cross_validate(pe, job["name"], images=job["images"], y=job["y"], index=job["index"],
                                 out_dir=tmp_path / "single", seed=7, **kw)
        for ex in ("local", "ray"):
            seconds: dict[str, float] = {}
            out = train.cross_validate_many(dataclasses.replace(pe, executor=ex),
                                            _two_jobs(images, y, cls, hook), tmp_path / ex, seed=7,
                                            timings=seconds)
            assert set(out) == {"det", "flip"} and set(out["flip"]["model"]) == {"flipped"}
            assert seconds["det"] > 0 and seconds["flip"] > 0
    for folder in ("det", "flip_dir"):
        a = _files(tmp_path / "single" / folder)
        assert "preds.csv" in a and ("fold1.pt" in a) == (folder == "det")
        for ex in ("local", "ray"):
            b = _files(tmp_path / ex / folder)
            assert set(a) == set(b), (folder, ex)
            assert all(a[f] == b[f] for f in a if f.endswith(".csv")), (folder, ex)


def test_many_cross_validations_reject_a_malformed_job(phantom_set, tmp_path):
    p, cls, images, *_ = phantom_set
    y = cls["y"].to_numpy()
    with pytest.raises(TypeError, match="job 'a': unknown keys \\['epochs'\\]"):
        train.cross_validate_many(p, {"a": dict(name="resnet18", images=images, y=y, index=cls, epochs=3)},
                                  tmp_path, seed=0)
    with pytest.raises(TypeError, match="job 'b': missing \\['y'\\]"):
        train.cross_validate_many(p, {"b": dict(name="resnet18", images=images, index=cls)}, tmp_path, seed=0)
    assert not any(tmp_path.iterdir())  # nothing trained, nothing written


def test_a_failing_task_of_many_names_its_job(ray_session, tmp_path):
    written = []

    def job(*, k, device, bad):
        if bad and k == 0:
            raise ValueError("this network is broken")
        return {"k": k}

    tasks = [executor.Task(job, k, {"bad": name == "b"}, lambda k, r, n=name: written.append((n, k)),
                           f"{name} fold {k + 1}") for name in ("a", "b") for k in (0, 1)]
    with pytest.raises(executor.FoldFailed, match="many: b fold 1 failed twice") as err:
        executor.run_tasks(tasks, executor="ray", desc="many")
    assert "this network is broken" in str(err.value)
    assert ("b", 0) not in written
