"""The modern recipe's flags on the command line: recorded in flags.txt, and a run written
before they existed resumes (in a subprocess: the CLI defines absl flags)."""

import json

import pytest
from conftest import train_cli

from fitnets_tf.run.checksums import content_sha256

NEW = ("label_smoothing", "ema_momentum", "global_clipnorm", "flip")
SMALL = ("--flagfile=configs/smoke.flags", "--mode=kd", "--teacher_epochs=1", "--kd_epochs=1",
         "--limit=128", "--nomeasure_latency")  # fmt: skip


def _as_written_before_the_new_flags(workdir) -> None:
    """The run state and flags.txt without the new options, as an older version wrote them."""
    path = workdir / "run_state.json"
    state = json.loads(path.read_text())
    state.pop("sha256")
    state["config"] = {k: v for k, v in state["config"].items() if k not in NEW}
    path.write_text(json.dumps({**state, "sha256": content_sha256(state)}))
    (workdir / "run_state.json.prev").unlink(missing_ok=True)
    flags = workdir / "flags.txt"
    lines = flags.read_text().splitlines()
    flags.write_text("\n".join(x for x in lines if not x.startswith(tuple(f"--{n}=" for n in NEW))))


@pytest.mark.slow  # a whole smoke run, then its resume: ~35 s
def test_a_run_from_before_the_new_flags_resumes_and_records_them(tmp_path):
    workdir = tmp_path / "run"
    first = train_cli(*SMALL, f"--workdir={workdir}", "--stages=teacher", timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    _as_written_before_the_new_flags(workdir)
    assert "--label_smoothing" not in (workdir / "flags.txt").read_text()
    resumed = train_cli(f"--flagfile={workdir / 'flags.txt'}", f"--workdir={workdir}",
                        "--stages=teacher,stage2", timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming the run" in resumed.stdout
    flags = (workdir / "flags.txt").read_text().splitlines()
    for line in ("--label_smoothing=0.0", "--ema_momentum=0.0", "--global_clipnorm=0.0",
                 "--flip=auto"):  # fmt: skip
        assert line in flags
    other = train_cli(f"--flagfile={workdir / 'flags.txt'}", f"--workdir={workdir}",
                      "--label_smoothing=0.1", timeout=120)  # fmt: skip
    assert other.returncode == 1
    assert "label_smoothing: 0.0 there, 0.1 now" in other.stderr
