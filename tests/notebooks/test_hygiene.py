"""Notebook hygiene: clean, parameterised, listed, portable."""
import ast
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
EXPECTED_PARAMS = ["PROFILE", "DATA_DIR", "OUT_DIR", "SEED", "EXTERNAL_DATA_DIR", "OVERRIDES"]


def _nb(path):
    return json.loads(path.read_text())


def test_numbered_notebooks_in_pipeline_order():
    # the design card's six steps, with the shortcut audits (05a), the de-confounding ladder (05b)
    # and leave one site out (05c)
    # between 05 and 06
    from helpers.run import artefacts

    assert [p.name[:3] for p in NOTEBOOKS] == ["01_", "02_", "03_", "04_", "05_", "05a", "05b", "05c", "06_"]
    assert [p.name for p in NOTEBOOKS] == list(artefacts.STAGES.values())


def _strip_filter_installed() -> bool:
    import subprocess

    r = subprocess.run(["git", "config", "--get", "filter.nbstripout.clean"], cwd=ROOT,
                       capture_output=True, text=True)
    return r.returncode == 0 and bool(r.stdout.strip())


def _committed(path):
    """The notebook as committed (HEAD), or None outside a git checkout."""
    import subprocess

    r = subprocess.run(["git", "show", f"HEAD:notebooks/{path.name}"], cwd=ROOT, capture_output=True,
                       text=True)
    return json.loads(r.stdout) if r.returncode == 0 else None


def _output_cells(nb):
    return [c for c in nb["cells"] if c["cell_type"] == "code"
            and (c.get("outputs") or c.get("execution_count") is not None)]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_without_outputs(path):
    committed = _committed(path)
    if committed is not None:
        assert not _output_cells(committed), f"{path.name}: the committed notebook has outputs"
    if _output_cells(_nb(path)) and not _strip_filter_installed():
        pytest.fail(f"{path.name} holds outputs (Run All in JupyterLab saves them). Clean it with "
                    f"`.venv/bin/nbstripout notebooks/{path.name}`, or install the git filter once "
                    "with `.venv/bin/nbstripout --install` (./run_all.sh does) so commits stay clean.")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_one_literal_only_parameters_cell(path):
    cells = _nb(path)["cells"]
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: {len(tagged)} parameters cells"
    tree = ast.parse("".join(tagged[0]["source"]))
    names = []
    for node in tree.body:
        assert isinstance(node, ast.Assign), f"{path.name}: parameters cell holds a {type(node).__name__}"
        ast.literal_eval(node.value)  # raises on anything computed
        names += [t.id for t in node.targets]
    assert names == EXPECTED_PARAMS
    # the first cell is the markdown title, the parameters come right after it
    assert cells[0]["cell_type"] == "markdown" and cells[0]["source"][0].startswith("# ")
    assert cells[1] is tagged[0]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_profile_read_only_in_resolve_cell(path):
    cells = [c for c in _nb(path)["cells"] if c["cell_type"] == "code"]
    users = [i for i, c in enumerate(cells) if re.search(r"\bPROFILE\b", "".join(c["source"]))]
    assert users == [0, 1], f"{path.name}: PROFILE read outside the parameters/resolve cells"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_absolute_paths_and_short_cells(path):
    for c in _nb(path)["cells"]:
        src = "".join(c["source"])
        assert not re.search(r"['\"](/home|/work|/Users|/tmp|[A-Z]:\\\\)", src), f"{path.name}: absolute path"
        if c["cell_type"] == "code":
            assert src.count("\n") < 20, f"{path.name}: a code cell of {src.count(chr(10)) + 1} lines"


def test_every_notebook_listed_in_run_all_and_readme():
    run_all = (ROOT / "run_all.sh").read_text()
    readme = (ROOT / "README.md").read_text()
    for p in NOTEBOOKS:
        assert p.stem in run_all, f"{p.stem} missing from run_all.sh"
        assert p.name in readme or p.stem in readme, f"{p.stem} missing from README.md"


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci/run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "./run_tests.sh" in ci and "./run_tests.sh" in readme
