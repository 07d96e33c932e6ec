"""run_all.sh: every option's value is checked with a one-line message naming the option, and
stopping the script by its PID stops everything it started."""
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUN_ALL = str(ROOT / "run_all.sh")


def _run(*args, timeout=120):
    return subprocess.run([RUN_ALL, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@pytest.mark.parametrize("args, option", [
    (["--seed", "abc"], "--seed"),
    (["--seed", "-1"], "--seed"),
    (["--from", "9"], "--from"),
    (["--from", "x"], "--from"),
    (["--data"], "--data"),
    (["--out"], "--out"),
    (["--overrides"], "--overrides"),
    (["--data", "/no/such/folder/anywhere"], "--data"),
    (["--external", "/no/such/folder/anywhere"], "--external"),
    (["--colour", "blue"], "--colour"),
    (["--executor", "dask"], "--executor"),
    (["--executor"], "--executor"),
    (["--ray-address"], "--ray-address"),
    (["--publish"], "--publish"),
    (["--publish", RUN_ALL], "--publish"),
    (["--replace"], "--replace"),
])
def test_malformed_options_are_refused_before_anything_runs(args, option, tmp_path):
    r = _run(*args, "--out", str(tmp_path / "out")) if option != "--out" else _run(*args)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and option in lines[0], r.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, words", [
    (["--overrides", "notjson"], ["--overrides", "JSON"]),
    (["--overrides", "[1, 2]"], ["--overrides", "JSON object"]),
    (["--overrides", '{"no_such_field": 1}'], ["no_such_field"]),
    (["nosuchprofile"], ["unknown profile", "smoke"]),
])
def test_bad_values_checked_in_python_name_the_problem(args, words, tmp_path):
    r = _run(*args, "--out", str(tmp_path / "out"))
    assert r.returncode != 0
    err = r.stderr.strip().splitlines()[-1]
    for w in words:
        assert w in err, r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("recorded, words", [
    ({"profile": "cpu", "seed": 0, "data": {"folder": "cxr", "manifest_sha256": None},
      "external_data": None, "overrides": {}}, ["profile cpu,", "profile smoke,", "differ in profile"]),
    (None, ["unknown provenance", "profile smoke,"]),
])
def test_publish_over_another_provenance_is_refused_before_anything_runs(recorded, words, tmp_path):
    dest = tmp_path / "figures" / "cpu"
    dest.mkdir(parents=True)
    if recorded is None:
        (dest / "index.csv").write_text("file\nfig.png\n")  # published before provenance was recorded
    else:
        (dest / "PROVENANCE.json").write_text(json.dumps(recorded))
    r = _run("smoke", "--publish", str(dest), "--out", str(tmp_path / "out"))
    assert r.returncode != 0
    err = r.stderr.strip().splitlines()[-1]
    assert err.startswith("run_all.sh: --publish:") and str(dest) in err, r.stderr
    for w in words:
        assert w in err, r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "out" / "notebooks").exists()


def _descendants(pid: int) -> set[int]:
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        try:
            kids = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        for k in map(int, kids):
            if k not in out:
                out.add(k)
                todo.append(k)
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_stopping_run_all_by_pid_leaves_no_process_behind(tmp_path):
    proc = subprocess.Popen([RUN_ALL, "--out", str(tmp_path / "run")], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    tree: set[int] = set()
    deadline = time.time() + 120
    try:
        while time.time() < deadline:  # wait until a notebook kernel runs under the script
            tree |= _descendants(proc.pid)
            cmds = []
            for p in tree:
                try:
                    cmds.append(Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace"))
                except OSError:
                    pass
            if any("ipykernel" in c for c in cmds):
                break
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.5)
        else:
            pytest.fail("no notebook kernel started within 120 s")
        time.sleep(2)
        tree |= _descendants(proc.pid)
        os.kill(proc.pid, signal.SIGTERM)  # as a scheduler or a closed terminal does
        proc.wait(timeout=60)
        deadline = time.time() + 20
        while time.time() < deadline and any(_alive(p) for p in tree):
            time.sleep(0.5)
        left = [p for p in tree if _alive(p)]
        assert not left, f"processes left running after run_all.sh stopped: {left}"
        assert proc.returncode != 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
