"""A fake SLURM for tests: sbatch, sacct, scancel, scontrol and srun that run jobs on this
machine, as far as submitit and sdrun use them. Installed on PATH by `install(bin_dir,
state_dir)`; each command is this file, told its name.

- `sbatch script`: reads the script's `#SBATCH` lines (`--array=0-N%P`, `--dependency=afterok:
  <id>[:<id>...]` with ids of jobs or array tasks, `--kill-on-invalid-dep=yes`, `--output`,
  `--error`; a `--partition` not in FAKE_SLURM_PARTITIONS, when that is set, is refused as
  sbatch does), prints `Submitted batch job <id>` and runs the job from a detached process: each
  task waits for its dependencies (cancelled if one failed), then runs the script with the
  SLURM_* variables a job has; a task requeued while it ran runs again with
  SLURM_RESTART_COUNT raised, as SLURM does.
- `srun [--output F] [--error F] cmd...`: the job step, in a process group of its own (what
  `scancel --signal` reaches, never the batch shell).
- `sacct -o JobID,State,NodeList --parsable2 -j <id>...`: each job's or array task's state.
- `scancel [--signal=SIG] <id>`: signals the job's step, or without --signal cancels the job.
- `scontrol requeue <id>`: requeues the job (it runs again once its step has exited).

With FAKE_SLURM_NOTICE=<text>, a task's first run gets SIGUSR2 (SLURM's notice before the time
limit) once <text> appears in its output: a test's way to stop a job at a known point.
Only the standard library: the commands start in a few milliseconds.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import zlib
from contextlib import contextmanager, suppress
from pathlib import Path

COMMANDS = ("sbatch", "sacct", "scancel", "scontrol", "srun")
ENDED = {"COMPLETED", "FAILED", "CANCELLED"}
LIMIT_S = 600  # no fake job outlives a test


def install(bin_dir: Path, state_dir: Path) -> dict[str, str]:
    """Write the commands into `bin_dir`; the environment variables that put them to use."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    state_dir.mkdir(parents=True, exist_ok=True)
    for name in COMMANDS:
        path = bin_dir / name
        path.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} "
                        f"{shlex.quote(__file__)} {name} \"$@\"\n")  # fmt: skip
        path.chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "FAKE_SLURM_STATE": str(state_dir)}  # fmt: skip


def state_dir() -> Path:
    return Path(os.environ["FAKE_SLURM_STATE"])


@contextmanager
def records():
    """All job records ({id or id_task: record}), read and written under one lock."""
    path = state_dir() / "jobs.json"
    with open(state_dir() / "lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        jobs = json.loads(path.read_text()) if path.exists() else {}
        yield jobs
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(jobs))
        os.replace(tmp, path)


def read_records() -> dict:
    with records() as jobs:
        return dict(jobs)


def options(script: str) -> dict[str, str]:
    found = {}
    for line in script.splitlines():
        match = re.match(r"#SBATCH\s+--([\w-]+)(?:=(.*))?$", line.strip())
        if match:
            found[match.group(1)] = shlex.split(match.group(2) or "true")[0]
    return found


def sbatch(args: list[str]) -> int:
    script = Path(args[-1]).read_text()
    opts = options(script)
    known = os.environ.get("FAKE_SLURM_PARTITIONS")
    if known and opts.get("partition", known.split(",")[0]) not in known.split(","):
        print("sbatch: error: invalid partition specified: " + opts["partition"], file=sys.stderr)
        print("sbatch: error: Batch job submission failed: Invalid partition name specified",
              file=sys.stderr)  # fmt: skip
        return 1
    with records() as jobs:
        # job ids of their own per state dir: submitit's watcher, shared by a test process,
        # caches the states of ids it has seen
        first = 1000 + zlib.crc32(str(state_dir()).encode()) % 9000 * 100
        base = str(first + sum(1 for key in jobs if "_" not in key or key.endswith("_0")))
        tasks = [None]
        parallel = 1
        if "array" in opts:
            span, _, limit = opts["array"].partition("%")
            low, _, high = span.partition("-")
            tasks = list(range(int(low), int(high or low) + 1))
            parallel = int(limit or len(tasks))
        for task in tasks:
            key = base if task is None else f"{base}_{task}"
            jobs[key] = {"state": "PENDING", "restarts": 0, "requeue": False, "pgid": None}
    daemon = [sys.executable, __file__, "_run", base, args[-1], json.dumps(tasks), str(parallel)]
    log = open(state_dir() / f"daemon_{base}.log", "a")  # noqa: SIM115 - the daemon's
    subprocess.Popen(daemon, start_new_session=True, stdout=log, stderr=log)
    print(f"Submitted batch job {base}")
    return 0


def _set(key: str, **changes) -> dict:
    with records() as jobs:
        jobs[key].update(changes)
        return dict(jobs[key])


def _dependencies_met(opts: dict[str, str]) -> bool | None:
    """True: go; False: a dependency failed; None: wait."""
    spec = opts.get("dependency", "")
    if not spec:
        return True
    kind, _, ids = spec.partition(":")
    assert kind == "afterok", spec
    jobs = read_records()
    states = [rec["state"] for dep in ids.split(":") for key, rec in jobs.items()
              if key == dep or key.startswith(f"{dep}_")]  # fmt: skip
    if any(s in ENDED and s != "COMPLETED" for s in states):
        return False
    return True if states and all(s == "COMPLETED" for s in states) else None


