"""Publishing (helpers.run.publish): a finished run's figures are copied, with their provenance, into a
folder such as the repository's figures/NAME; figures of another or an unknown provenance are not
replaced unless asked; and notebook 06 itself never writes into the repository. Fake finished
figure folders and the synthetic run of test_evidence: seconds, no training."""
from __future__ import annotations

import csv
import hashlib
import json
import shutil
import sys
from functools import partial
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import test_evidence as te  # noqa: E402

from helpers import config, paths
from helpers.evidence import recomputed
from helpers.report import figures  # noqa: E402
from helpers.run import publish as P  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PNGS = ["table6_hrnet_folds.png", "table7_models.png", "ev_calibration.png"]


def data_folder(root: Path, name: str = "cxr", manifest: str = "path,label\na.png,covid\n") -> Path:
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "manifest.csv").write_text(manifest)
    return d


def finished_run(run: Path, profile: str = "cpu", seed: int = 0, data: Path | None = None,
                 external: Path | None = None, overrides: dict | None = None, pngs=PNGS,
                 revision: str = "abc1234def", tag: str = "a") -> Path:
    """A run folder whose ``figures/`` looks as notebook 06 leaves it: the PNGs its index lists,
    index.csv, README.md, SUMMARY.md, the evidence tables, run_manifest.json and DONE.json."""
    cfg = config.resolve(profile, data or "", run, seed, external or "", overrides or {})
    fig = run / "figures"
    fig.mkdir(parents=True, exist_ok=True)
    rows = ["file,paper,notebook,caption"] + [f"{p},panel,06,caption of {p}" for p in pngs]
    (fig / "index.csv").write_text("\n".join(rows) + "\n")
    for name in [*pngs, "README.md", "SUMMARY.md", *recomputed.TABLES.values()]:
        (fig / name).write_text(f"{tag}: {name} of {profile} seed {seed}\n")
    (fig / "run_manifest.json").write_text(json.dumps({"stage": "figures", "git_revision": revision,
                                                       "config": cfg.to_dict(), "seed": seed}))
    (fig / "DONE.json").write_text(json.dumps({"stage": "figures"}))
    return run


def snapshot(folder: Path) -> dict[str, tuple[int, int, str]]:
    """Every file under ``folder``: size, modification time and SHA-256."""
    return {str(f.relative_to(folder)): (f.stat().st_size, f.stat().st_mtime_ns,
                                         hashlib.sha256(f.read_bytes()).hexdigest())
            for f in sorted(folder.rglob("*")) if f.is_file()}


@pytest.fixture
def data(tmp_path) -> Path:
    return data_folder(tmp_path / "data")


def test_publish_into_an_empty_folder(tmp_path, data):
    run = finished_run(tmp_path / "run", data=data, overrides={"executor": "ray"})
    dest = tmp_path / "figures" / "cpu"
    dest.mkdir(parents=True)
    written = P.publish(run, dest)
    expected = {*PNGS, "index.csv", "README.md", "SUMMARY.md", *recomputed.TABLES.values(), P.PROVENANCE}
    assert {p.name for p in written} == expected == {p.name for p in dest.iterdir()}
    for name in expected - {P.PROVENANCE}:  # a copy: nothing recomputed
        assert (dest / name).read_bytes() == (run / "figures" / name).read_bytes()
    prov = json.loads((dest / P.PROVENANCE).read_text())
    assert prov["profile"] == "cpu" and prov["seed"] == 0 and prov["git_revision"] == "abc1234def"
    assert prov["overrides"] == {}  # the executor changes no result
    assert prov["external_data"] is None
    sha = hashlib.sha256((data / "manifest.csv").read_bytes()).hexdigest()[:16]
    assert prov["data"] == {"folder": "cxr", "manifest_sha256": sha}
    assert set(prov["files"]) == expected - {P.PROVENANCE}
    text = (dest / P.PROVENANCE).read_text()
    assert str(tmp_path) not in text and "/tmp" not in text, "a machine path in PROVENANCE.json"


def test_publish_into_a_new_folder_given_the_figures_folder(tmp_path, data):
    run = finished_run(tmp_path / "run", data=data)
    dest = tmp_path / "new" / "cpu"
    P.publish(run / "figures", dest)
    assert P.recorded(dest)["profile"] == "cpu"


def test_data_named_relative_to_the_repository():
    inside = P.data_record(paths.repo_root() / "tests")
    assert inside == {"folder": "tests", "manifest_sha256": None}
    shared = P.data_record(paths.repo_root().parent / "shared" / "data" / "cxr")
    assert shared["folder"] == "../shared/data/cxr"
    # any other folder is named by its name only, wherever the clone lies (also in /tmp beside
    # pytest's own folders)
    assert P.data_record(paths.repo_root().parent / "some-data")["folder"] == "some-data"
    assert P.data_record(None) is None


