r"""Fault soak: kill a training run at random moments, resume it each time, compare the end.

Runs ``python -m fitnets_tf.train`` on a flagfile (default: the smoke config) once without
interruption (the reference), then again in a fresh run directory, killing it at random
moments (SIGKILL, and SIGTERM for a share of the kills) and re-running the same command until
a run finishes on its own. One such chain is an *episode*; episodes repeat until the asked
numbers of kills are reached. After each episode it compares, with the reference:

* the summary's test accuracy of every model (teacher and each mode's student);
* every weight of every saved model (the teacher and each mode's final student), exactly;

and checks that every ``.keras`` file and ``run_state.json`` left in the run directory loads
(temporary files a kill left behind are counted apart, as litter). With ``--truncations=N``,
the first N kills that leave an unfinished stage with a counted checkpoint are followed by
cutting that checkpoint's ``ckpt-E.index`` to half its size, as a crash of the machine might:
the re-run must name it on stderr, fall back to the checkpoint before, and finish identical.

The killed runs checkpoint mid-epoch (``--checkpoint_every``, default every 2 steps; 0: at
epoch ends only), the reference does not: the comparison also shows that the option changes
no number. A SIGTERM must end the run with status 75 (a checkpoint, then exit) unless it
came before training began (status -15: nothing to save yet) or after the run's end (0);
other statuses are counted as ``term_failures``.

It prints the counts (kills by signal, resumes, the SIGTERM exit statuses, truncations and the
damage warnings the re-runs printed, identical finishes, differing models, corrupt files) and
writes them to ``bench/results/fault_soak.json``. Runs are ``--deterministic``: the comparison
is exact. Not a test: it takes minutes.

    .venv/bin/python bench/fault_soak.py                       # 30 SIGKILL + 10 SIGTERM
    .venv/bin/python bench/fault_soak.py --kills=5 --terms=2 --truncations=2   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before compare() imports TensorFlow
RESULTS = ROOT / "bench" / "results" / "fault_soak.json"


def _command(flagfile: str, workdir: pathlib.Path, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "fitnets_tf.train", f"--flagfile={flagfile}",
            f"--workdir={workdir}", "--nomeasure_latency", "--deterministic", *extra]  # fmt: skip


def _env() -> dict:
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(ROOT))


def run_to_end(command: list[str], log) -> float:
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, env=_env(), stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise SystemExit(f"The reference run failed (exit {proc.returncode}): see {log.name}")
    return time.perf_counter() - start


def run_killed(command: list[str], delay: float, sig: int, log) -> tuple[int, bool]:
    """Runs ``command``; sends ``sig`` after ``delay`` s. Its exit status; whether it was sent."""
    proc = subprocess.Popen(command, cwd=ROOT, env=_env(), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip
    try:
        return proc.wait(timeout=delay), False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, sig)
        return proc.wait(), True


def _model_files(workdir: pathlib.Path) -> dict[str, pathlib.Path]:
    summary = json.loads((workdir / "summary.json").read_text())
    files = {"teacher": workdir / "teacher" / "teacher.keras"}
    for row in summary["models"]:
        if row["name"] != "teacher":
            files[row["name"]] = workdir / row["name"] / "student.keras"
    return files


def _accuracies(workdir: pathlib.Path) -> dict[str, float]:
    summary = json.loads((workdir / "summary.json").read_text())
    return {row["name"]: row["test_accuracy"] for row in summary["models"]}


def _weights(path: pathlib.Path):
    import keras

    import fitnets_tf  # noqa: F401  (registers the classes a run's .keras files use)

    return keras.saving.load_model(path, compile=False, safe_mode=True).get_weights()


def compare(reference: pathlib.Path, run: pathlib.Path) -> list[str]:
    """The models of ``run`` whose accuracy or weights differ from ``reference``'s."""
    import numpy as np

    differing = []
    ref_acc, acc = _accuracies(reference), _accuracies(run)
    for name, path in _model_files(reference).items():
        other = run / path.relative_to(reference)
        same = ref_acc.get(name) == acc.get(name) and other.is_file()
        if same:
            a, b = _weights(path), _weights(other)
            same = len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
        if not same:
            differing.append(f"{name} ({ref_acc.get(name)} vs {acc.get(name)})")
    return differing


def litter(workdir: pathlib.Path) -> list[str]:
    """Temporary files of atomic writes that a kill interrupted (never read by a run)."""
    return sorted(str(p.relative_to(workdir)) for p in workdir.rglob(".tmp-*"))


