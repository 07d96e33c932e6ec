"""The stage contract and the package's shape: one registry of artefacts, one stage object, no
import cycles, no private names used across modules."""
from __future__ import annotations

import ast
import json
import re
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


def _imports(name: str, f: Path, modules: dict[str, Path]) -> tuple[set[str], list[str]]:
    """(helpers modules that ``name`` imports anywhere in its file, private names it imports)."""
    pkg = name if f.name == "__init__.py" else name.rsplit(".", 1)[0]
    deps, private = set(), []
    for node in ast.walk(ast.parse(f.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if not mod.startswith("helpers"):
                continue
            for a in node.names:
                full = f"{mod}.{a.name}"
                deps.add(full if full in modules else mod)
                if a.name.startswith("_") and a.name != "__version__":
                    private.append(f"{name}: from {mod} import {a.name}")
        elif isinstance(node, ast.Import):
            deps |= {a.name for a in node.names if a.name in modules}
    return deps - {name, "helpers"}, private


def test_no_import_cycles_and_no_private_imports():
    modules = _modules()
    graph, private = {}, []
    for name, f in modules.items():
        graph[name], p = _imports(name, f, modules)
        private += p
    assert not private, "private names imported from another module:\n" + "\n".join(private)
    state: dict[str, int] = {}

    def visit(n: str, path: list[str]) -> None:
        state[n] = 1
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(m):] + [n, m]))
            if m not in state:
                visit(m, path + [n])
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [])


def test_no_private_attribute_of_another_module():
    """``module._name`` across modules (``io._atomic``) is a private import in disguise."""
    modules = _modules()
    short = {n.rsplit(".", 1)[-1] for n in modules} | {"sm", "ev", "rf", "bd"}
    pat = re.compile(r"\b(%s)\._[a-z]\w*" % "|".join(sorted(short)))
    hits = []
    for name, f in modules.items():
        for i, line in enumerate(f.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            for m in pat.finditer(code):
                if m.group(1) != name.rsplit(".", 1)[-1]:
                    hits.append(f"{f.name}:{i}: {m.group(0)}")
    assert not hits, "\n".join(hits)


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