def test_republishing_the_same_provenance_replaces_quietly(tmp_path, data):
    dest = tmp_path / "dest"
    P.publish(finished_run(tmp_path / "run1", data=data, tag="first"), dest)
    (dest / "MODEL_CARD.md").write_text("written by hand\n")
    # the same configuration run again (another output folder, revision and executor), one figure fewer
    run2 = finished_run(tmp_path / "run2", data=data, overrides={"executor": "ray"}, pngs=PNGS[:2],
                        revision="fff0000", tag="second")
    P.publish(run2, dest)
    assert (dest / PNGS[0]).read_text().startswith("second")
    assert not (dest / PNGS[2]).exists(), "a figure of the earlier publication was left behind"
    assert (dest / "MODEL_CARD.md").read_text() == "written by hand\n", "a file publishing did not write"
    assert P.recorded(dest)["git_revision"] == "fff0000"


def test_same_data_elsewhere_is_the_same_provenance(tmp_path, data):
    copy = data_folder(tmp_path / "elsewhere", name="copy", manifest=(data / "manifest.csv").read_text())
    dest = tmp_path / "dest"
    P.publish(finished_run(tmp_path / "run1", data=data), dest)
    P.publish(finished_run(tmp_path / "run2", data=copy, tag="second"), dest)
    assert (dest / PNGS[0]).read_text().startswith("second")


@pytest.mark.parametrize("change, differs, words", [
    ({"seed": 1}, "seed", ["seed 0", "seed 1"]),
    ({"overrides": {"cls_epochs": 2}}, "overrides", ["overrides none", '"cls_epochs": 2']),
    ({"profile": "cpu-film"}, "profile", ["profile cpu,", "profile cpu-film,"]),
    ({"data": "other"}, "data", ["data cxr (manifest", "data other (manifest"]),
    ({"external": True}, "external_data", ["external data none", "external data ext"]),
    ({"extra": True}, "extra_data", ["data cxr (manifest", " + more (manifest"]),
])
def test_another_provenance_is_refused_unless_replace(tmp_path, data, change, differs, words):
    dest = tmp_path / "dest"
    P.publish(finished_run(tmp_path / "run1", data=data), dest)
    (dest / "notes.txt").write_text("kept\n")
    before = snapshot(dest)
    kw = dict(data=data, tag="second", pngs=PNGS[1:])
    if "seed" in change:
        kw["seed"] = change["seed"]
    if "overrides" in change:
        kw["overrides"] = change["overrides"]
    if "profile" in change:
        kw["profile"] = change["profile"]
    if "data" in change:
        kw["data"] = data_folder(tmp_path / "data2", name="other", manifest="path,label\nb.png,normal\n")
    if "external" in change:
        kw["external"] = data_folder(tmp_path / "data3", name="ext")
    if "extra" in change:  # the same DATA_DIR and one more folder in the cohort
        more = data_folder(tmp_path / "data4", name="more", manifest="path,label\nc.png,normal\n")
        kw["data"] = [data, more]
    run2 = finished_run(tmp_path / "run2", **kw)
    with pytest.raises(P.PublishRefused) as err:
        P.publish(run2, dest)
    msg = str(err.value)
    assert f"differ in {differs}" in msg and "--replace" in msg and str(dest) in msg
    for w in words:  # both provenances are named
        assert w in msg, msg
    assert snapshot(dest) == before, "a refused publication changed the destination"

    P.publish(run2, dest, replace=True)
    assert (dest / PNGS[1]).read_text().startswith("second")
    assert not (dest / PNGS[0]).exists()  # listed by the replaced publication, not by this one
    assert (dest / "notes.txt").read_text() == "kept\n"
    assert P.differences(P.recorded(dest), P.run_provenance(run2)[1]) == []


def test_unknown_provenance_is_refused_unless_replace(tmp_path, data):
    """A folder published before provenance was recorded: the committed figures/cpu as it was
    before its PROVENANCE.json (every committed folder now has one)."""
    dest = tmp_path / "cpu"
    shutil.copytree(ROOT / "figures" / "cpu", dest)
    (dest / P.PROVENANCE).unlink()
    with open(dest / "index.csv", newline="") as fh:
        old_listed = {row["file"] for row in csv.DictReader(fh)}
    before = snapshot(dest)
    run = finished_run(tmp_path / "run", data=data, pngs=PNGS[:1])
    with pytest.raises(P.PublishRefused, match="unknown provenance") as err:
        P.publish(run, dest)
    assert "profile cpu, seed 0" in str(err.value) and "--replace" in str(err.value)
    assert snapshot(dest) == before

    # neither listed in the old index nor written by a publication: e.g. MODEL_CARD.md
    extra = set(before) - old_listed - {*P.FIXED, *recomputed.TABLES.values()}
    P.publish(run, dest, replace=True)
    assert P.recorded(dest)["seed"] == 0
    assert {p.name for p in dest.glob("*.png")} == {PNGS[0]}, "figures of the old index left behind"
    for name in extra:  # never listed, never removed
        assert (dest / name).read_bytes() == (ROOT / "figures" / "cpu" / name).read_bytes()
    assert "MODEL_CARD.md" in extra