def run_task(base: str, task: int | None, script: Path) -> None:
    key = base if task is None else f"{base}_{task}"
    opts = options(script.read_text())
    deadline = time.monotonic() + LIMIT_S
    while (met := _dependencies_met(opts)) is None and time.monotonic() < deadline:
        if read_records()[key]["state"] == "CANCELLED":
            return
        time.sleep(0.05)
    if not met:
        _set(key, state="CANCELLED")
        return
    while True:
        record = _set(key, state="RUNNING", pgid=None)
        job_id = base if task is None else str(int(base) * 1000 + task)  # a task's own id
        env = {**os.environ, "SLURM_JOB_ID": job_id,
               "SLURM_NTASKS": "1", "SLURM_PROCID": "0", "SLURM_LOCALID": "0",
               "SLURM_NODEID": "0", "SLURM_JOB_NUM_NODES": "1",
               "SLURM_JOB_NODELIST": "localhost", "FAKE_SLURM_TASK": key}  # fmt: skip
        if task is not None:
            env.update(SLURM_ARRAY_JOB_ID=base, SLURM_ARRAY_TASK_ID=str(task))
        if record["restarts"]:
            env["SLURM_RESTART_COUNT"] = str(record["restarts"])
        out = _expand(opts.get("output", os.devnull), base, task)
        with open(out, "a") as log:
            proc = subprocess.Popen(["bash", str(script)], env=env, stdout=log, stderr=log)
            _notice_when_seen(proc, key, [out, _expand(opts.get("error", out), base, task)],
                              first_run=not record["restarts"])  # fmt: skip
        code = proc.wait()
        record = read_records()[key]
        if record["state"] == "CANCELLED":
            return
        if record["requeue"]:
            _set(key, state="REQUEUED", requeue=False, restarts=record["restarts"] + 1)
            continue
        _set(key, state="COMPLETED" if code == 0 else "FAILED", exit=code)
        return


def _notice_when_seen(proc: subprocess.Popen, key: str, logs: list[Path], first_run: bool):
    """FAKE_SLURM_NOTICE: SIGUSR2 to the step once the text shows in its log (first run)."""
    text = os.environ.get("FAKE_SLURM_NOTICE")
    if not text or not first_run:
        return
    deadline = time.monotonic() + LIMIT_S
    while proc.poll() is None and time.monotonic() < deadline:
        seen = any(p.is_file() and text in p.read_text(errors="replace") for p in set(logs))
        pgid = read_records()[key]["pgid"]
        if seen and pgid:
            os.killpg(pgid, signal.SIGUSR2)
            return
        time.sleep(0.05)


def _expand(pattern: str, base: str, task: int | None) -> Path:
    job = base if task is None else f"{int(base) * 1000 + task}"
    for token, value in (("%A", base), ("%a", str(task or 0)), ("%j", job), ("%t", "0")):
        pattern = pattern.replace(token, value)
    return Path(pattern)


def run(base: str, script: str, tasks: str, parallel: str) -> int:
    slots = threading.Semaphore(int(parallel))

    def one(task: int | None) -> None:
        with slots:
            run_task(base, task, Path(script))

    threads = [threading.Thread(target=one, args=(t,)) for t in json.loads(tasks)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return 0


def srun(args: list[str]) -> int:
    files = {}
    while args and args[0].startswith("--"):
        flag = args.pop(0)
        if flag in ("--output", "--error"):
            files[flag] = args.pop(0)
    key = os.environ["FAKE_SLURM_TASK"]
    base, _, task = key.partition("_")
    out = _expand(files.get("--output", os.devnull), base, int(task) if task else None)
    err = _expand(files.get("--error", str(out)), base, int(task) if task else None)
    with open(out, "a") as stdout, open(err, "a") as stderr:
        proc = subprocess.Popen(args, stdout=stdout, stderr=stderr, start_new_session=True)
        _set(key, pgid=proc.pid)
        return proc.wait()


def sacct(args: list[str]) -> int:
    wanted = [args[i + 1] for i, a in enumerate(args) if a == "-j"]
    jobs = read_records()
    print("JobID|State|NodeList")
    for key, record in sorted(jobs.items()):
        if any(key == w or key.startswith(f"{w}_") for w in wanted):
            print(f"{key}|{record['state']}|localhost")
    return 0


def scancel(args: list[str]) -> int:
    sig, ids = None, []
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        if arg.startswith("--signal"):
            sig = arg.partition("=")[2] or rest.pop(0)
        else:
            ids.append(arg)
    for key, record in read_records().items():
        if not any(key == i or key.startswith(f"{i}_") for i in ids):
            continue
        if not sig:
            _set(key, state="CANCELLED")
        if record["pgid"] and record["state"] == "RUNNING":
            number = getattr(signal, "SIG" + sig.removeprefix("SIG")) if sig else signal.SIGTERM
            with suppress(ProcessLookupError):  # the step has just ended
                os.killpg(record["pgid"], number)
    return 0


def cleanup() -> None:
    """Cancel the jobs of this state dir that have not ended (a test that failed half way
    leaves none behind)."""
    left = [key for key, record in read_records().items() if record["state"] not in ENDED]
    if left:
        scancel(["--signal=KILL", *left])
        scancel(left)


def scontrol(args: list[str]) -> int:
    assert args[0] == "requeue", args
    for key in read_records():
        if key == args[1] or key.startswith(f"{args[1]}_"):
            _set(key, requeue=True)
    return 0


def main() -> int:
    name, args = sys.argv[1], sys.argv[2:]
    if name == "_run":
        return run(*args)
    return {"sbatch": sbatch, "sacct": sacct, "scancel": scancel, "scontrol": scontrol,
            "srun": srun}[name](args)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
