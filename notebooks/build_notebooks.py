"""Writes the tutorial notebooks (``notebooks/*.ipynb``) from the cells in this file.

The cells live here, as text, so that a change to a notebook is a readable diff, and the
``.ipynb`` files are written without outputs, so no stale output is ever committed.
``tests/test_notebooks.py`` runs every notebook in smoke mode and fails when a committed
notebook has outputs or differs from what this script writes.

    .venv/bin/python notebooks/build_notebooks.py          # rewrite the notebooks
    .venv/bin/python notebooks/build_notebooks.py --check  # exit 1 if one is out of date

Edited a notebook in Jupyter? Copy the change into the cells below and rerun this script.
"""

from __future__ import annotations

import pathlib
import sys
import textwrap

import nbformat

HERE = pathlib.Path(__file__).parent


def md(text: str):
    return nbformat.v4.new_markdown_cell(textwrap.dedent(text).strip())


def code(text: str):
    return nbformat.v4.new_code_cell(textwrap.dedent(text).strip())


# ----------------------------------------------------------------------------- 01 quickstart

QUICKSTART = [
    md(
        r"""
        # FitNets quickstart: hints, then distillation, with `model.fit`

        **FitNets** (Romero et al., *FitNets: Hints for Thin Deep Nets*, ICLR 2015) compresses a
        wide, shallow *teacher* network into a *student* that is thinner (fewer channels) and
        deeper (more layers): fewer parameters, fewer multiplications, faster inference. A thin
        deep net is hard to train from scratch, so FitNets trains it in two stages:

        1. **Hint training**: the first half of the student learns to reproduce an intermediate
           layer of the teacher.
        2. **Knowledge distillation**: the whole student learns from the labels *and* from the
           teacher's softened predictions.

        In `fitnets_tf` both stages are one `keras.Model`, the `Distiller`: you pick the stage
        with `compile(phase=...)` and train it with `fit`, like any Keras model.

        This notebook uses the paper's MNIST teacher and FitNet on the real Fashion-MNIST
        (read offline), trains the teacher, runs both stages, compares the result with the
        same student trained on the labels alone, and exports the student.

        **Run time on a 2-core CPU**: 18 minutes (measured on 2026-12-02 while other jobs shared
        the machine); with `FITNETS_SMOKE=1` in the environment (what the tests do), 38 seconds
        (2026-12-06).
        """
    ),
    code(
        r"""
        %matplotlib inline
        import os

        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # hide TensorFlow's C++ info logs

        # FITNETS_SMOKE=1 (set by the tests) shrinks data and epochs to a smoke run. Without it:
        # the full data set, a teacher trained here for 3 epochs, then 2 epochs of hints and 5 of
        # KD: the command line's flag defaults (--helpfull), not the default experiment's
        # (configs/fashion_mnist.flags loads a shipped wide_cnn teacher for a thin_cnn student).
        SMOKE = os.environ.get("FITNETS_SMOKE") == "1"
        LIMIT = 1500 if SMOKE else None  # examples per split; None: 50K train, 10K val, 10K test
        TEACHER_EPOCHS = 1 if SMOKE else 3
        HINTS_EPOCHS = 1 if SMOKE else 2  # stage 1
        KD_EPOCHS = 1 if SMOKE else 5  # stage 2
        LATENCY_REPEATS = 5 if SMOKE else 15
        VERBOSE = 2 if SMOKE else 1  # one line per epoch, or a progress bar
        print("smoke run" if SMOKE else "full run", f"(limit={LIMIT})")
        """
    ),
    code(
        r"""
        import time

        import keras
        import matplotlib.pyplot as plt
        import numpy as np
        import tensorflow as tf
        from IPython.display import Markdown, display

        import fitnets_tf
        from fitnets_tf import callbacks, data, export, latency, models, stages

        tf.get_logger().setLevel("ERROR")  # e.g. retracing notes when predict() meets a short last batch
        keras.utils.set_random_seed(0)
        start = time.perf_counter()
        """
    ),
    md(
        r"""
        ## 1. Data

        `data.load` builds seeded `tf.data` pipelines through TensorFlow Datasets. Fashion-MNIST
        comes from the Debian package `dataset-fashion-mnist`, so nothing is downloaded. As in
        the paper, the last 10,000 training images are held out for validation. The images are
        already preprocessed (pixels scaled to [0, 1]); `ds.preprocessor` is the layer that did
        it, kept for the export at the end.
        """
    ),
    code(
        r"""
        ds = data.load("fashion_mnist", batch_size=128, seed=0, limit=LIMIT)
        print(f"train {ds.num_train_examples:,}, validation {ds.num_validation_examples:,}, "
              f"test {ds.num_test_examples:,} images of shape {ds.input_shape}")

        CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
        x_test, y_test = (np.concatenate(parts) for parts in zip(*ds.test.as_numpy_iterator()))

        fig, axes = plt.subplots(1, 8, figsize=(12, 1.9))
        for ax, image, label in zip(axes, x_test, y_test):
            ax.imshow(image[..., 0], cmap="gray_r")
            ax.set_title(CLASSES[label], fontsize=9)
            ax.axis("off")
        plt.show()
        """
    ),
    md(
        r"""
        ## 2. Teacher and student

        The **teacher** is the paper's MNIST maxout network: three wide convolutional layers
        (48-48-24 maxout units, about 361K parameters). The **student**, the paper's MNIST
        FitNet, has six thin ones (16-16-16-16-12-12, about 36K parameters). *Maxout* units
        output the maximum of a few linear "pieces" (2 in most layers here).

        The paper guides the middle of the student with the middle of the teacher: the
        teacher's layer 2 is the **hint layer**, the student's layer 4 the **guided layer**.
        `models.paper_pair` returns the teacher's architecture and the Keras names of these two
        layers (a paper layer includes its pooling, hence `pool2` / `pool4`).

        The paper's teacher uses dropout 0.5 (0.2 on the input), meant for hundreds of epochs;
        for a few epochs the command line's flags lower it to 0.2 (none on the input) by default
        (`--teacher_dropout`, `--teacher_input_dropout`), and so do we. The baseline is the same student architecture built with the same seed, so it
        starts from the same initial weights.
        """
    ),
    code(
        r"""
        pair = models.paper_pair("mnist_fitnet")
        print(pair)

        teacher = models.build(pair.teacher, ds.input_shape, ds.num_classes, seed=0,
                               dropout=0.2, input_dropout=0.0)
        student = models.build("mnist_fitnet", ds.input_shape, ds.num_classes, seed=1)
        scratch = models.build("mnist_fitnet", ds.input_shape, ds.num_classes, seed=1)
        assert all(np.array_equal(a, b) for a, b in zip(student.get_weights(), scratch.get_weights()))

        for model in (teacher, student):
            print(f"{model.name:>14}: {models.count_params(model):>9,} parameters, "
                  f"{models.count_multiplications(model):>11,} multiplications per image")
        """
    ),
    md(
        r"""
        ## 3. Train the teacher

        Any Keras training works for the teacher; `stages.fit_labels` compiles it with RMSProp
        and cross-entropy on its logits and calls `fit`. From here on the teacher is frozen.
        """
    ),
    code(
        r"""
        teacher_history = stages.fit_labels(
            teacher, ds.train, ds.validation, epochs=TEACHER_EPOCHS,
            hparams=stages.Hyperparameters(learning_rate=1e-3), verbose=VERBOSE,
        )
        """
    ),
    md(
        r"""
        ## 4. Stage 1: hint training

        The teacher's hint layer outputs a feature map $u_h(x)$; the student's guided layer
        outputs $v_g(x)$, usually with fewer channels. A small **regressor** $r$ maps one onto
        the other, and stage 1 minimises

        $$L_{HT} = \tfrac{1}{2}\,\lVert u_h(x) - r(v_g(x))\rVert^2,$$

        summed over all features of an image and averaged over the batch. Only the student's
        layers up to the guided layer and the regressor are trained; the rest of the student
        waits for stage 2.

        The regressor is convolutional, as in the paper: a *valid* convolution with kernel
        $k = N_g - N_h + 1$ (the two maps' widths), followed by the hint layer's own
        non-linearity (here a maxout with the teacher's number of pieces). The `Distiller`
        builds it from the two layers' shapes; it is thrown away after this stage.
        """
    ),
    code(
        r"""
        distiller = fitnets_tf.Distiller(
            teacher, student, hint_layer=pair.hint_layer, guided_layer=pair.guided_layer,
            temperature=3.0, kd_lambda=4.0,
        )
        regressor = distiller.regressor
        hint_shape = teacher.get_layer(pair.hint_layer).output.shape
        guided_shape = student.get_layer(pair.guided_layer).output.shape
        print(f"hint layer   teacher.{pair.hint_layer}: {hint_shape}")
        print(f"guided layer student.{pair.guided_layer}: {guided_shape}")
        print(f"regressor: {type(regressor).__name__}, kernel {regressor.kernel_size}, "
              f"{regressor.pieces} pieces, {regressor.count_params():,} weights")
        """
    ),
    code(
        r"""
        LEARNING_RATE = 1e-3  # RMSProp for both stages and the baseline (the paper: 5e-4 on MNIST)

        distiller.compile(optimizer=keras.optimizers.RMSprop(LEARNING_RATE), phase="hints")
        hints_history = distiller.fit(
            ds.train, validation_data=ds.validation, epochs=HINTS_EPOCHS, verbose=VERBOSE,
            shuffle=False,  # ds.train is already shuffled (seeded) by tf.data
        )
        """
    ),
    md(
        r"""
        ## 5. Stage 2: knowledge distillation with a λ curriculum

        Now the whole student learns from the labels $y$ and from the teacher's predictions
        softened by a temperature $\tau$ ($P^\tau = \mathrm{softmax}(\text{logits}/\tau)$, which
        shows how the teacher ranks the wrong classes too):

        $$L_{KD} = H(y, P_S) + \lambda\, H(P_T^\tau, P_S^\tau).$$

        The paper uses $\tau = 3$ and, unlike most later code, no $\tau^2$ factor on the soft
        term. $\lambda$ follows a **curriculum**: it decays linearly from 4 to 1 during the
        stage, so the teacher's soft targets, and with them the examples the teacher is
        confident about, weigh most at first and less later. `LambdaAnnealing` sets the
        Distiller's `kd_lambda` variable at the start of every epoch, and the Distiller logs it
        as `kd_lambda`.

        `compile(phase="kd")` gives the Distiller a fresh optimizer over the whole student and
        drops the regressor. `metrics=["accuracy"]` is the student's accuracy on the labels.
        """
    ),
    code(
        r"""
        distiller.compile(
            optimizer=keras.optimizers.RMSprop(LEARNING_RATE), phase="kd", metrics=["accuracy"]
        )
        annealing = callbacks.LambdaAnnealing(start=4.0, end=1.0, epochs=max(KD_EPOCHS - 1, 1))
        kd_history = distiller.fit(
            ds.train, validation_data=ds.validation, epochs=KD_EPOCHS, callbacks=[annealing],
            verbose=VERBOSE, shuffle=False,
        )
        """
    ),
    md(
        r"""
        ## 6. Baseline: the same student trained on the labels only

        Same architecture, same initial weights, same optimizer, and as many epochs as both
        FitNets stages together, but plain back-propagation on the labels. With the paper's
        tiny initialisation, U(−0.005, 0.005), a thin deep net like this one can take a long
        time to start learning at all: that is the problem hints solve.
        """
    ),
    code(
        r"""
        scratch_history = stages.fit_labels(
            scratch, ds.train, ds.validation, epochs=HINTS_EPOCHS + KD_EPOCHS,
            hparams=stages.Hyperparameters(learning_rate=LEARNING_RATE), verbose=VERBOSE,
        )
        """
    ),
    md(
        r"""
        ## 7. Training curves

        Stage 1 logs `hint_loss`; stage 2 logs the two terms of $L_{KD}$ (`ce_loss` on the
        labels, `kd_loss` on the teacher's soft targets), the scheduled `kd_lambda`, and the
        accuracy. The last panel puts the FitNet's validation accuracy (epochs counted over
        both stages) next to the baseline's and the teacher's.
        """
    ),
    code(
        r"""
        def epochs(history, offset=0):
            return np.arange(1, len(history.history["loss"]) + 1) + offset

        h1, h2, hs = hints_history.history, kd_history.history, scratch_history.history
        fig, axes = plt.subplots(1, 4, figsize=(16, 3.4))
        axes[0].plot(epochs(hints_history), h1["hint_loss"], "o-", label="train")
        axes[0].plot(epochs(hints_history), h1["val_hint_loss"], "o--", label="validation")
        axes[0].set_title("stage 1: hint loss")
        axes[1].plot(epochs(kd_history), h2["ce_loss"], "o-", label=r"$H(y, P_S)$")
        axes[1].plot(epochs(kd_history), h2["kd_loss"], "o-", label=r"$H(P_T^\tau, P_S^\tau)$")
        axes[1].set_title("stage 2: the two terms")
        axes[2].plot(epochs(kd_history), h2["kd_lambda"], "o-")
        axes[2].set_title("stage 2: λ")
        axes[3].plot(epochs(kd_history, HINTS_EPOCHS), h2["val_accuracy"], "o-", label="FitNet (stage 2)")
        axes[3].plot(epochs(scratch_history), hs["val_accuracy"], "o-", label="from scratch")
        axes[3].axhline(teacher_history.history["val_accuracy"][-1], color="gray", ls=":", label="teacher")
        axes[3].set_title("validation accuracy")
        for ax in axes:
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8)
        fig.tight_layout()
        plt.show()
        """
    ),
    md(
        r"""
        ## 8. Teacher vs student

        Test accuracy, size, the paper's cost measure (multiplications per image, weights only)
        and measured CPU latency (`latency.measure_latency`: median of repeated inference
        calls, batch 1 and batch 128). Latency on a shared 2-core machine is noisy; the
        multiplication counts are exact.

        A few epochs are far from the paper's hundreds: neither network is converged, and a
        distilled student can come close to its teacher or even overtake it. The baseline,
        from the paper's tiny initialisation, U(−0.005, 0.005), may not have started to learn
        at all (chance level is 0.10).
        """
    ),
    code(
        r"""
        def test_accuracy(model):
            logits = model.predict(x_test, batch_size=256, verbose=0)
            return float(np.mean(np.argmax(logits, axis=-1) == y_test))

        rows = []
        for name, model in [("teacher", teacher), ("FitNet student", distiller.student),
                            ("student from scratch", scratch)]:
            timing = latency.measure_latency(model, batch_sizes=(1, 128), repeats=LATENCY_REPEATS)
            rows.append((name, test_accuracy(model), models.count_params(model),
                         models.count_multiplications(model), timing[1]["ms_per_image"],
                         timing[128]["ms_per_image"]))

        table = ["| model | test accuracy | parameters | multiplications | ms/image, batch 1 "
                 "| ms/image, batch 128 |", "|---|---:|---:|---:|---:|---:|"]
        for n, a, p, m, l1, l128 in rows:
            table.append(f"| {n} | {a:.4f} | {p:,} | {m:,} | {l1:.3f} | {l128:.4f} |")
        display(Markdown("\n".join(table)))
        teacher_row, student_row = rows[0], rows[1]
        print(f"The student has {teacher_row[2] / student_row[2]:.1f}x fewer parameters and "
              f"{teacher_row[3] / student_row[3]:.1f}x fewer multiplications than the teacher.")
        """
    ),
    md(
        r"""
        ## 9. A few predictions

        The distilled student on test images: predicted class and its probability, in green when
        right and red when wrong. `distiller.predict` runs the student (calling a Distiller is
        calling its student).
        """
    ),
    code(
        r"""
        probabilities = tf.nn.softmax(distiller.predict(x_test[:12], verbose=0)).numpy()
        fig, axes = plt.subplots(2, 6, figsize=(12, 4.6))
        for ax, image, label, p in zip(axes.flat, x_test, y_test, probabilities):
            guess = int(np.argmax(p))
            ax.imshow(image[..., 0], cmap="gray_r")
            ax.set_title(f"{CLASSES[guess]} ({p[guess]:.0%})\ntrue: {CLASSES[label]}",
                         fontsize=8, color="green" if guess == label else "red")
            ax.axis("off")
        fig.tight_layout()
        plt.show()
        """
    ),
    md(
        r"""
        ## 10. Export the student

        Only the student is exported: no teacher, no regressor, no Distiller. With
        `include_preprocessing=True` the fitted preprocessing is baked in, so the SavedModel
        takes raw pixels in [0, 255] and returns class probabilities. `export_student` writes
        to a temporary name, reloads the artifact, checks its outputs against the student and
        only then moves it into place. `format` can also be `"keras"`, `"onnx"` or `"litert"`.
        """
    ),
    code(
        r"""
        path = export.export_student(
            distiller.student, "runs/quickstart/student_raw_saved_model", "saved_model",
            preprocessor=ds.preprocessor, include_preprocessing=True, overwrite=True,
        )
        print("exported to", path)

        # What a server does: load the SavedModel (no fitnets_tf needed) and send raw pixels.
        serving = tf.saved_model.load(str(path)).signatures["serving_default"]
        raw_pixels = tf.constant(x_test[:12] * 255.0)  # undo the /255 scaling of the pipeline
        served = serving(images=raw_pixels)["probabilities"].numpy()
        print("same probabilities as the student:", np.allclose(served, probabilities, atol=1e-5))
        print(f"notebook ran in {time.perf_counter() - start:.0f} s")
        """
    ),
    md(
        r"""
        ## Next

        * [02_custom_models.ipynb](02_custom_models.ipynb): your own teacher and student,
          chosen layers, and what happens when their shapes do not match.
        * [03_tuning.ipynb](03_tuning.ipynb): search λ and τ with keras-tuner.
        * The whole experiment from the command line, into a run directory:
          `python -m fitnets_tf.train --flagfile=configs/fashion_mnist.flags`.
        """
    ),
]


