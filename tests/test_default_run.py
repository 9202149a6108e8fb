"""bench/default_run.py: the README's first command, its timing and the README block."""

from bench import default_run

TIME_LOG = """\tCommand being timed: "bash -c ./setup.sh && true"
\tUser time (seconds): 1110.52
\tSystem time (seconds): 35.10
\tPercent of CPU this job got: 126%
\tElapsed (wall clock) time (h:mm:ss or m:ss): 15:09.12
\tMaximum resident set size (kbytes): 2621440
\tExit status: 0
"""


def test_first_command_is_the_readmes_default_experiment():
    command = default_run.first_command(default_run.README.read_text())
    assert command == (
        "./setup.sh && .venv/bin/python -m fitnets_tf.train --flagfile=configs/fashion_mnist.flags"
    )


def test_time_log_fields():
    assert default_run.parse_time_log(TIME_LOG) == {
        "wall_s": 909.12, "user_s": 1110.52, "system_s": 35.10, "max_rss_kb": 2621440,
        "exit_status": 0,
    }  # fmt: skip
    hours = TIME_LOG.replace("15:09.12", "1:02:03.50")
    assert default_run.parse_time_log(hours)["wall_s"] == 3723.5


def test_block_has_the_table_and_the_timing(tmp_path):
    rows = [
        {"name": "teacher", "test_accuracy": 0.9417, "params": 2_562_362,
         "latency_ms_per_image_batch1_litert": 0.25},
        {"name": "fitnet", "test_accuracy": 0.9273, "params": 61_378,
         "latency_ms_per_image_batch1_litert": 0.05},
    ]  # fmt: skip
    timed = {**default_run.parse_time_log(TIME_LOG), "date": "2026-12-04 22:28",
             "machine": "CPU X, 2 cores", "load_start": 0.4, "load_end": 2.1}  # fmt: skip
    text = default_run.block(rows, timed, "./setup.sh && run")
    assert "fitnet     0.9273     61,378      0.050" in text
    assert "fitnet vs teacher speed-up: LiteRT 5.0x b1" in text
    assert "**15 min 09 s wall**, 18.5 min of user CPU, peak memory 2.5 GB, exit status 0" in text
    assert "(CPU X, 2 cores, no GPU; 1-minute load average 0.4 → 2.1)" in text
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{default_run.BEGIN}\nold\n{default_run.END}\nkept\n")
    default_run.write_readme(text, readme)
    assert readme.read_text() == f"# x\n{default_run.BEGIN}\n{text}\n{default_run.END}\nkept\n"
