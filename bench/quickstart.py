"""The README's quick commands (the smoke training run and the smoke search), timed as printed.

    .venv/bin/python bench/quickstart.py            # in this checkout
    .venv/bin/python bench/quickstart.py --clone    # in a fresh clone of HEAD
    .venv/bin/python bench/quickstart.py --full_search   # and the README's Fashion-MNIST search

Each command is read from the README (the first line that runs its flagfile with
``.venv/bin/python``), so what is timed is what a reader types. Two changes, both recorded: the
interpreter is the one running this script (a worktree or a fresh clone has no ``.venv`` of its
own), and ``--workdir`` names a new folder under a temporary directory, outside the repository
(a search's workdir left by an earlier run would be resumed, not run again). Each runs under
``/usr/bin/time -v``, one after the other; its wall time, CPU time, peak memory, exit status,
the load around it and its last lines of output, with the machine, the commit and the date,
are appended to the ``history`` of ``bench/results/quickstart.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import re
import shlex
import shutil
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import timed_command  # noqa: E402  (ROOT on the path first: run as a script)

README = ROOT / "README.md"
RESULTS = ROOT / "bench" / "results" / "quickstart.json"
# The README's quick commands, by the flagfile each runs.
FLAGFILES = {"train_smoke": "configs/smoke.flags", "tune_smoke": "configs/tune_smoke.flags"}
# The README's search on real data (about 5 minutes), timed under --full_search.
FULL_SEARCH = {"tune_fashion_mnist": "configs/tune_fashion_mnist.flags"}
VENV_PYTHON = ".venv/bin/python"
TAIL_LINES = 8


def readme_commands(readme: str, flagfiles: dict[str, str] = FLAGFILES) -> dict[str, str]:
    """``{name: command}``: for each of ``flagfiles``, the README's first line that runs it
    with ``.venv/bin/python``, without its trailing comment."""
    commands = {}
    for name, flagfile in flagfiles.items():
        pattern = rf"^{re.escape(VENV_PYTHON)} .*--flagfile={re.escape(flagfile)}(?:\s.*)?$"
        line = re.search(pattern, readme, re.M)
        if line is None:
            raise SystemExit(f"README.md has no '{VENV_PYTHON} ... --flagfile={flagfile}' line")
        commands[name] = line.group(0).split("#", 1)[0].strip()
    return commands


def as_run(command: str, python: str, workdir: pathlib.Path) -> str:
    """``command`` with this interpreter for ``.venv/bin/python`` and ``--workdir=workdir``."""
    if command.startswith(VENV_PYTHON + " "):
        command = shlex.quote(python) + command[len(VENV_PYTHON) :]
    flag = f"--workdir={shlex.quote(str(workdir))}"
    if re.search(r"--workdir=\S+", command):
        return re.sub(r"--workdir=\S+", lambda _: flag, command)
    return f"{command} {flag}"


def time_commands(commands: dict[str, str], cwd: pathlib.Path, scratch: pathlib.Path,
                  python: str = sys.executable) -> list[dict]:  # fmt: skip
    """Runs each command in ``cwd``, its workdir and logs under ``scratch``, one after the other."""
    timed = []
    for name, command in commands.items():
        run = as_run(command, python, scratch / name)
        output = scratch / f"{name}.log"
        result = timed_command.run_timed(run, cwd, output, scratch / f"{name}.time")
        tail = output.read_text(errors="replace").splitlines()[-TAIL_LINES:]
        print(f"[{result['exit_status']}] {result['wall_s']:7.1f} s  {name}  "
              f"(load {result['load_start']:.1f} → {result['load_end']:.1f})", flush=True)  # fmt: skip
        timed.append({"name": name, "readme_command": command, "command": run, **result,
                      "output_tail": tail})  # fmt: skip
    return timed


def append_history(entry: dict, results: pathlib.Path = RESULTS) -> None:
    """Adds ``entry`` at the end of the ``history`` list of ``results`` (made if missing)."""
    record = json.loads(results.read_text()) if results.exists() else {"history": []}
    if not isinstance(record.get("history"), list):
        raise SystemExit(f"{results} has no 'history' list: move it aside and run again")
    record["history"].append(entry)
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clone", action="store_true", help="Run in a fresh clone of HEAD.")
    parser.add_argument("--keep", action="store_true",
                        help="Keep the temporary workdirs and logs (kept anyway on a failure).")  # fmt: skip
    parser.add_argument("--full_search", action="store_true",
                        help="Also time the README's search on real Fashion-MNIST (~5 min).")  # fmt: skip
    parser.add_argument("--results", default=str(RESULTS))
    args = parser.parse_args(argv)
    timed_command.require_time()
    commands = readme_commands(README.read_text(),
                               {**FLAGFILES, **(FULL_SEARCH if args.full_search else {})})  # fmt: skip
    scratch = pathlib.Path(tempfile.mkdtemp(prefix="fitnets_quickstart_"))
    cwd = timed_command.clone_head(scratch / "clone") if args.clone else ROOT
    code = timed_command.revision(cwd)  # before the runs: what ran, not what they left
    started, load_before = datetime.datetime.now(), os.getloadavg()
    timed = time_commands(commands, cwd, scratch)
    entry = {
        "date": f"{started:%Y-%m-%d %H:%M}", "where": "fresh clone" if args.clone else "checkout",
        **code, "machine": timed_command.machine(),
        "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "python": sys.executable, "commands": timed,
    }  # fmt: skip
    append_history(entry, pathlib.Path(args.results))
    status = max(t["exit_status"] for t in timed)
    if status or args.keep:
        print(f"workdirs and logs kept in {scratch}")
    else:
        shutil.rmtree(scratch)
    print(f"wrote {args.results}")
    return status


if __name__ == "__main__":
    sys.exit(main())