# ------------------------------------------------------------------------ 02 custom models

CUSTOM_MODELS = [
    md(
        r"""
        # Distil your own teacher into your own student

        `fitnets_tf.Distiller` works with any two **Functional** Keras models that output
        logits. You choose the teacher's *hint layer* and the student's *guided layer* by name;
        nothing in your models has to change. What matters is the two layers' output shapes:
        they decide the *regressor* that maps the student's features onto the teacher's, or
        make the pair impossible.

        This notebook builds a small ReLU teacher and a thinner, deeper student with the plain
        Keras Functional API, shows how the regressor is chosen, what the errors look like when
        the shapes cannot be matched, and then distils the student with `model.fit`.

        **Run time on a 2-core CPU**: 5.4 minutes (measured on 2026-12-02 on a busy machine);
        with `FITNETS_SMOKE=1`, 19 seconds (2026-12-06).
        """
    ),
    code(
        r"""
        %matplotlib inline
        import os

        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # hide TensorFlow's C++ info logs

        # FITNETS_SMOKE=1 (set by the tests) shrinks data and epochs to a smoke run.
        SMOKE = os.environ.get("FITNETS_SMOKE") == "1"
        LIMIT = 1000 if SMOKE else None  # examples per split; None: all of Fashion-MNIST
        TEACHER_EPOCHS = 1 if SMOKE else 3
        HINTS_EPOCHS = 1 if SMOKE else 2
        KD_EPOCHS = 1 if SMOKE else 3
        VERBOSE = 2 if SMOKE else 1
        print("smoke run" if SMOKE else "full run", f"(limit={LIMIT})")
        """
    ),
    code(
        r"""
        import keras
        import matplotlib.pyplot as plt
        import numpy as np

        import fitnets_tf
        from fitnets_tf import callbacks, data, layers, models, stages
        from fitnets_tf.regressor import HintShapeError

        keras.utils.set_random_seed(0)
        ds = data.load("fashion_mnist", batch_size=128, seed=0, limit=LIMIT)
        """
    ),
    md(
        r"""
        ## 1. Your models

        A teacher: two wide ReLU convolutions with pooling, a third, global pooling, logits.
        A student: thinner and deeper, with some *valid* convolutions so that its feature maps
        shrink at a different pace. Name the layers you may want to tap; Keras' automatic
        names work too but change from session to session.
        """
    ),
    code(
        r"""
        def conv(filters, kernel, name, padding="same"):
            return keras.layers.Conv2D(filters, kernel, padding=padding, activation="relu", name=name)

        inputs = keras.Input(ds.input_shape, name="t_input")
        h = conv(64, 3, "t_conv1")(inputs)
        h = keras.layers.MaxPooling2D(2, name="t_pool1")(h)  # 14x14
        h = conv(64, 3, "t_conv2")(h)
        h = keras.layers.MaxPooling2D(2, name="t_pool2")(h)  # 7x7
        h = conv(128, 3, "t_conv3")(h)
        h = keras.layers.GlobalAveragePooling2D(name="t_gap")(h)
        teacher = keras.Model(inputs, keras.layers.Dense(10, name="t_logits")(h), name="my_teacher")

        inputs = keras.Input(ds.input_shape, name="s_input")
        h = conv(16, 3, "s_conv1")(inputs)
        h = conv(16, 3, "s_conv2")(h)
        h = keras.layers.MaxPooling2D(2, name="s_pool1")(h)  # 14x14
        h = conv(24, 3, "s_conv3", padding="valid")(h)  # 12x12
        h = conv(24, 3, "s_conv4", padding="valid")(h)  # 10x10
        h = conv(32, 2, "s_conv5", padding="valid")(h)  # 9x9
        h = conv(32, 3, "s_conv6")(h)
        h = keras.layers.GlobalAveragePooling2D(name="s_gap")(h)
        student = keras.Model(inputs, keras.layers.Dense(10, name="s_logits")(h), name="my_student")

        def shapes(model):
            print(f"{model.name}: {models.count_params(model):,} parameters, "
                  f"{models.count_multiplications(model):,} multiplications")
            for layer in model.layers[1:]:
                print(f"  {layer.name:10} {str(layer.output.shape[1:]):16} {type(layer).__name__}")

        shapes(teacher)
        shapes(student)
        """
    ),
    md(
        r"""
        Train the teacher first, in any way you like; `stages.fit_labels` compiles it with
        RMSProp and cross-entropy on its logits and calls `fit`. A `Distiller` freezes its
        teacher (`teacher.trainable = False`) when it is built, so the teacher must be trained
        before the first one is made.
        """
    ),
    code(
        r"""
        teacher_history = stages.fit_labels(
            teacher, ds.train, ds.validation, epochs=TEACHER_EPOCHS,
            hparams=stages.Hyperparameters(learning_rate=1e-3), verbose=VERBOSE,
        )
        """
    ),
    md(
        r"""
        ## 2. Check a pair before training

        The paper's rule of thumb: the middle of the teacher guides the middle of the student
        (guiding a deeper student layer over-regularises it). Here the teacher's `t_pool2`
        (7×7×64) guides the student's `s_conv5` (9×9×32).

        `fitnets_tf.make_hint_path` builds what stage 1 trains, without touching either model:
        the two sub-models that stop at the chosen layers (sharing the models' weights) and
        the regressor. It is a cheap way to check a pair; the `Distiller` calls it when it is
        built.

        **How the regressor is chosen** (`regressor="auto"`, the paper's rule):
        * a **convolution**, not a dense layer, so its size does not grow with the map area;
        * **valid**, with kernel $k = N_g - N_h + 1$ per axis ($N$ = map width): 9 − 7 + 1 = 3
          here, which turns the 9×9 guided map into a 7×7 one;
        * as many output channels as the hint (64);
        * the **hint layer's non-linearity**, found by looking through pooling and dropout:
          ReLU here, so a `Conv2D(activation="relu")`.
        """
    ),
    code(
        r"""
        def describe(regressor):
            kind = type(regressor).__name__
            if hasattr(regressor, "pieces"):
                kind += f", maxout with {regressor.pieces} pieces"
            else:
                kind += f", activation {keras.activations.serialize(regressor.activation)}"
            return f"{kind}, kernel {regressor.kernel_size}, {regressor.count_params():,} weights"

        teacher_hint, student_guided, regressor = fitnets_tf.make_hint_path(
            teacher, student, hint_layer="t_pool2", guided_layer="s_conv5"
        )
        print("teacher up to the hint:  ", teacher_hint.output.shape)
        print("student up to the guided:", student_guided.output.shape)
        print("regressor:", describe(regressor), "->", regressor.compute_output_shape((None, 9, 9, 32)))
        """
    ),
    md(
        r"""
        ## 3. When the shapes cannot be matched

        A valid convolution can only shrink a map, so the guided map must be at least as large
        as the hint map, and both layers must be feature maps (or both flat). Unknown layer
        names are reported with the list of valid ones. The `Distiller` fails when it is built,
        before any data is read, with an error that names both layers, their shapes and a fix;
        shape problems raise `HintShapeError`, a `ValueError`.
        """
    ),
    code(
        r"""
        # The hint map (14x14) is larger than the guided map (12x12).
        try:
            fitnets_tf.Distiller(teacher, student, hint_layer="t_pool1", guided_layer="s_conv3")
        except HintShapeError as e:
            print(f"{type(e).__name__}: {e}")
        """
    ),
    code(
        r"""
        # A feature map cannot be regressed from a flat vector (different ranks).
        try:
            fitnets_tf.Distiller(teacher, student, hint_layer="t_pool2", guided_layer="s_gap")
        except HintShapeError as e:
            print(f"{type(e).__name__}: {e}")
        """
    ),
    code(
        r"""
        # A typo in a layer name.
        try:
            fitnets_tf.Distiller(teacher, student, hint_layer="t_pool2", guided_layer="s_conv9")
        except ValueError as e:
            print(f"{type(e).__name__}: {e}")
        """
    ),
    md(
        r"""
        ## 4. Other regressors

        * A **maxout** hint layer (the paper's teachers) gets a maxout regressor with the
          teacher's number of pieces. `fitnets_tf.layers.MaxoutConv2D` is a layer you can use in
          your own models.
        * `regressor="linear"`: the same convolution with no non-linearity.
        * Your **own layer**: any Keras layer that maps the guided output to the hint shape,
          for example a "same" convolution when the two maps already have the same size. A
          layer that produces the wrong shape is refused with the shapes it would produce.
        """
    ),
    code(
        r"""
        inputs = keras.Input(ds.input_shape, name="m_input")
        h = layers.MaxoutConv2D(48, 3, pieces=3, padding="same", name="m_conv1")(inputs)
        h = keras.layers.MaxPooling2D(2, name="m_pool1")(h)
        h = layers.MaxoutConv2D(48, 3, pieces=3, padding="same", name="m_conv2")(h)
        h = keras.layers.MaxPooling2D(2, name="m_pool2")(h)
        h = keras.layers.GlobalMaxPooling2D(name="m_gmp")(h)
        logits = keras.layers.Dense(10, name="m_logits")(h)
        maxout_teacher = keras.Model(inputs, logits, name="maxout_teacher")

        d = fitnets_tf.Distiller(maxout_teacher, student, hint_layer="m_pool2", guided_layer="s_conv5")
        print("maxout hint:          ", describe(d.regressor))

        d = fitnets_tf.Distiller(teacher, student, hint_layer="t_pool2", guided_layer="s_conv5",
                                 regressor="linear")
        print('regressor="linear":   ', describe(d.regressor))

        own = keras.layers.Conv2D(64, 3, activation="relu", name="my_regressor")  # 9x9 -> 7x7
        d = fitnets_tf.Distiller(teacher, student, hint_layer="t_pool2", guided_layer="s_conv5",
                                 regressor=own)
        print("your own layer:       ", describe(d.regressor))

        try:
            fitnets_tf.Distiller(teacher, student, hint_layer="t_pool2", guided_layer="s_conv5",
                                 regressor=keras.layers.Conv2D(64, 3, padding="same"))
        except HintShapeError as e:
            print(f"\n{type(e).__name__}: {e}")
        """
    ),
    md(
        r"""
        ## 5. Distil

        The same two stages as in the quickstart, on your models: `compile(phase="hints")` and
        `fit` trains `s_conv1`…`s_conv5` and the regressor to predict `t_pool2`;
        `compile(phase="kd")` and `fit` trains the whole student on the labels and the
        teacher's soft targets (τ = 3), with λ annealed from 4 to 1 by `LambdaAnnealing`.
        """
    ),
    code(
        r"""
        distiller = fitnets_tf.Distiller(
            teacher, student, hint_layer="t_pool2", guided_layer="s_conv5",
            temperature=3.0, kd_lambda=4.0,
        )
        distiller.compile(optimizer=keras.optimizers.RMSprop(1e-3), phase="hints")
        hints_history = distiller.fit(ds.train, validation_data=ds.validation,
                                      epochs=HINTS_EPOCHS, verbose=VERBOSE, shuffle=False)

        distiller.compile(optimizer=keras.optimizers.RMSprop(1e-3), phase="kd", metrics=["accuracy"])
        kd_history = distiller.fit(
            ds.train, validation_data=ds.validation, epochs=KD_EPOCHS, verbose=VERBOSE, shuffle=False,
            callbacks=[callbacks.LambdaAnnealing(start=4.0, end=1.0, epochs=max(KD_EPOCHS - 1, 1))],
        )
        """
    ),
    code(
        r"""
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.2))
        for ax, (title, history, key) in zip(axes, [
            ("stage 1: hint loss", hints_history, "hint_loss"),
            ("stage 2: H(y, P_S), the labels' term", kd_history, "ce_loss"),
            ("stage 2: accuracy", kd_history, "accuracy"),
        ]):
            x = np.arange(1, len(history.history[key]) + 1)
            ax.plot(x, history.history[key], "o-", label="train")
            ax.plot(x, history.history["val_" + key], "o--", label="validation")
            ax.set_title(title)
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
            ax.legend(fontsize=8)
        fig.tight_layout()
        plt.show()

        _, teacher_accuracy = teacher.evaluate(ds.test, verbose=0)
        student_accuracy = distiller.evaluate(ds.test, verbose=0, return_dict=True)["accuracy"]
        for name, model, accuracy in [("teacher", teacher, teacher_accuracy),
                                      ("student", distiller.student, student_accuracy)]:
            print(f"{name}: test accuracy {accuracy:.4f}, {models.count_params(model):,} parameters")
        """
    ),
    md(
        r"""
        ## 6. Keep the student

        `distiller.student` is your own model object, now trained; it holds no teacher and no
        regressor. Save it as usual, or export it for serving with
        `fitnets_tf.export.export_student` (see the quickstart).
        """
    ),
    code(
        r"""
        os.makedirs("runs/custom_models", exist_ok=True)
        distiller.student.save("runs/custom_models/my_student.keras")
        reloaded = keras.saving.load_model("runs/custom_models/my_student.keras")
        print(reloaded.name, [layer.name for layer in reloaded.layers][-3:])
        """
    ),
]


