import keras
import numpy as np
import pytest
from conftest import tiny_dataset, tiny_model

import fitnets_tf
from fitnets_tf import stages
from fitnets_tf.callbacks import DivergenceWarning, EarlyStopping, LambdaAnnealing


def test_paper_code_schedule_values():
    # The paper's code: λ = 4 until epoch 5, linear to 1 at epoch 400, then 1.
    schedule = LambdaAnnealing(4.0, 1.0, epochs=395, hold=5)
    assert [schedule.value(e) for e in (0, 5, 400, 500)] == [4.0, 4.0, 1.0, 1.0]
    np.testing.assert_allclose(schedule.value(288), 4.0 - 3.0 * 283 / 395)  # all-data run stop


def test_lambda_after_n_epochs_and_the_loss_follows_it(teacher, student):
    d = fitnets_tf.Distiller(teacher, student, kd_lambda=4.0)
    d.compile(optimizer="sgd", phase="kd")
    history = d.fit(
        tiny_dataset(), epochs=4, verbose=0, callbacks=[LambdaAnnealing(4.0, 1.0, epochs=2)]
    ).history
    np.testing.assert_allclose(history["kd_lambda"], [4.0, 2.5, 1.0, 1.0])
    assert float(d.kd_lambda.numpy()) == 1.0
    # The logged total is ce + λ·kd with this epoch's λ: the compiled step saw every change.
    total = np.array(history["ce_loss"]) + np.array(history["kd_lambda"]) * history["kd_loss"]
    np.testing.assert_allclose(history["loss"], total, rtol=1e-5)


def test_per_step_annealing(teacher, student):
    d = fitnets_tf.Distiller(teacher, student)
    d.compile(optimizer="sgd", phase="kd")
    d.fit(tiny_dataset(), epochs=1, verbose=0, callbacks=[LambdaAnnealing(4.0, 0.0, steps=4)])
    assert float(d.kd_lambda.numpy()) == 1.0  # step 3 of 4 was the last to run


def test_per_step_annealing_follows_the_optimizers_step_count(teacher, student):
    # Not initial_epoch: a new optimizer starts the schedule again, the same one continues it.
    d = fitnets_tf.Distiller(teacher, student)
    d.compile(optimizer="sgd", phase="kd")
    annealing = LambdaAnnealing(4.0, 0.0, steps=8)
    d.fit(tiny_dataset(), epochs=2, initial_epoch=1, verbose=0, callbacks=[annealing])
    assert float(d.kd_lambda.numpy()) == 2.5  # step 3 of 8, as from epoch 0
    d.fit(tiny_dataset(), epochs=1, verbose=0, callbacks=[annealing])
    assert float(d.kd_lambda.numpy()) == 0.5  # step 7


def test_per_step_annealing_refuses_several_steps_per_execution(teacher, student):
    # Keras calls batch callbacks once per execution: λ would hold for 2 steps at a time.
    d = fitnets_tf.Distiller(teacher, student)
    d.compile(optimizer="sgd", phase="kd", steps_per_execution=2)
    with pytest.raises(ValueError, match=r"steps_per_execution=2 steps.*steps_per_execution=1"):
        d.fit(tiny_dataset(), epochs=1, verbose=0, callbacks=[LambdaAnnealing(4, 0, steps=4)])
    assert int(d.optimizer.iterations.numpy()) == 0  # refused before any step
    history = d.fit(tiny_dataset(), epochs=2, verbose=0,
                    callbacks=[LambdaAnnealing(4, 0, epochs=1)]).history  # fmt: skip
    assert history["kd_lambda"] == [4.0, 0.0]  # per epoch: exact under any steps_per_execution


def test_resumed_fit_gets_the_resumed_epoch_value(teacher, student):
    d = fitnets_tf.Distiller(teacher, student)
    d.compile(optimizer="sgd", phase="kd")
    d.fit(tiny_dataset(), epochs=3, initial_epoch=2, verbose=0,
          callbacks=[LambdaAnnealing(4.0, 1.0, epochs=4)])  # fmt: skip
    assert float(d.kd_lambda.numpy()) == 2.5


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"epochs": 2, "steps": 3}, {"epochs": 0}, {"epochs": 2, "hold": -1},
     {"epochs": 2, "start": -1.0}],
)  # fmt: skip
def test_bad_schedules(kwargs):
    with pytest.raises(ValueError):
        LambdaAnnealing(**kwargs)


def test_divergence_is_said_once_naming_the_stages_learning_rate():
    said = []
    warning = DivergenceWarning("fitnet/hints", log=said.append)
    for epoch, hint_loss in enumerate([2.0, 19.9, float("nan"), 20.5, 400.0]):
        warning.on_epoch_end(epoch, {"loss": 1.0, "hint_loss": hint_loss})
    assert len(said) == 1
    assert "'fitnet/hints' is diverging: its hint_loss grew from 2 " in said[0]
    assert "to 20.5 after epoch 4. Lower --hints_learning_rate" in said[0]
    teacher, kd = DivergenceWarning("teacher", said.append), DivergenceWarning("kd/kd", said.append)
    for epoch, loss in enumerate([1.0, 0.5, 11.0]):
        teacher.on_epoch_end(epoch, {"loss": loss})
        kd.on_epoch_end(epoch, {"loss": loss / 10})
    assert "--teacher_learning_rate" in said[1] and "Lower --learning_rate" in said[2]


@pytest.mark.parametrize("stage", sorted(stages.PAPER_STAGE))
def test_divergence_names_the_learning_rate_each_stage_trains_at(stage):
    # stagewise_labels' guided_labels trains at stage 1's rate and was told --learning_rate.
    said = []
    warning = DivergenceWarning(f"mode/{stage}", log=said.append)
    for epoch, loss in enumerate([1.0, 11.0]):
        warning.on_epoch_end(epoch, {"loss": loss})
    stage_one = stages.PAPER_STAGE[stage] == "stage1"
    assert f"Lower --{'hints_' if stage_one else ''}learning_rate," in said[0]


def test_early_stopping_keeps_what_the_stage_trains_not_the_frozen_teacher():
    # Keras' keeps model.get_weights(): a Distiller's teacher too, at every improvement and in
    # every checkpoint's best_weights.npz. Judged by λ (annealed 4 -> 1), epoch 1 is the best.
    def kd(early_stopping):
        d = fitnets_tf.Distiller(tiny_model("teacher", width=6, seed=0, pieces=3),
                                 tiny_model("student", width=4, seed=1))  # fmt: skip
        d.compile(optimizer="sgd", phase="kd")
        d.fit(tiny_dataset(), epochs=3, verbose=0,
              callbacks=[LambdaAnnealing(4.0, 1.0, epochs=2), early_stopping])  # fmt: skip
        return d

    args = dict(monitor="kd_lambda", mode="max", patience=5, restore_best_weights=True)
    ours, theirs = EarlyStopping(**args), keras.callbacks.EarlyStopping(**args)
    d, reference = kd(ours), kd(theirs)
    # λ is not rewound with the weights: Distiller.fit keeps it where training left it.
    assert ours.best_epoch == theirs.best_epoch == 0 and float(d.kd_lambda) == 1.0
    assert len(ours.best_weights) == len(d.weights) - len(d.teacher.weights)
    assert len(theirs.best_weights) == len(d.weights)
    for a, b in zip(d.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    # A checkpoint of an older run holds every weight: restored as well.
    ours.best_weights = [w + 1 for w in theirs.best_weights]
    ours.on_train_end()
    np.testing.assert_array_equal(
        d.teacher.get_weights()[0], reference.teacher.get_weights()[0] + 1
    )