def truncate_latest_checkpoint(workdir: pathlib.Path) -> str | None:
    """Cuts the unfinished stage's latest counted checkpoint index in half; its name, or None."""
    try:
        stages = json.loads((workdir / "run_state.json").read_text())["stages"]
    except (OSError, ValueError, KeyError):
        return None
    for key, record in stages.items():
        if not record.get("done") and record.get("epochs_done"):
            index = workdir / key / "checkpoints" / f"ckpt-{record['epochs_done']}.index"
            if index.is_file():
                os.truncate(index, index.stat().st_size // 2)
                return str(index.relative_to(workdir))
    return None


def corrupt_files(workdir: pathlib.Path) -> list[str]:
    """Files a resumed or finished run would read that do not load."""
    bad = []
    for path in workdir.rglob("*.keras"):
        if path.name.startswith(".tmp-"):
            continue
        try:
            _weights(path)
        except Exception as e:  # noqa: BLE001  (any failure is a corrupt file)
            bad.append(f"{path.relative_to(workdir)}: {type(e).__name__}")
    for path in workdir.rglob("run_state.json"):
        try:
            json.loads(path.read_text())
        except ValueError:
            bad.append(str(path.relative_to(workdir)))
    return bad


def _damage_warnings(log, start: int) -> int:
    """The damage warnings (one per damaged file) in what the runs logged after ``start``."""
    log.flush()
    with open(log.name) as f:
        f.seek(start)
        return f.read().count("is damaged")


def episode(command, workdir, kills_left, terms_left, duration, rng, log,
            truncations_left=0) -> dict:  # fmt: skip
    """Kills one run again and again until it finishes; returns what happened."""
    counts = {"sigkill": 0, "sigterm": 0, "resumes": 0, "truncated": 0, "damage_warnings": 0,
              "term_statuses": {}}  # fmt: skip
    log.flush()
    start = os.path.getsize(log.name)
    while True:
        began = time.perf_counter()
        if kills_left + terms_left == 0:
            status, sig = subprocess.run(command, cwd=ROOT, env=_env(), stdout=log,
                                         stderr=subprocess.STDOUT).returncode, None  # fmt: skip
        else:
            use_term = rng.random() < terms_left / (kills_left + terms_left)
            sig = signal.SIGTERM if use_term else signal.SIGKILL
            # Anywhere in a whole run: a resumed run skips what is done, so late moments
            # often fall after its end and the run finishes on its own.
            status, sent = run_killed(command, rng.uniform(1.0, duration), sig, log)
            if sent and sig == signal.SIGTERM:
                statuses = counts["term_statuses"]
                statuses[str(status)] = statuses.get(str(status), 0) + 1
            # A preempted run (75) and a killed one (< 0) resume; one that ended did not wait.
            status = None if sent and status != 0 else status
        if status is None:
            key = "sigterm" if sig == signal.SIGTERM else "sigkill"
            counts[key] += 1
            kills_left -= key == "sigkill"
            terms_left -= key == "sigterm"
            counts["resumes"] += 1
            if counts["truncated"] < truncations_left and truncate_latest_checkpoint(workdir):
                counts["truncated"] += 1
            continue
        counts["status"] = status
        counts["damage_warnings"] = _damage_warnings(log, start)
        if not counts["resumes"]:  # a whole run, not killed: how long one takes now
            counts["run_seconds"] = time.perf_counter() - began
        return counts


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flagfile", default="configs/smoke.flags")
    parser.add_argument("--kills", type=int, default=30, help="SIGKILLs in all")
    parser.add_argument("--terms", type=int, default=10, help="SIGTERMs in all")
    parser.add_argument("--checkpoint_every", type=int, default=2,
                        help="the killed runs' --checkpoint_every (steps; 0: epoch ends only)")
    parser.add_argument("--truncations", type=int, default=0,
                        help="kills followed by a checkpoint cut in half")
    # A kill moment after the end of a (resumed, shorter) run lets it finish: episodes without
    # a kill are common, so the bound is loose.
    parser.add_argument("--max_episodes", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0, help="of the kill moments")
    parser.add_argument("--workdir", default=None, help="default: a temporary directory")
    parser.add_argument("--results", default=str(RESULTS), help="where the counts are written")
    parser.add_argument("extra", nargs="*", help="more train flags (after --)")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    base = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="fault_soak-"))
    base.mkdir(parents=True, exist_ok=True)
    with open(base / "log.txt", "a") as log:
        reference = base / "reference"
        shutil.rmtree(reference, ignore_errors=True)
        command = _command(args.flagfile, reference, args.extra)
        reference_seconds = duration = run_to_end(command, log)
        print(f"reference run: {duration:.0f} s", flush=True)
        totals = {"episodes": 0, "sigkill": 0, "sigterm": 0, "resumes": 0, "truncated": 0,
                  "damage_warnings": 0, "identical": 0, "differing": [], "corrupt": [],
                  "litter": 0, "failed_runs": 0, "term_statuses": {},
                  "term_failures": 0}  # fmt: skip
        while totals["episodes"] < args.max_episodes and (
            totals["sigkill"] < args.kills or totals["sigterm"] < args.terms
        ):
            run = base / f"episode{totals['episodes']}"
            shutil.rmtree(run, ignore_errors=True)
            command = _command(args.flagfile, run,
                               [f"--checkpoint_every={args.checkpoint_every}", *args.extra])
            counts = episode(command, run, args.kills - totals["sigkill"],
                             args.terms - totals["sigterm"], duration, rng, log,
                             args.truncations - totals["truncated"])  # fmt: skip
            totals["episodes"] += 1
            # The machine's load changes: kill moments follow the latest whole run's length.
            duration = counts.pop("run_seconds", duration)
            for key in ("sigkill", "sigterm", "resumes", "truncated", "damage_warnings"):
                totals[key] += counts[key]
            for status, n in counts["term_statuses"].items():
                totals["term_statuses"][status] = totals["term_statuses"].get(status, 0) + n
                # 75: preempted as designed; -15: before the handlers (imports); 0: finished.
                totals["term_failures"] += n * (status not in ("75", "-15", "0"))
            totals["corrupt"] += [f"{run.name}/{c}" for c in corrupt_files(run)]
            totals["litter"] += len(litter(run))
            if counts["status"] != 0:
                totals["failed_runs"] += 1
                differing = [f"exit status {counts['status']}"]
            else:
                differing = compare(reference, run)
            totals["identical"] += not differing
            totals["differing"] += [f"{run.name}: {d}" for d in differing]
            print(f"{run.name}: {counts} -> {differing or 'identical'}",
                  flush=True)  # fmt: skip
    totals.update(
        flagfile=args.flagfile,
        checkpoint_every=args.checkpoint_every,
        reference_seconds=round(reference_seconds, 1),
        date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        workdir=str(base),
    )
    results = pathlib.Path(args.results)
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(totals, indent=2) + "\n")
    print(json.dumps({k: v for k, v in totals.items() if k != "workdir"}, indent=2))


if __name__ == "__main__":
    main()
