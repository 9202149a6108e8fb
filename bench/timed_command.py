"""A README command timed as a newcomer runs it: under ``/usr/bin/time -v``, with the machine,
its load and the commit, from this checkout or from a fresh clone of its HEAD.

Shared by ``bench/default_run.py`` (the default experiment) and ``bench/quickstart.py`` (the
smoke commands).
"""

from __future__ import annotations

import datetime
import os
import pathlib
import shutil
import subprocess
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
# GNU time -v lines -> our keys.
_TIME_FIELDS = {
    "Elapsed (wall clock) time": "wall",
    "User time (seconds)": "user_s",
    "System time (seconds)": "system_s",
    "Maximum resident set size (kbytes)": "max_rss_kb",
    "Exit status": "exit_status",
}


def parse_time_log(text: str) -> dict:
    """The fields of ``/usr/bin/time -v`` we report; the wall clock in seconds."""
    found = {}
    for line in text.splitlines():
        name, _, value = line.strip().rpartition(": ")
        for prefix, key in _TIME_FIELDS.items():
            if name.startswith(prefix):
                found[key] = value.strip()
    if "wall" not in found:
        raise ValueError("no 'Elapsed (wall clock) time' line: not the output of /usr/bin/time -v")
    *hours_minutes, seconds = found.pop("wall").split(":")
    wall = float(seconds)
    for i, part in enumerate(reversed(hours_minutes), start=1):
        wall += int(part) * 60**i
    result = {"wall_s": wall}
    for key in ("user_s", "system_s"):
        result[key] = float(found[key])
    result["max_rss_kb"] = int(found["max_rss_kb"])
    result["exit_status"] = int(found["exit_status"])
    return result


def machine() -> str:
    """The CPU's model name and the number of cores, e.g. ``AMD EPYC, 2 cores``."""
    with open("/proc/cpuinfo") as f:
        name = next((line.split(":", 1)[1].strip() for line in f if "model name" in line), "CPU")
    return f"{name}, {os.cpu_count()} cores"


def revision(checkout: pathlib.Path = ROOT) -> dict:
    """The commit a checkout is at, and whether it has uncommitted changes (then those ran too)."""

    def git(*args):
        return subprocess.run(["git", *args], cwd=checkout, capture_output=True, text=True,
                              check=True).stdout.strip()  # fmt: skip

    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "dirty": bool(git("status", "--porcelain")),
    }


def require_time() -> None:
    if not shutil.which("/usr/bin/time"):
        raise SystemExit("/usr/bin/time is missing: apt-get install time")


def clone_head(keep: pathlib.Path | None = None, prefix: str = "fitnets_fresh_") -> pathlib.Path:
    """A fresh clone of this checkout's HEAD, in ``keep`` (must be empty) or a temporary folder."""
    if revision()["dirty"]:
        print(f"[{prefix.strip('_')}] uncommitted changes are not in the clone: HEAD is timed",
              flush=True)  # fmt: skip
    if keep is not None and keep.exists() and any(keep.iterdir()):
        raise SystemExit(f"--clone_dir={keep} is not empty: a fresh clone needs an empty folder")
    clone = keep or pathlib.Path(tempfile.mkdtemp(prefix=prefix))
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    return clone


def run_timed(
    command: str, cwd: pathlib.Path, output: pathlib.Path, time_log: pathlib.Path
) -> dict:
    """Runs ``bash -c command`` in ``cwd`` under ``/usr/bin/time -v`` (its report to
    ``time_log``), stdout and stderr together to ``output``; its timing, exit status, the 1-minute
    load average before and after, and when it started. A failing command does not raise: its
    exit status says it."""
    load_start = os.getloadavg()[0]
    started = datetime.datetime.now()
    with open(output, "w") as out:
        subprocess.run(["/usr/bin/time", "-v", "-o", str(time_log), "bash", "-c", command],
                       cwd=cwd, stdout=out, stderr=subprocess.STDOUT, check=False)  # fmt: skip
    return {**parse_time_log(time_log.read_text()), "load_start": load_start,
            "load_end": os.getloadavg()[0], "date": f"{started:%Y-%m-%d %H:%M}"}  # fmt: skip
