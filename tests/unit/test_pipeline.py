import json

import pytest

from helpers import config, paths
from helpers.run import artefacts, notebooks, stages


def test_stage_archives_other_configuration(tmp_path):
    cfg = config.resolve("smoke", out_dir=tmp_path)
    d = stages.open_stage(cfg, "curation")
    (d / "result.csv").write_text("x\n1\n")
    stages.mark_done(cfg, "curation")
    assert stages.is_done(cfg, "curation")
    # same configuration: kept for resuming
    stages.open_stage(cfg, "curation")
    assert (d / "result.csv").is_file()
    # another configuration: moved aside, not deleted
    cfg2 = config.resolve("smoke", out_dir=tmp_path, seed=1)
    assert not stages.is_done(cfg2, "curation")
    stages.open_stage(cfg2, "curation")
    old = list(tmp_path.glob("curation.old-*"))
    assert len(old) == 1 and (old[0] / "result.csv").read_text() == "x\n1\n"
    assert not (d / "result.csv").exists()


def test_notebook_parameters_round_trip(tmp_path):
    cfg = config.resolve("smoke", out_dir=tmp_path, seed=3, overrides={"cls_epochs": 2})
    p = notebooks.notebook_parameters(cfg)
    again = config.resolve(p["PROFILE"], p["DATA_DIR"], p["OUT_DIR"], p["SEED"], p["EXTERNAL_DATA_DIR"],
                           p["OVERRIDES"])
    assert stages.config_key(again) == stages.config_key(cfg)


def test_every_stage_has_a_notebook():
    from helpers import paths
    for stage, nb in artefacts.STAGES.items():
        assert (paths.repo_root() / "notebooks" / nb).is_file(), nb
        assert set(artefacts.UPSTREAM[stage]) < set(artefacts.STAGES)


def test_downstream_resumes_when_upstream_reproduces_its_results(tmp_path):
    cfg = config.resolve("smoke", out_dir=tmp_path)
    up = stages.open_stage(cfg, "curation")
    (up / "cls_index.csv").write_text("a\n1\n")
    stages.mark_done(cfg, "curation")
    down = stages.open_stage(cfg, "unet")
    (down / "fold0.pt").write_bytes(b"weights")
    # curation runs again and writes the same results: unet's work is kept
    stages.open_stage(cfg, "curation")
    (up / "cls_index.csv").write_text("a\n1\n")
    stages.mark_done(cfg, "curation")
    stages.open_stage(cfg, "unet")
    assert (down / "fold0.pt").read_bytes() == b"weights"
    # curation changes its results: unet's earlier work is moved aside, not lost
    (up / "cls_index.csv").write_text("a\n2\n")
    stages.mark_done(cfg, "curation")
    stages.open_stage(cfg, "unet")
    assert not (down / "fold0.pt").exists()
    assert (next(tmp_path.glob("unet.old-*")) / "fold0.pt").read_bytes() == b"weights"


def test_git_revision_ignores_published_figures(tmp_path):
    import subprocess

    from helpers.run.repro import git_revision

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "figures").mkdir()
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "figures" / "SUMMARY.md").write_text("old\n")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    rev = git_revision(tmp_path)
    assert len(rev) == 40 and not rev.endswith("+dirty")
    (tmp_path / "figures" / "SUMMARY.md").write_text("new run\n")  # publishing a run
    assert git_revision(tmp_path) == rev
    (tmp_path / "code.py").write_text("x = 2\n")  # an uncommitted code change
    assert git_revision(tmp_path) == rev + "+dirty"


def test_run_manifest_keeps_earlier_runs(tmp_path):
    from helpers.run.repro import RunLog

    cfg = config.resolve("smoke", out_dir=tmp_path, seed=0)
    first = json.loads(RunLog(cfg, "hrnet").write().read_text())
    assert first["earlier_runs"] == []
    second = json.loads(RunLog(cfg, "hrnet").write().read_text())  # a resumed run of the stage
    assert len(second["earlier_runs"]) == 1
    assert second["earlier_runs"][0]["total_s"] == first["timings_s"]["total"]
    assert second["earlier_runs"][0]["finished_utc"] == first["finished_utc"]
    third = json.loads(RunLog(cfg, "hrnet").write().read_text())
    assert [r["finished_utc"] for r in third["earlier_runs"]] == [first["finished_utc"],
                                                                  second["finished_utc"]]


def test_every_profile_field_belongs_to_a_stage():
    import dataclasses

    listed = {f for names in config.STAGE_FIELDS.values() for f in names if f != "*"}
    fields = {f.name for f in dataclasses.fields(config.Profile)} - {"name"}
    assert not set(config.EXECUTION_FIELDS) & listed, "an execution setting is part of a stage's key"
    fields -= set(config.EXECUTION_FIELDS)
    assert fields - listed == set(), "Profile fields read by no stage: add them to config.STAGE_FIELDS"
    assert listed - fields == set(), "STAGE_FIELDS names fields that do not exist"
    assert set(config.STAGE_FIELDS) == set(artefacts.STAGES)


