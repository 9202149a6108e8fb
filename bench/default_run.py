"""The README's first command, timed from a fresh clone; writes the README's table of it.

    python bench/default_run.py            # clone HEAD, run the command under /usr/bin/time -v
    python bench/default_run.py --run_dir=runs/fashion_mnist --time_log=time.log  # rebuild only

The command is read from the README itself (the first line of its first code block), so what is
timed is what a newcomer types. The clone is of the committed HEAD (uncommitted changes are not
in it: the script says so). The run's closing table (rebuilt from its ``summary.json`` by the
code that prints it), the wall time, CPU time, peak memory and exit status from ``/usr/bin/time
-v``, the machine and its load go to the README's ``default-table`` block and to
``bench/results/default_run.json``; the run's curves and comparison plots to ``docs/``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

README = ROOT / "README.md"
BEGIN, END = "<!-- default-table:begin -->", "<!-- default-table:end -->"
RUN_DIR = "runs/fashion_mnist"  # where configs/fashion_mnist.flags writes
PLOTS = {"curves_fitnet.png": "fashion_mnist_curves_fitnet.png",
         "comparison.png": "fashion_mnist_comparison.png"}  # fmt: skip
# GNU time -v lines -> our keys.
_TIME_FIELDS = {
    "Elapsed (wall clock) time": "wall",
    "User time (seconds)": "user_s",
    "System time (seconds)": "system_s",
    "Maximum resident set size (kbytes)": "max_rss_kb",
    "Exit status": "exit_status",
}


def first_command(readme: str) -> str:
    """The first line of the README's first fenced code block, without its trailing comment."""
    block = readme.split("```", 2)[1]
    line = block.split("\n")[1]
    return line.split("#", 1)[0].strip()


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


def _minutes(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)  # rounded first: never "18 min 60 s"
    return f"{minutes} min {rest:02d} s"


def _cpu() -> str:
    with open("/proc/cpuinfo") as f:
        name = next((line.split(":", 1)[1].strip() for line in f if "model name" in line), "CPU")
    return f"{name}, {os.cpu_count()} cores"


def block(rows: list[dict], timed: dict, command: str) -> str:
    """The README block: the closing table, then how long the command took, where and when."""
    from fitnets_tf.reporting.summary import summary_table

    load = ""
    if "load_start" in timed:  # not known when the block is rebuilt from an old run
        load = "; 1-minute load average " + " → ".join(
            f"{timed[k]:.1f}" for k in ("load_start", "load_end")
        )
    return "\n".join([
        "```", summary_table(rows), "```",
        f"From a fresh clone, `{command}` under `/usr/bin/time -v` on {timed['date']} "
        f"({timed['machine']}, no GPU{load}): "
        f"**{_minutes(timed['wall_s'])} wall**, {timed['user_s'] / 60:.1f} min of user CPU, "
        f"peak memory {timed['max_rss_kb'] / 1024**2:.1f} GB, exit status {timed['exit_status']}. "
        "Written by `python bench/default_run.py`. Latencies move by up to 2× between runs on a "
        "shared machine: read the speed-ups as ratios measured in one run.",
    ])  # fmt: skip


def write_readme(text: str, readme: pathlib.Path = README) -> None:
    page = readme.read_text()
    if BEGIN not in page or END not in page:
        raise SystemExit(f"{readme} has no {BEGIN} ... {END} block to write into")
    head, rest = page.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")


def report(run_dir: pathlib.Path, timed: dict, command: str, docs: pathlib.Path) -> str:
    """Writes the README block, default_run.json and the plots; returns the block."""
    rows = json.loads((run_dir / "summary.json").read_text())["models"]
    text = block(rows, timed, command)
    write_readme(text)
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    record = {**timed, "command": command, "models": rows}
    (results / "default_run.json").write_text(json.dumps(record, indent=1))
    for name, target in PLOTS.items():
        if (run_dir / "plots" / name).exists():
            shutil.copyfile(run_dir / "plots" / name, docs / target)
    return text


def fresh_clone_run(command: str, keep: pathlib.Path | None) -> tuple[pathlib.Path, dict]:
    """Clones HEAD, runs ``command`` there under ``/usr/bin/time -v``; its run dir and timing."""
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout  # fmt: skip
    if dirty.strip():
        print("[default_run] uncommitted changes are not in the clone: HEAD is timed", flush=True)
    if keep is not None and keep.exists() and any(keep.iterdir()):
        raise SystemExit(f"--clone_dir={keep} is not empty: a fresh clone needs an empty folder")
    clone = keep or pathlib.Path(tempfile.mkdtemp(prefix="fitnets_fresh_"))
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    log = clone / "time.log"
    load_start = os.getloadavg()[0]
    started = datetime.datetime.now()
    with open(clone / "output.log", "w") as out:
        subprocess.run(["/usr/bin/time", "-v", "-o", str(log), "bash", "-c", command],
                       cwd=clone, stdout=out, stderr=subprocess.STDOUT, check=False)  # fmt: skip
    timed = {**parse_time_log(log.read_text()), "load_start": load_start,
             "load_end": os.getloadavg()[0], "date": f"{started:%Y-%m-%d %H:%M}",
             "machine": _cpu(), "clone": str(clone)}  # fmt: skip
    if timed["exit_status"] != 0:
        raise SystemExit(
            f"the command failed (exit {timed['exit_status']}): see {clone}/output.log"
        )
    return clone / RUN_DIR, timed


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run_dir", help="a finished run of the command: rebuild the block only")
    parser.add_argument("--time_log", help="/usr/bin/time -v output of that run (with --run_dir)")
    parser.add_argument("--date", help="when that run started (with --run_dir)")
    parser.add_argument("--clone_dir", help="clone here instead of a new temporary folder")
    parser.add_argument("--docs", default=str(ROOT / "docs"))
    args = parser.parse_args(argv)
    command = first_command(README.read_text())
    if args.run_dir:
        if not args.time_log:
            parser.error("--run_dir needs --time_log (the /usr/bin/time -v output of that run)")
        timed = {**parse_time_log(pathlib.Path(args.time_log).read_text()),
                 "date": args.date or "(date not recorded)", "machine": _cpu()}  # fmt: skip
        run_dir = pathlib.Path(args.run_dir)
    else:
        if not shutil.which("/usr/bin/time"):
            raise SystemExit("/usr/bin/time is missing: apt-get install time")
        keep = pathlib.Path(args.clone_dir) if args.clone_dir else None
        run_dir, timed = fresh_clone_run(command, keep)
    print(report(run_dir, timed, command, pathlib.Path(args.docs)))


if __name__ == "__main__":
    main()
