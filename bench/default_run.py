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
import json
import pathlib
import shutil
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import timed_command  # noqa: E402  (ROOT on the path first: run as a script)
from bench.timed_command import parse_time_log  # noqa: E402

README = ROOT / "README.md"
BEGIN, END = "<!-- default-table:begin -->", "<!-- default-table:end -->"
RUN_DIR = "runs/fashion_mnist"  # where configs/fashion_mnist.flags writes
PLOTS = {"curves_fitnet.png": "fashion_mnist_curves_fitnet.png",
         "comparison.png": "fashion_mnist_comparison.png"}  # fmt: skip


def first_command(readme: str) -> str:
    """The first line of the README's first fenced code block, without its trailing comment."""
    block = readme.split("```", 2)[1]
    line = block.split("\n")[1]
    return line.split("#", 1)[0].strip()


def _minutes(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)  # rounded first: never "18 min 60 s"
    return f"{minutes} min {rest:02d} s"


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
    clone = timed_command.clone_head(keep)
    timed = {**timed_command.run_timed(command, clone, clone / "output.log", clone / "time.log"),
             "machine": timed_command.machine(), "clone": str(clone)}  # fmt: skip
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
                 "date": args.date or "(date not recorded)",
                 "machine": timed_command.machine()}  # fmt: skip
        run_dir = pathlib.Path(args.run_dir)
    else:
        timed_command.require_time()
        keep = pathlib.Path(args.clone_dir) if args.clone_dir else None
        run_dir, timed = fresh_clone_run(command, keep)
    print(report(run_dir, timed, command, pathlib.Path(args.docs)))


if __name__ == "__main__":
    main()
