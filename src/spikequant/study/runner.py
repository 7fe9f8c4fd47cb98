"""Plan a study's runs and execute them, one after the other or in N local processes.

Every run is one recipe trained for one seed (:func:`spikequant.config.run_recipe`). Its folder
is keyed by what it trains: ``WORK/seed<S>/<row>-<hash>``, the hash covering the loaded recipe
and, for a stage, the key of the run it starts from. Settings that leave a row unchanged share
its runs (an SpQuant variant of the pruning stage reuses the FP and Quant-SNN runs), and a
changed recipe never lands in the folder of another.

Runs are deterministic given their recipe (seeded weights and batch order), so running the
independent ones concurrently (``jobs``) gives the metrics of the sequential run; a stage waits
for the run it is initialised from.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, ConfigError
from ..io import log_to_stderr, write_json

# Written into each run folder: the recipe it trains (without the init_from path, which moves
# with the work dir) and whether the run finished, so that --resume can reuse it.
MARKER = "study_run.json"
EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class Run:
    key: str
    row: str
    seed: int
    cfg: dict
    key_cfg: dict
    run_dir: Path
    depends_on: str | None


def _normal(obj: Any) -> Any:
    """What the object reads as after a JSON round trip (tuples -> lists, int keys -> str)."""
    return json.loads(json.dumps(obj))


def _target_row(item: str) -> str | None:
    """``row:key=value`` is an override of one row; ``key=value`` one of every row."""
    key = item.split("=", 1)[0]
    return key.split(":", 1)[0].strip() if ":" in key else None


def check_cli_overrides(study: dict, overrides: list[str]) -> None:
    for item in overrides:
        if "=" not in item:
            raise ConfigError(
                f"override {item!r} must look like key.sub=value or row:key.sub=value"
            )
        row = _target_row(item)
        if row is not None and row not in study["rows"]:
            raise ConfigError(
                f"override {item!r} names unknown row {row!r}; rows: {', '.join(study['rows'])}"
            )


def row_overrides(study: dict, setting: str | None, row: str, cli: list[str]) -> list[str]:
    """In order: the study's, the row's, the setting's, the setting's for this row, the command
    line's (``--set key=value`` for every row, ``--set row:key=value`` for one)."""
    s = study["settings"][setting] if setting else {"overrides": [], "rows": {}}
    own = s["rows"].get(row, {})
    return [
        *study["overrides"],
        *study["rows"][row]["overrides"],
        *s["overrides"],
        *own.get("overrides", []),
        *(item.split(":", 1)[1] if _target_row(item) else item
          for item in cli if _target_row(item) in (None, row)),
    ]  # fmt: skip


def row_init_from(
    study: dict, setting: str | None, row: str, from_scratch: tuple[str, ...] = ()
) -> dict | None:
    """The row a stage starts from; None for a row trained from scratch."""
    own = study["settings"][setting]["rows"].get(row, {}) if setting else {}
    if row in from_scratch:
        return None
    return own["init_from"] if "init_from" in own else study["rows"][row]["init_from"]


def plan_runs(
    study: dict,
    setting: str | None,
    seeds: list[int],
    cli_overrides: list[str],
    work_dir: Path,
    from_scratch: tuple[str, ...] = (),
) -> list[Run]:
    """The runs of one setting, seed by seed in row order (a stage after the row it starts from)."""
    from ..config import load_recipe

    runs: list[Run] = []
    for seed in seeds:
        keys: dict[str, Run] = {}
        for row in study["rows"]:
            overrides = [*row_overrides(study, setting, row, cli_overrides), f"seed={seed}"]
            key_cfg = _normal(load_recipe(study["rows"][row]["recipe"], overrides))
            init = row_init_from(study, setting, row, from_scratch)
            parent = keys[init["row"]] if init else None
            digest = hashlib.sha256(
                json.dumps([key_cfg, parent and parent.key], sort_keys=True).encode()
            ).hexdigest()[:10]
            run_dir = Path(work_dir) / f"seed{seed}" / f"{row}-{digest}"
            cfg = key_cfg
            if parent is not None:
                # set directly, not as an override: a path is a string whatever YAML makes of it
                cfg = _with_value(key_cfg, init["key"], str(parent.run_dir))
            run = Run(
                key=f"seed{seed}/{row}-{digest}",
                row=row,
                seed=seed,
                cfg=cfg,
                key_cfg=key_cfg,
                run_dir=run_dir,
                depends_on=parent.key if parent else None,
            )
            keys[row] = run
            runs.append(run)
    return runs


def _with_value(cfg: dict, key: str, value: Any) -> dict:
    cfg = _normal(cfg)
    node = cfg
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"init_from key {key!r}: {'.'.join(parts[: i + 1])} is not a section")
    node[parts[-1]] = value
    return cfg


def cores() -> int:
    """CPU cores this process may use (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on every OS
        return os.cpu_count() or 1


def _read_json(path: Path) -> Any:
    """The file's JSON value; None if it is missing or unreadable (the run is trained again)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # ValueError: bad JSON or not UTF-8
        return None


