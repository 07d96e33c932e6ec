"""The throughput bench on a tiny network: it runs both modes and writes the documented CSV."""
import numpy as np
import pandas as pd
import pytest
import torch

import bench
from helpers import config, train


def test_bench_writes_the_csv(tmp_path):
    out = tmp_path / "bench.csv"
    bench.main(["--profile", "smoke", "--models", "resnet18", "--size", "32", "--batch", "4",
                "--steps", "1", "--warmup", "1", "--csv", str(out), "--threads", "1"])
    df = pd.read_csv(out)
    assert list(df.columns) == bench.COLUMNS
    assert list(df["mode"]) == bench.modes("cpu") and (df["model"] == "resnet18").all()
    assert {"naive", "channels_last"} <= set(df["mode"])
    assert (df["train_img_s"] > 0).all() and (df["infer_img_s"] > 0).all()
    assert df.loc[df["mode"] == "naive", "train_speedup"].iloc[0] == pytest.approx(1.0)
    assert bench.networks(config.make_profile("cpu")) == ["hrnet_w18_small", "resnet152", "densenet121",
                                                          "efficientnet_b4"]


def test_fast_input_path_matches_the_naive_one():
    imgs = np.random.default_rng(0).integers(0, 256, (3, 16, 16), dtype=np.uint8)
    a = bench.naive_input(imgs, "cpu")
    b = train.to_input(imgs, "cpu", channels_last=True)
    c = train.to_input(torch.from_numpy(imgs), "cpu")
    assert b.is_contiguous(memory_format=torch.channels_last) and c.is_contiguous()
    assert torch.allclose(a, b, atol=1e-6) and torch.allclose(a, c, atol=1e-6)


def test_the_chosen_path_is_never_slower_than_naive():
    df = pd.DataFrame({"model": ["a", "a", "b", "b", "b"],
                       "mode": ["naive", "channels_last", "naive", "channels_last", "compiled"],
                       "train_img_s": [10.0, 8.0, 10.0, 25.0, 40.0]})
    df["train_speedup"] = df["train_img_s"] / 10.0
    best = bench.chosen(df).set_index("network")
    assert best.loc["a", "path"] == "naive" and best.loc["a", "train_speedup"] == 1.0
    assert best.loc["b", "path"] == "channels_last"          # compiled is not a training path


def test_training_follows_the_table_for_this_hardware(tmp_path):
    from helpers.run import compute

    table = tmp_path / "fast_path.csv"
    hw = compute.hardware("cpu")
    best = pd.DataFrame({"network": ["resnet18", "densenet121"], "path": ["naive", "channels_last"],
                         "train_speedup": [1.0, 1.4]})
    pd.DataFrame([{"hardware": "cuda", "network": "resnet18", "path": "bf16+channels_last",
                   "train_speedup": 3.0, "measured_utc": "2026-01-01", "revision": "x"}]
                 ).to_csv(table, index=False)
    bench.write_table(best, "cpu", table)
    t = pd.read_csv(table)
    assert len(t) == 3 and set(t["hardware"]) == {"cuda", hw}   # another hardware's row is kept
    p = config.make_profile("smoke")                               # asks for bf16 and channels_last
    assert p.channels_last and p.bf16
    r18 = compute.for_network(p, "resnet18", "cpu", table)
    assert not r18.channels_last and not r18.bf16                  # measured: naive is fastest here
    dn = compute.for_network(p, "densenet121", "cpu", table)
    assert dn.channels_last and not dn.bf16
    assert compute.for_network(p, "efficientnet_b0", "cpu", table) == p   # not measured: as asked
    off = compute.for_network(config.make_profile("smoke", {"channels_last": False}), "densenet121",
                              "cpu", table)
    assert not off.channels_last                                   # a profile's "off" stays off
    compute._table.cache_clear()
