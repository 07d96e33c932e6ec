"""Fold-level execution: the folds of one cross-validation one after another, or at once on Ray.

Folds are independent by construction (each seeds itself from the run's seed and its own number),
so running them at once changes the wall time and nothing else. Two executors (the profile's
``executor`` setting, ``./run_all.sh --executor``):

* ``local``: the folds one after another in this process (the default of ``smoke`` and ``cpu``);
* ``ray``: every fold is a Ray task. Without an address Ray starts an embedded cluster on this
  machine with every local CPU and GPU; with one (``--ray-address ADDR`` or ``$RAY_ADDRESS``)
  the folds run on that cluster (Slurm, Kubernetes, cloud VMs). A fold asks for one GPU where the
  cluster has GPUs; otherwise the CPU threads are split between the folds that run at once.

Either way a fold function only computes: it returns its results (predictions, history, weights,
arrays) and the driver writes them, the same files in the same folder as ``local`` does, so the
workers need the installed project but no shared file system (the images travel through Ray's
object store). A fold is written only when it has finished, so an interrupted run resumes from
the folds already written. A failing fold is retried once; a second failure cancels the folds
not yet finished and stops the stage with the fold's traceback.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from helpers.run import progress

EXECUTORS = ("local", "ray")
STATUS_EVERY_S = 30.0  # seconds between two status lines on the terminal of run_all.sh


class FoldFailed(RuntimeError):
    """A fold task failed on its second try."""


@dataclass(frozen=True)
class Task:
    """One fold of one cross-validation: ``job(k=k, device=..., **shared)``, its result handed to
    ``write(k, result)``. ``label`` names it in status lines and errors (e.g. "resnet152 fold 2")."""

    job: Callable[..., dict]
    k: int
    shared: Mapping[str, Any]
    write: Callable[[int, dict], None]
    label: str


def run_folds(job: Callable[..., dict], folds: Sequence[int], *, shared: Mapping[str, Any],
              write: Callable[[int, dict], None], executor: str = "local", device: str = "cpu",
              desc: str = "folds", threads: int = 0) -> None:
    """Call ``job(k=k, device=..., **shared)`` for every fold ``k`` in ``folds`` and hand each
    result to ``write(k, result)`` in this process as soon as that fold has finished.

    ``job`` must be a module-level function that returns plain data (arrays, data frames, CPU
    tensors) and writes nothing. ``device`` is used by ``local``; ``ray`` gives a fold "cuda" when
    it holds a GPU and "cpu" otherwise. ``threads``: torch threads per fold on CPU under ``ray``
    (0: this process's torch thread count, which the local loop uses; CPU kernels round
    differently at another thread count, so equal thread counts give equal files).
    """
    run_tasks([Task(job, int(k), shared, write, f"fold {int(k) + 1}") for k in folds],
              executor=executor, device=device, desc=desc, threads=threads)


def run_tasks(tasks: Sequence[Task], *, executor: str = "local", device: str = "cpu",
              desc: str = "folds", threads: int = 0) -> None:
    """:func:`run_folds` for the folds of several cross-validations at once (several networks, or
    one network on several left-out sites): ``local`` runs them one after another in the given
    order; ``ray`` queues all of them, so that two single-thread folds of different networks
    share two cores instead of a lone fold leaving one idle. Each task's result goes to its own
    ``write``; the files are those of one call per cross-validation."""
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {EXECUTORS}, got {executor!r}")
    tasks = list(tasks)
    if not tasks:
        return
    if executor == "local":
        for t in tasks:
            t.write(t.k, t.job(k=t.k, device=device, **t.shared))
        return
    _run_on_ray(tasks, desc, threads)


# ----------------------------------------------------------------------------------------------
# Ray

def ray_address() -> str | None:
    """The cluster to join: ``$RAY_ADDRESS`` (run_all.sh's ``--ray-address`` sets it), else None
    for an embedded cluster on this machine."""
    return os.environ.get("RAY_ADDRESS") or None


def ray_init():
    """Connect to the cluster of :func:`ray_address` (once per process) and return ``ray``."""
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - ray is a declared dependency
        raise ImportError("executor='ray' needs the ray package (pip install -e . installs it)") from exc
    if not ray.is_initialized():
        addr = ray_address()
        # a new local cluster uses token authentication by default and says so on stderr; that
        # notice would be the only stderr output of a notebook, so it alone is dropped
        logging.getLogger("ray._private.authentication.authentication_token_setup").addFilter(_quiet_auth)
        # log_to_driver=False: the folds' own output stays in Ray's session logs; their progress
        # reaches the notebook through the board below, their errors through the task's exception
        ray.init(address=addr, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING, namespace="hrnet-cxr")
        _stop_ray_on_sigterm(ray)
        res = ray.cluster_resources()
        where = f"the Ray cluster at {addr}" if addr else "an embedded Ray on this machine"
        print(f"[ray] using {where}: {int(res.get('CPU', 0))} CPUs, {int(res.get('GPU', 0))} GPUs",
              flush=True)
    return ray


def _stop_ray_on_sigterm(ray) -> None:
    """Papermill ends a notebook's kernel with SIGTERM (so does ``run_all.sh`` when it is stopped).
    Ray's own handler would print a crash-style report on the terminal and leave its processes to
    notice the driver is gone; instead, stop Ray, then terminate as the signal asks."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    previous = signal.getsignal(signal.SIGTERM)

    def handler(signum, frame):
        try:
            ray.shutdown()
        finally:
            signal.signal(signal.SIGTERM, previous if callable(previous) else signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, handler)


def _quiet_auth(record: logging.LogRecord) -> bool:
    return "Token authentication is enabled for this Ray cluster" not in record.getMessage()


def plan(n_folds: int, cpus: int, gpus: int, threads: int = 0, node_cpus: int = 0,
         local_threads: int = 0) -> dict[str, Any]:
    """Resources of one fold task. ``threads``: the profile's ``torch_threads`` (0: not set).

    Where the cluster has GPUs: one GPU each, with the cluster's CPUs per GPU for its data loading
    and as its torch threads (unless ``threads`` is set). On CPUs: ``threads``, else
    ``local_threads`` (torch's default in the driver, what the local loop runs with), so that both
    executors compute the same numbers; a fold reserves that many CPUs, at most ``node_cpus`` (the
    largest node's), so one machine runs ``cpus // threads`` folds at once. Returns ``num_cpus``,
    ``num_gpus``, ``threads``, ``device`` and ``at_once``."""
    cpus = max(1, int(cpus))
    if gpus >= 1:
        per = max(1, cpus // int(gpus))
        return {"num_cpus": per, "num_gpus": 1, "threads": threads or per, "device": "cuda",
                "at_once": min(n_folds, int(gpus))}
    t = max(1, int(threads or local_threads or cpus))
    need = min(t, int(node_cpus) or cpus, cpus)
    return {"num_cpus": need, "num_gpus": 0, "threads": t, "device": "cpu",
            "at_once": max(1, min(n_folds, cpus // need))}


class _Board:
    """A Ray actor the fold tasks report to: which folds started, and each one's progress line.
    One per driver process (an actor is a process of its own), emptied for every cross-validation."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.started: set[int] = set()
        self.lines: dict[int, str] = {}

    def start(self, k: int) -> None:
        self.started.add(k)

    def update(self, k: int, text: str) -> None:
        self.lines[k] = text

    def snapshot(self) -> tuple[list[int], dict[int, str]]:
        return sorted(self.started), dict(self.lines)


def _fold_task(job, k, key, device, threads, board, shared_names, *shared_values):
    """What runs in a Ray worker: set threads and deterministic kernels, report progress, run."""
    import torch

    from helpers.run import progress as prog

    torch.set_num_threads(int(threads))
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    board.start.remote(key)
    prog.reporter = lambda text: board.update.remote(key, text)
    try:
        return job(k=k, device=device, **dict(zip(shared_names, shared_values)))
    finally:
        prog.reporter = None


def _line(lines: dict[int, str], key: int, labels: Mapping[int, str]) -> str:
    return lines.get(key, f"{labels.get(key, f'task {key + 1}')} starting")


def _run_on_ray(tasks: list[Task], desc: str, threads: int) -> None:
    import torch

    ray = ray_init()
    res = ray.cluster_resources()
    node_cpus = max((int(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")), default=0)
    p = plan(len(tasks), int(res.get("CPU", 1)), int(res.get("GPU", 0)), threads, node_cpus,
             local_threads=torch.get_num_threads())
    board = _board(ray)
    refs: dict[int, Any] = {}  # every shared value in the object store once, not once per fold

    def put(v):
        if id(v) not in refs:
            refs[id(v)] = ray.put(v)
        return refs[id(v)]

    task = ray.remote(_fold_task).options(num_cpus=p["num_cpus"], num_gpus=p["num_gpus"],
                                          max_retries=1, retry_exceptions=True)
    pending = {task.remote(t.job, t.k, i, p["device"], p["threads"], board, list(t.shared),
                           *[put(v) for v in t.shared.values()]): i
               for i, t in enumerate(tasks)}
    labels = {i: t.label for i, t in enumerate(tasks)}
    how = (f"{p['at_once']} at once, one GPU each" if p["num_gpus"]
           else f"{p['at_once']} at once, {p['threads']} CPU thread(s) each")
    status = _Status(f"{desc} on Ray", len(tasks), how, labels)
    done: list[int] = []
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=2.0)
            for ref in ready:
                i = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except Exception as exc:  # a RayTaskError carries the fold's own traceback
                    raise FoldFailed(f"{desc}: {labels[i]} failed twice (it was retried once); "
                                     f"nothing of it was written. The fold's error:\n{exc}") from None
                tasks[i].write(tasks[i].k, result)
                done.append(i)
            started, lines = ray.get(board.snapshot.remote())
            running = [i for i in started if i in pending.values()]
            status.show(done, running, len(pending) - len(running), lines)
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
    status.done(len(done))


_BOARDS: dict[str, Any] = {}  # this process's board actor, per Ray cluster


def _board(ray):
    """The driver's board actor, made once and emptied for each cross-validation."""
    key = ray.get_runtime_context().get_job_id()
    board = _BOARDS.get(key)
    if board is None:
        board = _BOARDS[key] = ray.remote(num_cpus=0)(_Board).remote()
    ray.get(board.reset.remote())
    return board


class _Status:
    """Folds done / running / queued, with the running folds' epochs: one line updated in place in
    a notebook (or a log line per change outside one), and a line every ``STATUS_EVERY_S`` seconds
    on the kernel's own stderr, which is the terminal of ``run_all.sh``."""

    def __init__(self, desc: str, total: int, how: str, labels: Mapping[int, str] | None = None):
        self.desc, self.total, self.how, self.t0 = desc, total, how, time.time()
        self.labels = dict(labels or {})
        self._last_err, self._last_text = 0.0, ""
        self._handle = None
        self.kernel = progress.in_kernel()
        if self.kernel:
            from IPython.display import display

            self._handle = display(progress.Text(self._text([], [], total, {})), display_id=True)
        self._say(self._text([], [], total, {}), force=True)

    def _text(self, done, running, queued, lines) -> str:
        run = "; ".join(_line(lines, k, self.labels) for k in running)
        return (f"{self.desc} ({self.how}): {len(done)}/{self.total} folds done, {len(running)} running"
                + (f" [{run}]" if run else "") + f", {max(queued, 0)} queued, {time.time() - self.t0:.0f} s")

    def _say(self, text: str, force: bool = False) -> None:
        if self.kernel and (force or time.time() - self._last_err >= STATUS_EVERY_S):
            print(f"[ray] {text}", file=sys.__stderr__, flush=True)
            self._last_err = time.time()

    def show(self, done, running, queued, lines) -> None:
        text = self._text(done, running, queued, lines)
        if self._handle is not None:
            self._handle.update(progress.Text(text))
        else:
            key = (len(done), tuple(running))
            if key != self._last_text:
                print(text, flush=True)
                self._last_text = key
        self._say(text)

    def done(self, n: int) -> None:
        text = f"{self.desc} ({self.how}): {n}/{self.total} folds in {time.time() - self.t0:.0f} s"
        if self._handle is not None:
            self._handle.update(progress.Text(text))
        else:
            print(text, flush=True)
        self._say(text, force=True)