# ---------------------------------------------------------------------------- 03 tuning

TUNING = [
    md(
        r"""
        # Tuning λ and τ with keras-tuner

        FitNets' stage 2 has two knobs: the **temperature** τ that softens the teacher's
        predictions, and the **KD weight** λ of the soft term, $L_{KD} = H(y, P_S) + \lambda\,
        H(P_T^\tau, P_S^\tau)$, which the paper's curriculum starts at λ0 = 4 and lowers
        linearly to 1. The paper fixes τ = 3 and λ0 = 4; another teacher, student or data set
        may want other values.

        `fitnets_tf.search.FitNetsHyperModel` is a keras-tuner `HyperModel` over λ0 and τ:
        `build(hp)` makes a `Distiller` with the trial's τ and λ0, and `fit(hp, model, ...)`
        runs stage 2 with λ annealed from λ0 to its end value. Stage 1 (hint training) does not
        depend on λ or τ, so it runs once, before the search, and every trial starts from the
        same hint-trained student. A trial's score is its best validation accuracy; the test
        split is only read at the very end, for the winner.

        **Run time on a 2-core CPU**: 21 minutes (measured on 2026-12-02 while other jobs shared
        the machine; 20,000 training images, 8 trials of 2 epochs, each trial about 1.5
        minutes); with `FITNETS_SMOKE=1`, 33 seconds (2 trials of 1 epoch; 2026-12-06).
        """
    ),
    code(
        r"""
        %matplotlib inline
        import os

        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # hide TensorFlow's C++ info logs

        # FITNETS_SMOKE=1 (set by the tests) shrinks data, epochs and the search to a smoke run.
        SMOKE = os.environ.get("FITNETS_SMOKE") == "1"
        LIMIT = 1000 if SMOKE else 20_000  # training images (validation and test: 10K each)
        TEACHER_EPOCHS = 1 if SMOKE else 3
        HINTS_EPOCHS = 1 if SMOKE else 2
        MAX_TRIALS = 2 if SMOKE else 8
        TRIAL_EPOCHS = 1 if SMOKE else 2  # stage-2 epochs per trial
        VERBOSE = 2 if SMOKE else 1
        print("smoke run" if SMOKE else "full run", f"(limit={LIMIT})")
        """
    ),
    code(
        r"""
        import pathlib
        import shutil

        import keras
        import numpy as np
        import tensorflow as tf
        from IPython.display import Image, display

        import fitnets_tf
        from fitnets_tf import data, models, search, stages

        tf.get_logger().setLevel("ERROR")
        keras.utils.set_random_seed(0)
        # Where the teacher, stage 1 and the trials are written. keras-tuner resumes a search
        # found there, so start from an empty folder: this notebook retrains the teacher.
        WORKDIR = pathlib.Path("runs/tuning")
        shutil.rmtree(WORKDIR, ignore_errors=True)
        WORKDIR.mkdir(parents=True)
        """
    ),
    md(
        r"""
        ## 1. The teacher and stage 1, once

        The paper's MNIST pair on Fashion-MNIST, as in the quickstart: train the teacher, then
        hint-train the student's first half (`stages.fit_labels` and `stages.fit_hints` are
        the `compile` + `fit` calls of the quickstart in one function each). Both are saved:
        keras-tuner clears the Keras session before every trial, so each trial reloads them.
        """
    ),
    code(
        r"""
        ds = data.load("fashion_mnist", batch_size=128, seed=0, limit=LIMIT)
        print(f"train {ds.num_train_examples:,}, validation {ds.num_validation_examples:,} images")

        pair = models.paper_pair("mnist_fitnet")
        hparams = stages.Hyperparameters(learning_rate=1e-3)  # λ0 = 4 → 1, τ = 3: the paper's


        def build_student():
            return models.build("mnist_fitnet", ds.input_shape, ds.num_classes, seed=1)


        teacher = models.build(pair.teacher, ds.input_shape, ds.num_classes, seed=0,
                               dropout=0.2, input_dropout=0.0)  # as in the quickstart
        stages.fit_labels(teacher, ds.train, ds.validation, epochs=TEACHER_EPOCHS,
                            hparams=stages.Hyperparameters(learning_rate=1e-3), verbose=VERBOSE)
        teacher.save(WORKDIR / "teacher.keras")

        student = build_student()
        distiller = fitnets_tf.Distiller(teacher, student, pair.hint_layer, pair.guided_layer)
        stages.fit_hints(distiller, ds.train, ds.validation, epochs=HINTS_EPOCHS,
                           hparams=hparams, verbose=VERBOSE)
        student.save(WORKDIR / "student_hints.keras")
        """
    ),
    md(
        r"""
        ## 2. The search space and the HyperModel

        `SearchSpace` holds the ranges. λ0 and τ are sampled on a log scale (their effect is
        multiplicative). Each range's default is the value in `hparams`, here the paper's, and
        the tuner runs the defaults as its first trial: the search starts from a known
        baseline. `SearchSpace.with_optional([...])` also searches λ's end value, the learning
        rate or the τ² factor.
        """
    ),
    code(
        r"""
        space = search.SearchSpace(kd_lambda=(0.5, 16.0), temperature=(1.0, 10.0))
        for name, spec in space.describe(hparams).items():
            print(f"{name:12} {spec}")

        hypermodel = search.FitNetsHyperModel(
            WORKDIR / "teacher.keras", build_student, WORKDIR / "student_hints.keras",
            hparams=hparams, space=space, seed=0,
        )
        """
    ),
    md(
        r"""
        ## 3. The search

        `search.make_tuner` returns a keras-tuner `Tuner` (random search here; `"bayesian"` and
        `"hyperband"` also work) that maximises `val_accuracy`, and keeps only the student in
        each trial's checkpoint. `tuner.search` takes what `fit` takes; `data_epoch` keeps the
        pipeline's shuffling in step with the epochs, so every trial sees the same batches.
        """
    ),
    code(
        r"""
        tuner = search.make_tuner(
            hypermodel, oracle="random", max_trials=MAX_TRIALS, trial_epochs=TRIAL_EPOCHS,
            directory=WORKDIR, seed=0,
        )
        tuner.search(ds.train, ds.validation, epochs=TRIAL_EPOCHS, data_epoch=ds.epoch,
                      verbose=VERBOSE)
        """
    ),
    md(
        r"""
        ## 4. Results

        One row per trial, best first, and the validation accuracy of every trial over λ0 × τ
        (the square is the paper's values, the star the best trial).

        Read it with the trial length in mind: a trial of a couple of epochs rewards values that
        learn fast, not necessarily those that end best after the paper's hundreds of epochs.
        Raise `TRIAL_EPOCHS` (and the data) before trusting a winner.
        """
    ),
    code(
        r"""
        rows = search.trial_rows(tuner.oracle, space, TRIAL_EPOCHS)
        print(search.table(rows))
        title = f"{len(rows)} trials of {TRIAL_EPOCHS} epoch(s), {LIMIT:,} training images"
        search.plot_results(rows, WORKDIR / "results.png", title, space=space)
        display(Image(filename=str(WORKDIR / "results.png")))
        """
    ),
    md(
        r"""
        ## 5. The winner, on the test split

        `tuner.load_model(trial)` rebuilds a trial's Distiller with its student's best
        weights. Only now is the test split read, once, for the chosen configuration. To train
        with these values from the start, pass them to the `Distiller` (`temperature=`,
        `kd_lambda=`) and to `LambdaAnnealing(start=...)`, or to the command line
        (`--kd_lambda`, `--temperature`); `python -m fitnets_tf.tune` runs this whole search
        from a flagfile and writes the best values as one (`best.flags`).
        """
    ),
    code(
        r"""
        best = search.best_trial(tuner.oracle)
        values = best.hyperparameters.values
        print(f"best trial {best.trial_id}: λ0 = {values['kd_lambda']:.3g}, "
              f"τ = {values['temperature']:.3g}, validation accuracy {best.score:.4f}")
        defaults = next(r for r in rows if r["defaults"])
        print(f"the paper's λ0 = 4, τ = 3 (trial {defaults['trial_id']}): validation accuracy "
              f"{defaults['val_accuracy']:.4f}")

        student = tuner.load_model(best).student
        x_test, y_test = (np.concatenate(parts) for parts in zip(*ds.test.as_numpy_iterator()))
        predictions = np.argmax(student.predict(x_test, batch_size=256, verbose=0), axis=-1)
        print(f"test accuracy of the best trial's student: {np.mean(predictions == y_test):.4f}")
        """
    ),
]

