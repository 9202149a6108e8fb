"""The multi-worker agreement's pure parts: positions, the common point, going back one commit.

The agreement itself runs between worker processes: tests/test_multiworker.py (``-m slow``).
"""

import pytest

from fitnets_tf.errors import ConfigMismatchError
from fitnets_tf.run import cluster, lock, resume
from fitnets_tf.run.layout import RunLayout


def _state(workdir, **stages):
    state = resume.RunState(workdir, {"seed": 0})
    for key, fields in stages.items():
        state.stage(key).update(fields)
    return state


def test_a_position_is_where_each_started_stage_resumes(tmp_path):
    state = _state(tmp_path, **{"fitnet/hints": {"epochs_done": 1, "done": True},
                                "fitnet/kd": {"epochs_done": 1, "mid_epoch": {"checkpoint": 7}},
                                "kd/kd": {}})  # fmt: skip
    state.data["finished"] = [["fitnet/kd", "fitnet/hints"]]
    assert cluster.position(state.data) == {
        "stages": {"fitnet/hints": [True, 1, 0], "fitnet/kd": [False, 1, 7]},  # kd/kd: not begun
        "finished": [["fitnet/hints", "fitnet/kd"]],
    }
    assert cluster.position({}) == cluster.position(_state(tmp_path / "new").data)
    assert 1 <= cluster.digest(cluster.position({})) < 2**31


@pytest.mark.parametrize(
    "rows, point",
    [
        ([[5, 4], [5, 4]], 5),  # together
        ([[5, 4], [4, 3]], 4),  # worker 0 one commit ahead: it goes back
        ([[4, 3], [5, 4], [4, 3]], 4),
        ([[4, 0], [5, 4]], 4),  # the one behind has no previous state: it need not go back
        ([[6, 5], [4, 3]], None),  # two commits apart
        ([[5, 0], [4, 3]], None),  # the one ahead cannot read its previous state
        ([[5, 4], [4, 5]], 4),  # two points reachable: the same one on every worker
    ],
)  # fmt: skip
def test_the_common_point_is_one_every_worker_reaches_in_at_most_one_commit_back(rows, point):
    assert cluster.common_point(rows) == point


def test_going_back_one_commit_restores_the_previous_run_state(tmp_path):
    files = RunLayout(tmp_path)
    assert cluster._previous(files) == (0, None)  # no run state: nothing to go back to
    state = _state(tmp_path, **{"kd/kd": {"epochs_done": 1, "epochs": 2}})
    state.save()
    first = cluster.digest(cluster.position(state.data))
    empty = cluster.digest(cluster.position({}))
    assert cluster._previous(files) == (empty, None)  # the first commit: back to none
    state.stage("kd/kd").update(mid_epoch={"epoch": 1, "step": 3, "checkpoint": 7})
    state.save()
    previous, text = cluster._previous(files)
    assert previous == first and text is not None
    cluster.roll_back(files, text)
    back = resume.RunState(tmp_path, {"seed": 0})
    assert cluster.position(back.data) == {"stages": {"kd/kd": [False, 1, 0]}, "finished": []}
    assert back.initial_epoch("kd/kd") == 1 and back.initial_step("kd/kd") == 0
    files.run_state_previous.write_text("{damaged")
    assert cluster._previous(files) == (0, None)  # unreadable: cannot go back


def test_going_back_from_the_first_commit_leaves_no_run_state(tmp_path):
    state = _state(tmp_path, **{"kd/kd": {"epochs_done": 1, "epochs": 2}})
    state.save()
    cluster.roll_back(RunLayout(tmp_path), None)
    assert not RunLayout(tmp_path).run_state.exists()
    assert not resume.RunState(tmp_path, {"seed": 0}).resuming


def test_outside_a_multi_worker_run_nothing_is_agreed_and_refusals_are_as_before(tmp_path):
    cluster.agree_on_progress(tmp_path, {"seed": 0}, None)  # no collective, no change
    assert not RunLayout(tmp_path).run_state.exists()
    with cluster.hold(tmp_path, None, {"seed": 0}):
        assert lock.held(tmp_path)
    _state(tmp_path / "other").save()
    refused = pytest.raises(ConfigMismatchError, match="different configuration")
    with refused, cluster.hold(tmp_path / "other", None, {"seed": 1}):
        pass
    assert cluster.strategy_for("default") is None and cluster.strategy_for("mirrored") is None
    assert not cluster.is_multi_worker(None)
