"""bench/standalone.py: the standalone benchmarks' result file. (Its ``arguments`` sets
TensorFlow's threads, which a test process may not change once TensorFlow has run.)"""

from __future__ import annotations

import json

from bench import standalone


def test_result_written_with_the_load_at_its_end_and_shown_keys_printed(tmp_path, capsys):
    path = tmp_path / "results" / "probe.json"
    standalone.write(path, {"machine": {"cpu": "x"}, "layer": 1, "steps": 2}, shown=("layer",))
    written = json.loads(path.read_text())
    assert written["steps"] == 2 and len(written["machine"]["load_average_end"]) == 3
    assert json.loads(capsys.readouterr().out) == {"layer": 1}

