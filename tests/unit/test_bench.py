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
    assert list(df["mode"]) == ["naive", "fast"] and (df["model"] == "resnet18").all()
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
