"""The stage contract and the package's shape: one registry of artefacts that reads and writes, one
stage object, the layers of the import contract, no private names used across modules."""
from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import config
from helpers.run import artefacts, stages, store
from helpers.run.artefacts import ART, Artefact

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "src" / "helpers"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
STAGE_FILE = re.compile(r"\b(?:%s)/[\w{}.-]+\.(?:csv|npy|npz|json|pt)\b" % "|".join(artefacts.STAGES))


def _modules() -> dict[str, Path]:
    out = {}
    for f in PKG.rglob("*.py"):
        parts = f.relative_to(PKG.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = f
    return out


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def _string_constants(source: str) -> list[str]:
    tree = ast.parse(source)
    skip = _docstrings(tree)
    return [n.value for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in skip]


def _notebook_code(nb: Path) -> str:
    cells = json.loads(nb.read_text())["cells"]
    return "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")


def test_no_stage_file_path_outside_the_registry():
    """Code names a stage's file through :data:`helpers.run.artefacts.ART`, never as a literal."""
    hits = []
    for name, f in _modules().items():
        if name == "helpers.run.artefacts":
            continue
        hits += [f"{f.name}: {s!r}" for s in _string_constants(f.read_text()) if STAGE_FILE.search(s)]
    for nb in NOTEBOOKS:
        hits += [f"{nb.name}: {s!r}" for s in _string_constants(_notebook_code(nb)) if STAGE_FILE.search(s)]
    assert not hits, "literal <stage>/<file> paths (use artefacts.ART):\n" + "\n".join(hits)


def test_the_check_sees_a_literal_path():
    assert [s for s in _string_constants('x = f"see {a} hrnet/fold_table.csv"') if STAGE_FILE.search(s)]
    assert not [s for s in _string_constants('"""hrnet/fold_table.csv in a docstring"""')
                if STAGE_FILE.search(s)]