# ------------------------------------------------------------------ 04 your own model and images

OWN_MODEL = [
    md(
        r"""
        # Distil your own model on your own images

        The job people bring to a distillation library: a **trained teacher of their own** (a
        `.keras` file), a **student architecture** they want to deploy, and **a folder of their
        own images**. This notebook does that job from Python, then the same job with the
        command line's options through `fitnets_tf.experiment.run`:

        1. a folder of images, one sub-folder per class (here: real Fashion-MNIST written as
           PNG files, standing in for yours), read by `fitnets_tf.data.load("folder:PATH")`;
        2. a teacher trained and saved as `teacher.keras` (yours would already exist);
        3. the layers of both models, and the hint pair the paper's rule picks (`hints="auto"`);
        4. stage 1 with **two hint pairs**, stage 2 (KD) with an SGD + cosine recipe;
        5. a **subclassed** student trained by KD alone;
        6. the student exported to SavedModel, `.keras`, ONNX and LiteRT in one call;
        7. the same run as `python -m fitnets_tf.train --dataset=folder:... --teacher=...keras
           --student=...keras --hints=auto`, through `experiment.run`.

        **Run time on a 2-core CPU**: not measured for a full run; with `FITNETS_SMOKE=1` (what
        the tests do), 41 seconds (2026-12-06).
        """
    ),
    code(
        r"""
        %matplotlib inline
        import os

        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # hide TensorFlow's C++ info logs

        SMOKE = os.environ.get("FITNETS_SMOKE") == "1"
        PER_CLASS = 40 if SMOKE else 600  # images per class written to the folder
        TEACHER_EPOCHS = 1 if SMOKE else 8
        HINTS_EPOCHS = 1 if SMOKE else 3
        KD_EPOCHS = 2 if SMOKE else 8  # more than the command line's warm-up epoch (section 7)
        VERBOSE = 2  # one line per epoch
        WORK = "runs/04_own_model"
        print("smoke run" if SMOKE else "full run", f"({PER_CLASS} images per class)")
        """
    ),
    md(
        r"""
        ## 1. Your images: a folder, one sub-folder per class

        Any PNG, JPEG, BMP or GIF files work; the class names are the sub-folders' names,
        sorted. Without `train/` and `test/` sub-folders, a seeded 10% is held out for the test
        and 10% of the rest for validation, each class giving its share (`validation_size=`
        changes the second; a run records the draw in its `data.json`). Every file
        is decoded once when the folder is read, so a corrupt image is named before any
        training starts.
        """
    ),
    code(
        r"""
        import gzip
        import pathlib

        import numpy as np
        import tensorflow as tf

        from fitnets_tf import data

        def write_image_folder(root, per_class):
            # Stand-in for your own images: real Fashion-MNIST, as PNG files in class folders.
            source = pathlib.Path(data.DEBIAN_FASHION_MNIST_DIR)
            with gzip.open(source / "train-images-idx3-ubyte.gz") as f:
                images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28, 1)
            with gzip.open(source / "train-labels-idx1-ubyte.gz") as f:
                labels = np.frombuffer(f.read(), np.uint8, offset=8)
            names = ["tshirt", "trouser", "pullover", "dress", "coat",
                     "sandal", "shirt", "sneaker", "bag", "boot"]
            for k, name in enumerate(names):
                folder = pathlib.Path(root) / name
                folder.mkdir(parents=True, exist_ok=True)
                for i in np.flatnonzero(labels == k)[:per_class]:
                    tf.io.write_file(str(folder / f"{i}.png"), tf.io.encode_png(images[i]))

        write_image_folder(f"{WORK}/images", PER_CLASS)
        ds = data.load(f"folder:{WORK}/images", batch_size=64, seed=0)
        print(ds.spec.class_names, ds.input_shape, ds.num_classes)
        print(f"train {ds.num_train_examples}, validation {ds.num_validation_examples}, "
              f"test {ds.num_test_examples}")
        """
    ),
    md(
        r"""
        ## 2. Your teacher, as a `.keras` file

        Yours is already trained; here a small ReLU CNN stands in for it, trained for a few
        epochs and saved. Whatever trained it, the `Distiller` needs only a Functional model
        that outputs logits (a final softmax is removed for you when the command line loads a
        teacher file).
        """
    ),
    code(
        r"""
        import keras

        from fitnets_tf import stages

        def conv_block(x, filters, name):
            x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv")(x)
            x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
            return keras.layers.ReLU(name=name)(x)

        keras.utils.set_random_seed(0)
        inputs = keras.Input(ds.input_shape)
        x = conv_block(inputs, 64, "t_block1")
        x = keras.layers.MaxPooling2D(name="t_pool1")(conv_block(x, 64, "t_block2"))  # 14x14
        x = keras.layers.MaxPooling2D(name="t_pool2")(conv_block(x, 128, "t_block3"))  # 7x7
        x = keras.layers.GlobalAveragePooling2D()(conv_block(x, 128, "t_block4"))
        teacher = keras.Model(inputs, keras.layers.Dense(ds.num_classes, name="logits")(x),
                              name="my_teacher")
        stages.fit_labels(teacher, ds.train, ds.validation, epochs=TEACHER_EPOCHS,
                          hparams=stages.Hyperparameters(learning_rate=1e-3), verbose=VERBOSE)
        teacher.save(f"{WORK}/teacher.keras")
        print("teacher test accuracy:", teacher.evaluate(ds.test, verbose=0, return_dict=True)["accuracy"])
        """
    ),
    md(
        r"""
        ## 3. Your student, and which layers to pair

        The student you want to deploy: thinner, here 8× fewer parameters. `describe_models`
        prints both models' layers with their output shapes, marks the feature maps that can
        serve as hints (`*`), and says which pair the paper's rule picks: the middle of the
        teacher guides the middle of the student, among the pairs the convolutional regressor
        can map (`--list_layers` on the command line prints the same).
        """
    ),
    code(
        r"""
        from fitnets_tf import hint_choice, models

        keras.utils.set_random_seed(1)
        inputs = keras.Input(ds.input_shape)
        x = conv_block(inputs, 16, "s_block1")
        x = keras.layers.MaxPooling2D(name="s_pool1")(conv_block(x, 16, "s_block2"))  # 14x14
        x = conv_block(x, 32, "s_block3")
        x = keras.layers.MaxPooling2D(name="s_pool2")(conv_block(x, 32, "s_block4"))  # 7x7
        x = keras.layers.GlobalAveragePooling2D()(conv_block(x, 48, "s_block5"))
        student = keras.Model(inputs, keras.layers.Dense(ds.num_classes, name="logits")(x),
                              name="my_student")
        student.save(f"{WORK}/student.keras")  # the architecture, for the command line below

        print(hint_choice.describe_models(teacher, student))
        print(f"teacher {models.count_params(teacher):,} parameters, "
              f"student {models.count_params(student):,}")
        """
    ),
    md(
        r"""
        ## 4. Two hints, then knowledge distillation, with a modern recipe

        `hints=[(hint_layer, guided_layer), ...]` builds one regressor per pair by the paper's
        rule; stage 1 trains the student up to its deepest guided layer on
        `Σ wᵢ · L_HT,ᵢ` and logs each term as `hint_loss/<pair>`. Stage 2 is the paper's KD with
        λ annealed; the optimizer and schedule are plain Keras ones (the command line's
        `--optimizer=sgd --momentum=0.9 --lr_schedule=cosine` build the same).
        """
    ),
    code(
        r"""
        import fitnets_tf
        from fitnets_tf import callbacks

        distiller = fitnets_tf.Distiller(
            teacher, student, hints=[("t_pool1", "s_pool1"), ("t_pool2", "s_pool2")],
            hint_weights=[1.0, 0.5], temperature=3.0, kd_lambda=4.0,
        )
        distiller.compile(optimizer=keras.optimizers.Adam(1e-3), phase="hints")
        distiller.fit(ds.train, validation_data=ds.validation, epochs=HINTS_EPOCHS, verbose=VERBOSE)

        steps = KD_EPOCHS * int(ds.train.cardinality())
        recipe = keras.optimizers.SGD(
            keras.optimizers.schedules.CosineDecay(0.05, decay_steps=steps), momentum=0.9, nesterov=True
        )
        distiller.compile(optimizer=recipe, phase="kd", metrics=["accuracy"])
        annealing = callbacks.LambdaAnnealing(4.0, 1.0, epochs=max(KD_EPOCHS - 1, 1))
        distiller.fit(ds.train, validation_data=ds.validation, epochs=KD_EPOCHS, callbacks=[annealing],
                      verbose=VERBOSE)
        print("student test accuracy:", distiller.evaluate(ds.test, verbose=0, return_dict=True)["accuracy"])
        """
    ),
    code(
        r"""
        import matplotlib.pyplot as plt

        images, labels = next(iter(ds.test))
        predicted = np.argmax(student.predict(images[:8], verbose=0), axis=-1)
        fig, axes = plt.subplots(1, 8, figsize=(14, 2.2))
        for ax, image, label, guess in zip(axes, images, labels, predicted):
            ax.imshow(image[..., 0], cmap="gray")
            ax.set_title(f"{ds.spec.class_names[guess]}\n({ds.spec.class_names[int(label)]})",
                         color="black" if guess == int(label) else "red", fontsize=9)
            ax.axis("off")
        fig.suptitle("the student's answer (the folder it came from)", y=1.1)
        plt.show()
        """
    ),
    md(
        r"""
        ## 5. A subclassed student, by KD

        Knowledge distillation needs only the student's logits, so any `keras.Model` works,
        subclassed ones included. (Hints name layers: given hints, the `Distiller` takes a
        subclassed model as the graph its layers record when its `call` runs once, so they work
        on it too; see the README, *Your own models and hints*.)
        """
    ),
    code(
        r"""
        class TinyStudent(keras.Model):
            def __init__(self, num_classes):
                super().__init__()
                self.features = [keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
                                 keras.layers.MaxPooling2D(),
                                 keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
                                 keras.layers.GlobalAveragePooling2D()]
                self.logits = keras.layers.Dense(num_classes)

            def call(self, x, training=False):
                for layer in self.features:
                    x = layer(x)
                return self.logits(x)

        kd_only = fitnets_tf.Distiller(teacher, TinyStudent(ds.num_classes), temperature=3.0, kd_lambda=4.0)
        kd_only.compile(optimizer=keras.optimizers.Adam(2e-3), phase="kd", metrics=["accuracy"])
        kd_only.fit(ds.train, epochs=KD_EPOCHS, verbose=VERBOSE)
        print("subclassed student test accuracy:",
              kd_only.evaluate(ds.test, verbose=0, return_dict=True)["accuracy"])
        """
    ),
    md(
        r"""
        ## 6. Export for serving: every format in one call

        `"all"` writes SavedModel, `.keras`, ONNX and LiteRT under one folder, each verified by
        reloading it and comparing its outputs. Every artifact takes `"images"` and returns
        `"probabilities"`.
        """
    ),
    code(
        r"""
        from fitnets_tf import export

        written = export.export_student(student, f"{WORK}/export", "all", overwrite=True)
        for fmt, path in written.items():
            print(f"{fmt:12} {path}")
        """
    ),
    md(
        r"""
        ## 7. The same job from the command line

        The options of `python -m fitnets_tf.train` are the fields of
        `fitnets_tf.config.ExperimentConfig`; `experiment.run` is what the command calls. This
        cell runs what the command line below would run (the full run's epochs), into a run
        directory with the resolved flags, checkpoints, logs, the final student and its
        SavedModel:

        ```bash
        python -m fitnets_tf.train --dataset=folder:runs/04_own_model/images \
            --teacher=runs/04_own_model/teacher.keras --student=runs/04_own_model/student.keras \
            --hints=auto --mode=fitnet,scratch --optimizer=sgd --momentum=0.9 \
            --lr_schedule=cosine --learning_rate=0.05 --hints_learning_rate=0.001 \
            --hints_epochs=3 --kd_epochs=8 --batch_size=64 --nomixed_precision \
            --nomeasure_latency --serving_runtimes= --workdir=runs/04_own_model/cli
        ```

        Without a `--flagfile`, the options a command line does not give are the default
        experiment's (`configs/fashion_mnist.flags`): here its Nesterov momentum, weight decay
        1e-2, one warm-up epoch, Adam for stage 1, τ = 4 with τ², λ = 1 and 2-pixel shifts.
        `config.default_for` is that starting point, less what belongs to the default's own
        models; `ExperimentConfig()` alone would start from the paper's recipe instead. Its
        bfloat16 is turned off (fast only on CPUs with AVX-512 BF16 or AMX), and so is timing.
        """
    ),
    code(
        r"""
        from fitnets_tf import config as config_lib
        from fitnets_tf import experiment

        given = dict(
            dataset=f"folder:{WORK}/images", teacher=f"{WORK}/teacher.keras",
            student=f"{WORK}/student.keras", hints=("auto",), modes=("fitnet", "scratch"),
            optimizer="sgd", momentum=0.9, lr_schedule="cosine", learning_rate=0.05,
            hints_learning_rate=1e-3, hints_epochs=HINTS_EPOCHS, kd_epochs=KD_EPOCHS,
            batch_size=64, mixed_precision=False, measure_latency=False, serving_runtimes=(),
        )
        config = config_lib.default_for(set(given)).with_values(**given)
        summary = experiment.run(config, f"{WORK}/cli")
        print(summary["hints"])
        """
    ),
]

NOTEBOOKS = {
    "01_quickstart.ipynb": QUICKSTART,
    "02_custom_models.ipynb": CUSTOM_MODELS,
    "03_tuning.ipynb": TUNING,
    "04_own_model.ipynb": OWN_MODEL,
}


def build(name: str) -> nbformat.NotebookNode:
    """The notebook ``name`` as written to disk: no outputs, stable cell ids."""
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    nb.cells = [nbformat.from_dict(dict(cell)) for cell in NOTEBOOKS[name]]
    for i, cell in enumerate(nb.cells):
        cell.id = f"cell-{i:02d}"
    nbformat.validate(nb)
    return nb


def render(name: str) -> str:
    return nbformat.writes(build(name)) + "\n"


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for name in NOTEBOOKS:
        path = HERE / name
        text = render(name)
        if path.exists() and path.read_text() == text:
            continue
        if check:
            stale.append(name)
        else:
            path.write_text(text)
            print("wrote", path)
    if stale:
        print(f"Out of date: {', '.join(stale)}. Run: python {__file__}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