def _finish_all(cfg):
    for stage in artefacts.STAGES:
        d = stages.open_stage(cfg, stage)
        (d / "result.csv").write_text(f"{stage}\n1\n")
        stages.mark_done(cfg, stage)


def test_classifier_override_keeps_curation_unet_and_refinement(tmp_path):
    _finish_all(config.resolve("smoke", out_dir=tmp_path))
    cfg = config.resolve("smoke", out_dir=tmp_path, overrides={"cls_epochs": 2})
    done = {s: stages.is_done(cfg, s) for s in artefacts.STAGES}
    assert done == {"curation": True, "unet": True, "refine": True, "hrnet": False, "baselines": False,
                    "audits": False, "ladder": False, "sites": False, "figures": False}
    stages.open_stage(cfg, "hrnet")  # re-running 04: its old results move aside, upstream stays
    assert (tmp_path / "unet" / "result.csv").is_file() and len(list(tmp_path.glob("hrnet.old-*"))) == 1
    assert not list(tmp_path.glob("unet.old-*"))


def test_ladder_profile_reuses_every_stage_of_its_base_profile(tmp_path):
    # cpu-deconf differs from cpu only by its ladder: a finished cpu run serves it up to 05
    base, deconf = config.PROFILES["cpu"], config.PROFILES["cpu-deconf"]
    for stage in ("curation", "unet", "refine", "hrnet", "baselines", "audits", "sites"):
        assert config.stage_settings(base, stage) == config.stage_settings(deconf, stage), stage
    assert config.stage_settings(base, "ladder") != config.stage_settings(deconf, "ladder")
    _finish_all(config.resolve("smoke", out_dir=tmp_path))
    cfg = config.resolve("smoke", out_dir=tmp_path, overrides={"ladder": ["paper"]})
    done = {s: stages.is_done(cfg, s) for s in artefacts.STAGES}
    assert done == {"curation": True, "unet": True, "refine": True, "hrnet": True, "baselines": True,
                    "audits": True, "ladder": False, "sites": True, "figures": False}


def test_an_audit_setting_reruns_the_audits_and_no_classifier(tmp_path):
    """05a is a stage of its own: changing how the audits run (the permutation count of the
    low-level audit's null, the audit CNN's epochs) keeps every trained classifier, the
    baselines of notebook 05 included, and re-runs the audits and the figures only."""
    _finish_all(config.resolve("smoke", out_dir=tmp_path))
    for change in ({"n_permutations": 7}, {"audit_epochs": 3}, {"audit_cnn_permutation": True}):
        cfg = config.resolve("smoke", out_dir=tmp_path, overrides=change)
        done = {s: stages.is_done(cfg, s) for s in artefacts.STAGES}
        assert done == {"curation": True, "unet": True, "refine": True, "hrnet": True, "baselines": True,
                        "audits": False, "ladder": True, "sites": True, "figures": False}, change
    stages.open_stage(cfg, "audits")  # re-running 05a moves its own results aside, nothing else
    assert len(list(tmp_path.glob("audits.old-*"))) == 1 and not list(tmp_path.glob("baselines.old-*"))
    assert (tmp_path / "baselines" / "result.csv").is_file()


def test_unet_override_reruns_unet_and_what_follows(tmp_path):
    _finish_all(config.resolve("smoke", out_dir=tmp_path))
    cfg = config.resolve("smoke", out_dir=tmp_path, overrides={"unet_epochs": 3})
    done = {s: stages.is_done(cfg, s) for s in artefacts.STAGES}
    assert done["curation"] and not done["unet"] and not done["figures"]
    # refine and later are stale through the UNet's new results: a new UNet result moves them aside
    d = stages.open_stage(cfg, "unet")
    (d / "result.csv").write_text("unet\n2\n")
    stages.mark_done(cfg, "unet")
    stages.open_stage(cfg, "refine")
    assert len(list(tmp_path.glob("refine.old-*"))) == 1


def test_run_time_note_comes_from_the_notebook():
    assert notebooks.run_time_note("unet", "cpu").startswith("about")
    assert "not stated" in notebooks.run_time_note("unet", "no-such-profile")


@pytest.mark.parametrize("stage", sorted(artefacts.STAGES))
def test_every_profile_a_run_time_line_names_is_read(stage):
    """Each "Run time" part is "<profile> <estimate>", one profile per part, so that the line
    run_all.sh prints finds the estimate of the profile that runs. The profiles are read from the
    line itself (a line without per-profile parts, like notebook 06's, names none)."""
    nb = json.loads((paths.repo_root() / "notebooks" / artefacts.STAGES[stage]).read_text())
    line = next(x for x in "".join(nb["cells"][0]["source"]).splitlines() if "Run time" in x)
    named = [p for p in config.PROFILES if any(part.strip().startswith(p + " ")
                                               for part in line.split(":", 1)[-1].split("·"))]
    others = set(config.PROFILES)
    for profile in named:
        note = notebooks.run_time_note(stage, profile)
        assert "not stated" not in note, (stage, profile, note)
        assert not set(note.replace(",", " ").split()) & others, (stage, profile, note)  # one per part
    assert stage == "figures" or {"smoke", "cpu", "paper"} <= set(named), (stage, named, line)