def _private_imports(name: str, f: Path) -> list[str]:
    """``from helpers.x import _name`` in module ``name`` (private names of another module)."""
    out = []
    for node in ast.walk(ast.parse(f.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("helpers"):
            out += [f"{name}: from {node.module} import {a.name}" for a in node.names
                    if a.name.startswith("_") and a.name != "__version__"]
    return out


def test_no_private_imports():
    private = [hit for name, f in _modules().items() for hit in _private_imports(name, f)]
    assert not private, "private names imported from another module:\n" + "\n".join(private)


PRIVATE_ATTR = r"\b(%s)\._[A-Za-z]\w*"  # module._name, lower or upper case (progress._Text)


def _private_attributes(modules: dict[str, Path]) -> list[str]:
    short = {n.rsplit(".", 1)[-1] for n in modules} | {"sm", "ev", "rf", "bd"}
    pat = re.compile(PRIVATE_ATTR % "|".join(sorted(short)))
    hits = []
    for name, f in modules.items():
        for i, line in enumerate(f.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            for m in pat.finditer(code):
                if m.group(1) != name.rsplit(".", 1)[-1]:
                    hits.append(f"{f.name}:{i}: {m.group(0)}")
    return hits


def test_no_private_attribute_of_another_module():
    """``module._name`` across modules (``store._atomic``, ``progress._Text``) is a private import
    in disguise."""
    assert not _private_attributes(_modules())


def test_the_private_attribute_check_sees_capitalised_names(tmp_path):
    f, empty = tmp_path / "mod.py", tmp_path / "empty.py"
    f.write_text("x = progress._Text('a')\ny = store._atomic\nz = progress.Text\n")
    empty.write_text("")
    hits = _private_attributes({"helpers.mod": f, "helpers.run.progress": empty, "helpers.run.store": empty})
    assert [h.split(": ")[1] for h in hits] == ["progress._Text", "store._atomic"]


# -- the import contract (pyproject.toml, [tool.importlinter]) -------------------------------------
def _lint_imports(root: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` on the package under ``root/src`` with the contracts of ``root``."""
    exe = Path(sys.executable).with_name("lint-imports")
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    return subprocess.run([str(exe) if exe.is_file() else "lint-imports", "--config",
                           str(root / "pyproject.toml"), "--no-cache"],
                          cwd=root, env=env, capture_output=True, text=True)


def test_the_import_contract_holds():
    """deploy > report > evidence > stages > methods > data > run > config > paths, no cycles
    among the modules of any package, independent stages, method blocks that read no run."""
    r = _lint_imports(ROOT)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("module, planted, broken", [
    ("data/splits.py", "from helpers.report import plots",
     "helpers.data is not allowed to import helpers.report"),
    ("run/store.py", "from helpers import train", "helpers.run is not allowed to import helpers.train"),
    ("models.py", "from helpers.run import store", "The method's building blocks"),
    ("evidence/metrics.py", "from helpers.evidence import recomputed", "No import cycles"),
])
def test_the_import_contract_fails_on_a_planted_import(tmp_path, module, planted, broken):
    (tmp_path / "src").mkdir()
    shutil.copytree(PKG, tmp_path / "src" / "helpers", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    f = tmp_path / "src" / "helpers" / module
    f.write_text(f.read_text() + f"\n{planted}  # planted\n")
    r = _lint_imports(tmp_path)
    assert r.returncode != 0 and broken in r.stdout, r.stdout


def test_every_notebook_opens_its_stage_through_start():
    for nb in NOTEBOOKS:
        code = _notebook_code(nb)
        stage = [s for s, f in artefacts.STAGES.items() if f == nb.name]
        assert stage, f"{nb.name} is not a stage in artefacts.STAGES"
        call = f'stage = start("{stage[0]}", PROFILE, DATA_DIR, OUT_DIR, SEED, EXTERNAL_DATA_DIR, OVERRIDES)'
        assert call in code, f"{nb.name} does not open its stage with start()"
        for word in ("stages.require(", "open_stage(", "RunLog(", "mark_done("):
            assert word not in code, f"{nb.name} uses {word} (the stage object owns it)"
        assert "stage.done(" in code, f"{nb.name} never marks its stage finished"


def test_registry_names_are_unique_files_of_known_stages():
    arts = {n: a for n, a in vars(ART).items() if isinstance(a, Artefact)}
    rels = [a.rel() for a in arts.values()]
    assert len(rels) == len(set(rels)), "two names for one file"
    assert all(a.stage in artefacts.STAGES for a in arts.values())
    assert ART.hrnet_preds.rel() == f"hrnet/{artefacts.MAIN_MODEL_DIR}/preds.csv" != "hrnet/hrnet/preds.csv"


def test_read_names_the_producing_notebook_and_find_is_none(tmp_path):
    with pytest.raises(FileNotFoundError, match="04_hrnet_cv_training.ipynb"):
        ART.fold_table.read(tmp_path)
    assert ART.fold_table.find(tmp_path) is None
    (tmp_path / "hrnet").mkdir()
    (tmp_path / "hrnet" / "fold_table.csv").write_text("")
    assert ART.fold_table.find(tmp_path).empty
    store.save_json({"a": 1}, ART.permutation_null.path(tmp_path))
    assert ART.permutation_null.read(tmp_path) == {"a": 1}


def test_kept_reads_the_passed_column_once(tmp_path):
    cls = pd.DataFrame({"image_id": ["a", "b", "c"], "y": [1, 0, 1]})
    ri = pd.DataFrame({"image_id": ["a", "b", "c"], "passed": [True, False, True]})
    store.save_csv(cls, ART.cls_index.path(tmp_path))
    store.save_csv(ri, ART.refine_index.path(tmp_path))
    idx, keep = artefacts.kept(tmp_path)
    assert keep.tolist() == [0, 2] and idx["image_id"].tolist() == ["a", "c"]
    assert np.array_equal(idx.index, [0, 1])
    store.save_csv(cls.iloc[:2], ART.cls_index.path(tmp_path))
    with pytest.raises(ValueError, match="re-run notebook 03"):
        artefacts.kept(tmp_path)


def test_a_run_of_the_earlier_layout_is_renamed_in_place_and_stays_finished(tmp_path):
    """``hrnet/hrnet/`` (before ``hrnet/folds/``) is renamed, not retrained: DONE.json and the hash
    that later stages recorded stay valid, and nothing is lost."""
    cfg = config.resolve("smoke", out_dir=tmp_path / "run")
    for stage in ("curation", "refine", "hrnet"):
        stages.open_stage(cfg, stage)
        if stage == "hrnet":
            (cfg.out_dir / "hrnet" / "hrnet").mkdir()
            store.save_csv(pd.DataFrame({"prob": [0.25]}), cfg.out_dir / "hrnet" / "hrnet" / "preds.csv")
        stages.mark_done(cfg, stage)
    down = stages.open_stage(cfg, "baselines")
    store.save_csv(pd.DataFrame({"a": [1]}), down / "table7.csv")
    before = stages.upstream_key(cfg, "baselines")
    stages.require(cfg, "curation", "refine", "hrnet")  # finished: renames, runs nothing
    assert ART.hrnet_preds.read(cfg)["prob"].tolist() == [0.25]
    assert not (cfg.out_dir / "hrnet" / "hrnet").exists()
    assert stages.is_done(cfg, "hrnet") and stages.upstream_key(cfg, "baselines") == before
    stages.open_stage(cfg, "baselines")
    assert (cfg.out_dir / "baselines" / "table7.csv").is_file(), "baselines were moved aside"
    # a folder already in the new layout is never overwritten
    (cfg.out_dir / "hrnet" / "hrnet").mkdir()
    assert artefacts.migrate(cfg) == [] and (cfg.out_dir / "hrnet" / "hrnet").is_dir()


def test_stage_object_seeds_opens_and_finishes(tmp_path):
    cfg = config.resolve("smoke", out_dir=tmp_path / "run")
    st = stages.Stage("curation", cfg)
    assert st.out == cfg.out_dir / "curation" and st.out.is_dir()
    assert not stages.is_done(cfg, "curation")
    with st.timed("part"):
        pass
    st.done(n=3)
    assert stages.is_done(cfg, "curation")
    manifest = store.load_json(st.out / "run_manifest.json")
    assert manifest["n"] == 3 and "part" in manifest["timings_s"]
    assert store.load_json(stages.done_file(cfg, "curation"))["n"] == 3
    with pytest.raises(KeyError, match="unknown stage"):
        stages.Stage("nope", cfg)


# -- the registry writes as well as reads ---------------------------------------------------------
FILE_NAME = re.compile(r"[\w{}.-]+\.(?:csv|npy|npz|json|pt|png)\b")


def test_notebooks_name_no_file():
    """A notebook writes its results with ``stage.save(<registry name>=...)`` and reads them with
    ``ART.<name>.read``: no file name appears in a notebook's code."""
    hits = [f"{nb.name}: {s!r}" for nb in NOTEBOOKS for s in _string_constants(_notebook_code(nb))
            if FILE_NAME.search(s)]
    assert not hits, "file names in notebook code (save through stage.save):\n" + "\n".join(hits)


def test_the_file_name_check_sees_a_save_cell():
    cell = 'store.save_csv(table7, out / "table7.csv")\nnp.savez_compressed(out / f"{n}_extra.npz")'
    assert len([s for s in _string_constants(cell) if FILE_NAME.search(s)]) == 2


def test_stage_save_writes_by_registry_name_and_refuses_others(tmp_path):
    cfg = config.resolve("smoke", out_dir=tmp_path / "run")
    st = stages.Stage("refine", cfg, run_upstream=False)
    ri = pd.DataFrame({"image_id": ["a", "NA"], "passed": [True, False], "area": [10.5, np.nan]})
    paths = st.save(refine_index=ri, segmented=np.zeros((2, 4, 4), np.uint8))
    assert paths == [ART.refine_index.path(cfg), ART.segmented.path(cfg)]
    back = ART.refine_index.read(cfg)
    assert back["image_id"].tolist() == ["a", "NA"]  # a text column keeps "NA" as text
    assert back["area"].iloc[0] == 10.5 and np.isnan(back["area"].iloc[1])
    assert ART.segmented.read(cfg).shape == (2, 4, 4)
    before = sorted(p.name for p in st.out.iterdir())
    with pytest.raises(KeyError, match="does not write table7"):
        st.save(refine_index=ri, table7=ri)  # another stage's file: nothing is written
    with pytest.raises(KeyError, match="no artefact 'refine_table'"):
        st.save(refine_table=ri)
    with pytest.raises(TypeError, match="takes a DataFrame"):
        st.save(refine_index=np.zeros(3))
    assert sorted(p.name for p in st.out.iterdir()) == before


def test_one_reader_for_every_csv_of_a_run(tmp_path):
    """Text columns come back as text ("" for empty, "NA" as written), numbers exactly as written,
    empty numeric cells as NaN, and True/False/empty flags as True/False/None."""
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "ledger_paper.csv").write_text(
        "name,fold,note,accuracy,consistent\nTable 6,pooled,,0.1234567890123456789,True\n"
        "NA,0,x,,\n")
    t = ART.ledger_paper.read(tmp_path)
    assert t["name"].tolist() == ["Table 6", "NA"] and t["note"].tolist() == ["", "x"]
    assert t["accuracy"].iloc[0] == float("0.1234567890123456789") and np.isnan(t["accuracy"].iloc[1])
    assert t["consistent"].tolist() == [True, None]
    assert ART.heat_share_ci.find(tmp_path) is None
