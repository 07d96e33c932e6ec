"""Notebook 06's saving path, twice with different seeds, on the synthetic finished run of
test_evidence: within each run, SUMMARY.md, the evidence CSVs and the figure captions
(index.csv) must show the same numbers (figure_agreement.check_agreement). Seconds, no training."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import figure_agreement as fa  # noqa: E402
import test_evidence as te  # noqa: E402

from helpers.report import figures  # noqa: E402

# the builders the synthetic run has artefacts for (it has no images, masks or Grad-CAM maps)
BUILDERS = [figures.table6, figures.table7, figures.fig_heat_share]


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory) -> dict[int, Path]:
    out = te.make_run(tmp_path_factory.mktemp("agree_run"))
    folders = {}
    for seed in (0, 1):
        dest = out / f"figures_seed{seed}"
        fa.run_figures_stage(out, dest, seed=seed, n_boot=200, builders=BUILDERS)
        folders[seed] = dest
    return folders


@pytest.mark.parametrize("seed", [0, 1])
def test_summary_tables_and_captions_agree(two_seeds, seed):
    fa.check_agreement(two_seeds[seed], seed)


def test_the_seed_reaches_the_intervals(two_seeds):
    # otherwise a summary that mixed up the seeds could not be told apart
    a, b = (fa.formatted_intervals(two_seeds[s]) for s in (0, 1))
    assert len(a) == len(b) and a != b


def test_a_summary_from_other_tables_is_caught(two_seeds, tmp_path):
    """The check fails when SUMMARY.md and a saved table come from different computations."""
    mixed = tmp_path / "mixed"
    shutil.copytree(two_seeds[0], mixed)
    shutil.copy(two_seeds[1] / "heat_share_ci.csv", mixed / "heat_share_ci.csv")
    with pytest.raises(AssertionError):
        fa.check_agreement(mixed, 0)
    fa.check_agreement(two_seeds[0], 0)  # the untouched folder still passes
    with pytest.raises(AssertionError, match="seed 1"):
        fa.check_agreement(two_seeds[0], 1)  # and the seed is checked


def test_write_all_refuses_without_saved_tables(two_seeds, tmp_path):
    from helpers import config

    cfg = config.resolve("smoke", out_dir=two_seeds[0].parent, seed=0)
    with pytest.raises(FileNotFoundError, match="evidence tables"):
        figures.write_all(cfg, tmp_path / "empty", builders=BUILDERS)