def test_a_folder_of_other_files_is_unknown_provenance(tmp_path, data):
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "mine.txt").write_text("x\n")
    run = finished_run(tmp_path / "run", data=data)
    with pytest.raises(P.PublishRefused, match="unknown provenance"):
        P.publish(run, dest)
    P.publish(run, dest, replace=True)
    assert (dest / "mine.txt").read_text() == "x\n"


def test_unfinished_or_incomplete_runs_are_not_published(tmp_path, data):
    run = finished_run(tmp_path / "run", data=data)
    (run / "figures" / "DONE.json").unlink()
    with pytest.raises(FileNotFoundError, match="DONE.json"):
        P.publish(run, tmp_path / "dest")
    run = finished_run(tmp_path / "run2", data=data)
    (run / "figures" / "SUMMARY.md").unlink()
    with pytest.raises(FileNotFoundError, match="SUMMARY.md"):
        P.publish(run, tmp_path / "dest")
    with pytest.raises(FileNotFoundError, match="notebook 06"):
        P.publish(tmp_path / "nothing", tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_index_naming_a_file_outside_the_folder_is_refused(tmp_path, data):
    run = finished_run(tmp_path / "run", data=data)
    with open(run / "figures" / "index.csv", "a") as fh:
        fh.write("../escape.png,panel,06,caption\n")
    with pytest.raises(ValueError, match="outside"):
        P.publish(run, tmp_path / "dest")


def test_command_line(tmp_path, data, capsys):
    dest = tmp_path / "dest"
    assert P.main([str(finished_run(tmp_path / "run1", data=data)), str(dest)]) == 0
    assert "published" in capsys.readouterr().out
    run2 = finished_run(tmp_path / "run2", data=data, seed=1)
    assert P.main([str(run2), str(dest)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("publish: ") and "seed 0" in err[0] and "seed 1" in err[0]
    assert P.main([str(run2), str(dest), "--replace"]) == 0
    assert P.recorded(dest)["seed"] == 1


# --------------------------------------------------------------------------------------------
# notebook 06 never writes into the repository
# --------------------------------------------------------------------------------------------
NB06 = ROOT / "notebooks" / "06_figure_generation.ipynb"


def _code_cells() -> list[str]:
    return ["".join(c["source"]) for c in json.loads(NB06.read_text())["cells"] if c["cell_type"] == "code"]


def test_notebook_06_names_no_repository_folder():
    for src in _code_cells():
        for word in ("repo_root", "publish(", "helpers.run.publish import", "import publish", "shutil"):
            assert word not in src, f"notebook 06 code uses {word!r}:\n{src}"


class _Figures:
    """``helpers.report.figures`` as the save cell sees it, except that ``write_all`` draws only the
    figures the synthetic run has artefacts for (it has no images or Grad-CAM maps)."""

    write_all = staticmethod(partial(figures.write_all, builders=[figures.table6, figures.table7]))

    def __getattr__(self, name):
        return getattr(figures, name)


@pytest.mark.parametrize("seed", [0, 1])
def test_notebook_06_save_cell_leaves_the_repository_figures_untouched(tmp_path, seed):
    """The save cell of notebook 06, run on a finished real-data run (the default seed, which the
    notebook used to publish, and seed 1): it writes its figures into OUT_DIR/figures/ only."""
    from helpers.run import stages

    run = te.make_run(tmp_path / "run")
    cfg = config.resolve("cpu", data_folder(tmp_path / "data"), run, seed)
    ev = recomputed.evidence_tables(cfg.out_dir, n_boot=100, seed=cfg.seed)
    stage = stages.Stage("figures", cfg, run_upstream=False)  # the synthetic run has no DONE files
    out = stage.out
    figs = _Figures()
    save = next(c for c in _code_cells() if c.startswith("stage.save("))  # the save cell
    assert save.startswith("stage.save(**ev)")
    repo_figures = snapshot(ROOT / "figures")
    ns = dict(cfg=cfg, ev=ev, out=out, stage=stage, recomputed=recomputed, figures=figs,
              config=config)
    exec(compile(save, str(NB06), "exec"), ns)
    figures.plots.plt.close("all")
    assert snapshot(ROOT / "figures") == repo_figures, "notebook 06 wrote into the repository's figures/"
    assert stages.is_done(cfg, "figures") and (out / "SUMMARY.md").is_file()
    # what it wrote is a finished run that can be published explicitly
    src, prov = P.run_provenance(run)
    assert src == out and prov["seed"] == seed and prov["profile"] == "cpu"
    P.publish(run, tmp_path / "published")
    assert (tmp_path / "published" / "SUMMARY.md").read_bytes() == (out / "SUMMARY.md").read_bytes()
