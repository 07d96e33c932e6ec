"""The verdict on the paper's claims: one rule for every claim, and the README's table equal to the
one generated from the committed run it names."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers.evidence import verdict as V
from helpers.run.artefacts import ART

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("lo, hi, t, side, reach, want", [
    (0.6, 0.7, 0.5, "above", False, "supported"),
    (0.3, 0.4, 0.5, "above", False, "refuted"),
    (0.45, 0.55, 0.5, "above", False, "not supported"),
    (0.3, 0.4, 0.5, "below", False, "supported"),
    (0.6, 0.7, 0.5, "below", False, "refuted"),
    (0.97, 0.995, 0.9926, "above", True, "supported"),    # the interval holds the paper's value
    (0.97, 0.98, 0.9926, "above", True, "refuted"),       # the paper's value lies above it
    (np.nan, 0.5, 0.5, "above", False, V.NOT_TESTABLE),
])
def test_one_rule_for_every_claim(lo, hi, t, side, reach, want):
    assert V.rule(lo, hi, t, side, reach) == want


def _tables(learned: bool = True):
    t7 = pd.DataFrame([dict(model="hrnet", accuracy=0.80, accuracy_lo=0.77, accuracy_hi=0.83,
                            sensitivity=0.99, sensitivity_lo=0.97, sensitivity_hi=1.0,
                            specificity=0.84, specificity_lo=0.79, specificity_hi=0.87)])
    ft = pd.DataFrame([dict(fold=str(k), accuracy=a, accuracy_lo=a - 0.05, accuracy_hi=min(1, a + 0.05))
                       for k, a in enumerate([0.9, 0.75, 0.8])] + [dict(fold="mean", accuracy=0.1,
                                                                        accuracy_lo=0, accuracy_hi=0.2)])
    comp = pd.DataFrame([dict(model="resnet152", auc_diff=0.05, auc_diff_lo=0.01, auc_diff_hi=0.09),
                         dict(model="densenet121", auc_diff=-0.02, auc_diff_lo=-0.06, auc_diff_hi=0.02),
                         dict(model="hrnet_unsegmented", auc_diff=-0.05, auc_diff_lo=-0.08,
                              auc_diff_hi=-0.02)])
    heat = pd.DataFrame([dict(quantity="share_lung", model="hrnet (segmented)", fold="pooled", label="all",
                              mean=0.4, lo=0.35, hi=0.45, chance=0.3)])
    within = pd.DataFrame([dict(model="hrnet", source="ieee8023", auc=0.5, auc_lo=0.43, auc_hi=0.58,
                                n_pos=318, n_neg=76),
                           # two negatives: too few to judge a source by (V.MIN_PER_CLASS)
                           dict(model="hrnet", source="figure1", auc=0.17, auc_lo=0.0, auc_hi=0.36,
                                n_pos=26, n_neg=2)])
    learning = pd.DataFrame([dict(model="hrnet", learned=learned)])
    return t7, ft, comp, heat, within, learning


def test_claims_read_the_run_and_give_known_verdicts():
    t = V.claims(*_tables()).set_index("claim")
    assert list(t.columns) == V.COLUMNS[1:]
    v = t["verdict"]
    assert v.filter(like="HRNet accuracy").iloc[0] == "refuted"          # 99.26 % above [77, 83]
    assert v.filter(like="HRNet sensitivity").iloc[0] == "supported"     # 98.53 % inside [97, 100]
    assert v.filter(like="every test fold").iloc[0] == "refuted"         # lowest fold 0.75 [0.70, 0.80]
    assert "lowest fold: 75.0 %" in t["measured"].filter(like="every test fold").iloc[0]
    assert v["HRNet beats ResNet152 (Table 7)"] == "supported"
    assert v["HRNet beats DenseNet121 (Table 7)"] == "not supported"
    assert v["HRNet beats EfficientNet-B4 (Table 7)"] == V.NOT_TESTABLE  # not in this run
    assert v["segmentation helps (Fig. 9)"] == "refuted"
    assert v["the model looks at the lungs (Figs. 9, 12)"] == "supported"
    assert v["unbiased: detects COVID-19 within one hospital"] == "not supported"
    assert set(v) <= set(V.VERDICTS)


def test_a_model_that_did_not_learn_makes_its_claims_not_testable():
    t = V.claims(*_tables(learned=False))
    assert (t["verdict"] == V.NOT_TESTABLE).all()


def _check(readme: str) -> list[str]:
    """Each of README's verdict blocks must be exactly the table generated from the run it names;
    returns the folders named."""
    blocks = list(re.finditer(r"<!-- verdict: (\S+) -->\n(.*?)<!-- /verdict -->", readme, re.S))
    assert blocks, "README.md has no <!-- verdict: figures/NAME --> ... <!-- /verdict --> block"
    for m in blocks:
        folder = ROOT / m.group(1)
        table = ART.verdict.find_in(folder)
        assert table is not None, f"{folder}/verdict.csv is missing: publish the run README cites"
        assert m.group(2) == V.markdown(table), \
            f"README's verdict table for {m.group(1)} differs from the generated one"
    return [m.group(1) for m in blocks]


def test_readme_verdict_equals_the_committed_run():
    """README.md shows the verdict table of the committed cpu run (and may show others) between
    markers naming each folder."""
    assert "figures/cpu" in _check((ROOT / "README.md").read_text())


@pytest.mark.parametrize("block", [0, -1])
def test_the_readme_check_fails_when_one_number_is_altered(block):
    readme = (ROOT / "README.md").read_text()
    start = [m.start() for m in re.finditer("<!-- verdict: ", readme)][block]
    digit = re.compile(r"\d").search(readme, readme.index("|", start))
    altered = readme[:digit.start()] + str((int(digit.group()) + 1) % 10) + readme[digit.end():]
    with pytest.raises(AssertionError, match="differs"):
        _check(altered)


def test_each_notebook_reads_the_verdict_on_its_claims(tmp_path):
    """Notebook 04 reads the HRNet-number claims, 06 every claim, from the saved verdict table;
    before 06 has run the reading says where the verdict will come from."""
    from helpers.evidence import verdict

    assert "No verdict in this run yet" in verdict.reading(tmp_path, "04")
    (tmp_path / "figures").mkdir()
    shutil.copy(ROOT / "figures/cpu-sites/verdict.csv", tmp_path / "figures/verdict.csv")
    t = pd.read_csv(ROOT / "figures/cpu-sites/verdict.csv")
    r04 = verdict.reading(tmp_path, "04").splitlines()[1:]
    assert len(r04) == 4 and all(line.startswith("- HRNet ") or line.startswith("- every test fold")
                                 for line in r04)
    assert len(verdict.reading(tmp_path, "06").splitlines()) == len(t) + 1
    first = t.iloc[0]
    assert f"measured {first['measured']} -> {first['verdict'].upper()}" in verdict.reading(tmp_path, "06")
    with pytest.raises(ValueError, match="unknown notebook"):
        verdict.reading(tmp_path, "07")
