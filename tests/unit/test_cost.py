"""The cost estimate (scripts/cost.py): images per stage follow the protocol, hours follow the
measured seconds per image, and Ray's wall time counts rounds of folds."""
import pandas as pd
import pytest

import cost
from helpers import config


def test_workload_counts_the_protocol_images():
    P = config.make_profile("paper")
    w = cost.workload(P, n_cls=1000, n_seg=800).set_index("stage")
    unet = w.loc["02 UNet"]
    # 10 folds x 25 epochs x (800 * 0.9 * 0.9) training images
    assert unet["train_images"] == pytest.approx(10 * 25 * 800 * 0.9 * 0.9)
    # each epoch's validation pass (800 * 0.9 * 0.1) and each test fold (80) once
    assert unet["infer_images"] == pytest.approx(10 * (25 * 800 * 0.9 * 0.1 + 80))
    hr = w.loc["04 HRNet (segmented)"]
    assert hr["epochs"] == 100 and hr["train_images"] == pytest.approx(10 * 100 * 1000 * 0.9 * 0.9)
    audits = w.loc["05 audit CNNs"]
    assert audits["runs"] == 4 and audits["train_images"] == pytest.approx(4 * hr["train_images"])
    assert (w.index == "05 Table 7 baselines").sum() == 3


def test_estimate_multiplies_rates_and_counts_rounds_of_folds():
    work = pd.DataFrame([{"stage": "s", "network": "a", "folds": 10, "epochs": 1, "runs": 1,
                          "train_images": 3600.0, "infer_images": 7200.0}])
    rates = pd.DataFrame([{"network": "a", "size": 512, "train_s_per_image": 1.0, "infer_s_per_image": 0.5}])
    e = cost.estimate(work, rates, devices=8).iloc[0]
    assert e["device_hours"] == pytest.approx(2.0)  # 3600 s + 3600 s
    assert e["wall_hours_on_n"] == pytest.approx(2.0 / 10 * 2)  # 10 folds on 8 devices: 2 rounds
    assert cost.estimate(work, rates, devices=10).iloc[0]["wall_hours_on_n"] == pytest.approx(0.2)


def test_cli_times_every_network_of_a_profile(tmp_path, capsys):
    est = cost.main(["--profile", "smoke", "--steps", "1", "--threads", "1", "--n-cls", "100",
                     "--n-seg", "60", "--csv", str(tmp_path / "c.csv")])
    P = config.make_profile("smoke")
    assert set(est["network"].str.split(" ").str[0]) == {"unet", P.hrnet, *P.baselines, P.audit_model} \
        | {P.hrnet}
    assert (est["train_s_per_image"] > 0).all() and (est["device_hours"] > 0).all()
    assert (tmp_path / "c.csv").is_file() and "total" in capsys.readouterr().out