def execute(task: dict) -> dict:
    """Train (or, with ``resume``, reuse / continue) one run; its metrics and collected values.

    Also the worker function of the process pool: everything in and out is plain JSON."""
    import torch

    from ..config import run_recipe
    from .plugins import COLLECTORS

    if task.get("threads"):
        torch.set_num_threads(task["threads"])
    run_dir = Path(task["run_dir"])
    marker = _read_json(run_dir / MARKER) if task["resume"] else None
    if isinstance(marker, dict) and marker.get("recipe") != task["key_cfg"]:
        raise CheckpointError(
            f"{run_dir} holds a run of a different recipe; use a fresh --work-dir"
        )
    finished = isinstance(marker, dict) and marker.get("finished")
    metrics = _read_json(run_dir / "metrics.json") if finished else None
    reused = isinstance(metrics, dict)
    if not reused:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / MARKER, {"recipe": task["key_cfg"], "finished": False})
        metrics = run_recipe(
            task["cfg"], out_dir=run_dir, resume=task["resume"], progress=task["progress"]
        )
        write_json(run_dir / MARKER, {"recipe": task["key_cfg"], "finished": True})
    metrics = {k: v for k, v in _normal(metrics).items() if k != "history"}
    extras = {name: _normal(COLLECTORS[name](run_dir)) for name in task["collect"]}
    # the thread count fixes the order of float sums: a run is bit-identical only at equal counts
    return {
        "metrics": metrics,
        "extras": extras,
        "reused": reused,
        "threads": torch.get_num_threads(),
    }


def _task(run: Run, **options) -> dict:
    """What :func:`execute` takes: plain JSON (``resume``, ``progress``, ``collect``,
    ``threads``)."""
    return {"cfg": run.cfg, "key_cfg": run.key_cfg, "run_dir": str(run.run_dir), **options}


def _done_line(run: Run, result: dict) -> str:
    acc = result["metrics"].get("test_accuracy")
    text = f"{100 * acc:.2f} % test accuracy" if isinstance(acc, (int, float)) else "done"
    return f"[study] {run.row} seed {run.seed}: {text}" + (" (reused)" if result["reused"] else "")


def execute_runs(
    runs: list[Run],
    *,
    jobs: int = 1,
    executor: str = "local",
    resume: bool = False,
    progress: bool = True,
    collect: list[str] = (),
    log: Callable[[str], None] = log_to_stderr,
) -> dict[str, dict]:
    """Execute every run once (runs with equal keys are one run); results by run key."""
    unique = list({run.key: run for run in runs}.values())
    if jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {jobs}")
    if executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {executor!r}; known: {', '.join(EXECUTORS)}")
    collect = list(collect)
    if executor == "local" and jobs == 1:
        results = {}
        for run in unique:
            log(f"[study] {run.row} seed {run.seed} -> {run.run_dir}")
            task = _task(run, resume=resume, progress=progress, collect=collect, threads=None)
            results[run.key] = execute(task)
            log(_done_line(run, results[run.key]))
        return results
    threads = max(1, cores() // jobs)
    tasks = {
        run.key: _task(run, resume=resume, progress=False, collect=collect, threads=threads)
        for run in unique
    }
    if executor == "ray":
        return _execute_ray(unique, tasks, jobs=jobs, threads=threads, log=log)
    return _execute_pool(unique, tasks, jobs=jobs, log=log)


def _schedule(
    unique: list[Run],
    submit: Callable[[Run], Any],
    finished: Callable[[list], list[tuple[Any, dict]]],
    log: Callable[[str], None],
) -> dict[str, dict]:
    """Submit every run whose stage parent has finished, collect what finishes, repeat.

    ``submit(run)`` returns a handle; ``finished(handles)`` waits for at least one and returns
    ``(handle, result)`` pairs."""
    results: dict[str, dict] = {}
    pending, running = list(unique), {}
    while pending or running:
        for run in [r for r in pending if r.depends_on is None or r.depends_on in results]:
            pending.remove(run)
            log(f"[study] {run.row} seed {run.seed} -> {run.run_dir} (started)")
            running[submit(run)] = run
        for handle, result in finished(list(running)):
            run = running.pop(handle)
            results[run.key] = result
            log(_done_line(run, result))
    return results


def _execute_pool(unique, tasks, *, jobs: int, log) -> dict[str, dict]:
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    def finished(futures):
        done, _ = wait(futures, return_when=FIRST_COMPLETED)
        return [(future, future.result()) for future in done]

    context = multiprocessing.get_context("spawn")  # no forked torch thread pools
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        try:
            return _schedule(
                unique, lambda run: pool.submit(execute, tasks[run.key]), finished, log
            )
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)  # queued runs never start
            raise


def _execute_ray(unique, tasks, *, jobs: int, threads: int, log) -> dict[str, dict]:
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "--executor ray needs the 'ray' package (pip install 'spikequant[ray]'); --jobs N "
            "runs locally"
        ) from None
    if os.environ.get("RAY_ADDRESS"):  # an existing cluster brings its own CPUs
        ray.init(ignore_reinit_error=True)
    else:  # a local instance with the CPUs of N jobs
        ray.init(ignore_reinit_error=True, num_cpus=jobs * threads)
    remote = ray.remote(num_cpus=threads)(execute)

    def finished(refs):
        done, _ = ray.wait(refs, num_returns=1)
        return [(ref, ray.get(ref)) for ref in done]

    return _schedule(unique, lambda run: remote.remote(tasks[run.key]), finished, log)
