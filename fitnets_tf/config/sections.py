"""The four sections of an experiment's configuration, each option declared once.

:class:`DataConfig`, :class:`ModelsConfig` and :class:`ScheduleConfig` hold what the results
depend on (the fingerprint); :class:`RuntimeConfig` how this call runs. A section's
``problems()`` names options that contradict one another though each is valid alone.
"""

from __future__ import annotations

import dataclasses
import functools

from fitnets_tf import hint_flags, latency, losses, pretrained, recipes, standardize
from fitnets_tf.config import lookups
from fitnets_tf.models import sources
from fitnets_tf.options import option

INITS = ("paper", "he_uniform", "glorot_uniform")
REGRESSORS = ("auto", "linear")
CACHE_TEACHER = ("auto", "yes", "no")
FLIPS = ("auto", "on", "off")  # --flip: the dataset's rule, or the user's choice
# The paper's two stages (and the teacher's training before them). A mode's own stages map
# onto these (fitnets_tf.stages.PAPER_STAGE): "stage2" is the KD stage of `fitnet` and `kd`,
# and the labels-only training of `scratch` at the same budget.
RUN_STAGES = ("teacher", "stage1", "stage2")
# The names --stages took before the stages had their paper names; still accepted.
STAGE_ALIASES = {"hints": "stage1", "kd": "stage2"}


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Which images, how many, in which batches."""

    dataset: str = option(
        "fashion_mnist", "Dataset: a built-in name (fashion_mnist, mnist, cifar10, cifar100, "
        "svhn_cropped, synthetic), folder:PATH (one sub-folder of images per class), npz:PATH "
        "(x_train, y_train, x_test, y_test arrays) or a TFDS dataset prepared in --data_dir.",
        check=lookups.dataset_problem,
    )  # fmt: skip
    image_size: tuple[int, ...] | None = option(
        None, "HEIGHT,WIDTH (or one side) the user's images are resized to (default: a "
        "folder's most common size, the arrays', the TFDS dataset's).",
        check=lookups.image_size_problem,
    )  # fmt: skip
    resize_mode: str = option(
        "stretch", "How the user's images of another aspect ratio are resized: stretch (whole, "
        "distorted), crop (the centred box of the target's aspect ratio) or pad (whole, "
        "letterboxed in black).", choices=lookups.resize_modes,
    )  # fmt: skip
    channels: int | None = option(
        None, "Convert the images to 1 (grayscale) or 3 (RGB) channels, for models that take "
        "the other (default: the data's).", choices=(1, 3),
    )  # fmt: skip
    preprocessing: str = option(
        "auto", "Raw pixels [0, 255] to the network input: auto (the dataset's: pixels / 255, "
        "CIFAR's GCN + ZCA), none (raw pixels, for models that rescale their own inputs, e.g. "
        "a first Rescaling(1/255) layer), scale, gcn, gcn_zca, or standardize ((pixels / 255 - "
        "mean) / std per channel, torchvision's Normalize: for a PyTorch teacher exported "
        "without it; with --input_mean and --input_std).", choices=lookups.preprocessings,
    )  # fmt: skip
    input_mean: tuple[float, ...] | None = option(
        None, "--preprocessing=standardize's mean, as torchvision's Normalize(mean, std) takes "
        "it (of pixels / 255, in [0, 1]): one value, or one per channel (ImageNet's: "
        "0.485,0.456,0.406).",
    )  # fmt: skip
    input_std: tuple[float, ...] | None = option(
        None, "--preprocessing=standardize's std, as Normalize takes it: one value, or one per "
        "channel (ImageNet's: 0.229,0.224,0.225).",
    )  # fmt: skip
    batch_size: int = option(128, "Global batch size.", minimum=1)
    augment: bool = option(False, "Random crops of the padded image (+ flips where valid; "
                           "user data: none).")  # fmt: skip
    flip: str = option(
        "auto", "Horizontal flips under --augment: auto (the dataset's rule: built-in ones "
        "whose labels survive a mirror; user data: none), on (e.g. photos in a folder: or "
        "npz:), off.", choices=FLIPS,
    )  # fmt: skip
    crop_padding: int = option(8, "Zero padding before --augment's crop (paper: 8).", minimum=0)
    limit: int | None = option(
        None, "Use only the first N examples of each split (smoke runs).", minimum=1
    )
    validation_size: int | None = option(
        None, "Examples held out of train (default: paper's; user data: 10%).", minimum=0
    )
    retrain_on_all: bool = option(False, "Train on train+validation (the paper's last run).")

    def __post_init__(self):
        # One spelling in the fingerprint and flags.txt: "--image_size=28" is 28,28.
        size = (self.image_size,) if isinstance(self.image_size, int) else self.image_size
        if isinstance(size, (tuple, list)) and len(size) == 1:
            object.__setattr__(self, "image_size", tuple(size) * 2)
        for name in ("input_mean", "input_std"):  # and --input_mean=0.5 is (0.5,)
            if isinstance(value := getattr(self, name), (int, float)):
                object.__setattr__(self, name, (float(value),))

    def problems(self) -> list[str]:
        """Options that contradict one another (each valid alone)."""
        from fitnets_tf import data

        # The images' channels where known before any is read: a folder's are checked when
        # it is (data.load).
        built_in = data.DATASETS.get(self.dataset)
        channels = self.channels or (built_in.input_shape[-1] if built_in else None)
        return standardize.standardize_problems(self.preprocessing, self.input_mean,
                                                self.input_std, channels, flags=True)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class ModelsConfig:
    """The teacher, the student, the hint/guided pair and the regressor between them."""

    teacher: str = option(
        "mnist_teacher", "Teacher: a registered architecture, a trained teacher's .keras file "
        "(as --teacher_path), or keras.applications.NAME (e.g. MobileNetV3Small).",
        check=functools.partial(sources.check, role="teacher"),
    )  # fmt: skip
    student: str = option(
        "mnist_fitnet", "Student: a registered architecture, a .keras file (its architecture: "
        "weights re-initialised from --seed), or keras.applications.NAME.",
        check=functools.partial(sources.check, role="student"),
    )  # fmt: skip
    hint_layer: str | None = option(None, "Teacher layer giving the hint (default: paper's).")
    guided_layer: str | None = option(None, "Student layer being guided (default: paper's).")
    hints: tuple[str, ...] | None = option(
        None, "Instead of --hint_layer/--guided_layer: 'teacher_layer:student_layer' pairs, or "
        "'auto' (the paper's middle layers; --list_layers shows the choice). An ONNX or SavedModel "
        "teacher's hint is a tensor of its graph (onnx::Relu_23:conv2: a pair splits at its one "
        "':' not part of '::'); 'auto' chooses among the graph's tensors ending its blocks.",
        check=hint_flags.hints_problem,
    )  # fmt: skip
    hint_weights: tuple[float, ...] | None = option(
        None, "Weight of each hint pair's loss in stage 1 (default: 1 each).",
        check=hint_flags.weights_problem,
    )  # fmt: skip
    teacher_path: str | None = option(
        None, "Trained teacher: a .keras file, run directory, SavedModel folder or "
        ".onnx file, or pretrained:NAME (one ships: pretrained:fashion_mnist_wide_cnn).",
        check=lambda path: pretrained.name_problem(path) or sources.pytorch_file_problem(path),
    )  # fmt: skip
    init: str = option(
        "paper", "Kernel init: the paper's U(-0.005, 0.005), or He / Glorot uniform.",
        choices=INITS,
    )  # fmt: skip
    max_norm: bool = option(True, "Max-norm constraints of the paper's code.")
    maxout_ties: str = option(
        "share", "The gradient of the maxout layers the run builds (the paper's nets', a student "
        "file's) at tied pieces: share (equally, as reduce_max) or one (all to one piece, as a "
        "max pool: a faster train step on CPU).",
        choices=lookups.maxout_ties,
    )  # fmt: skip
    teacher_dropout: float | None = option(
        None, "Teacher's dropout after each layer (paper: 0.5).", minimum=0, maximum=0.99
    )
    teacher_input_dropout: float | None = option(
        None, "Teacher's input dropout (paper: 0.2).", minimum=0, maximum=0.99
    )
    regressor: str = option(
        "auto", "auto: the paper's (hint's non-linearity); linear: none.", choices=REGRESSORS
    )
    regressor_max_norm: float = option(
        0.0, "Largest L2 norm of each hint regressor kernel, restored after every update as "
        "--max_norm does the paper's nets' (each output channel's convolution kernel; a dense "
        "regressor's columns). The paper's code: 0.9. 0: no bound.", minimum=0,
    )  # fmt: skip

    def kernel_initializer(self) -> str | None:
        """The ``kernel_initializer`` argument of ``models.build`` (None: the paper's)."""
        return None if self.init == "paper" else self.init

    def regressor_bound(self) -> float | None:
        """``regressor_max_norm`` as the library takes it: None for no bound."""
        return self.regressor_max_norm or None

    def trained_teacher(self) -> str | None:
        """``teacher_path``, or a ``.keras`` ``teacher`` (the same); None: one to train."""
        return self.teacher_path or (self.teacher if sources.is_keras_file(self.teacher) else None)

    def builds_a_maxout_net(self) -> bool:
        """Whether a model the run builds is one of the paper's maxout nets."""
        from fitnets_tf import models

        built = [self.student] + ([] if self.trained_teacher() else [self.teacher])
        return any(name in models.ARCHITECTURES for name in built)

    def problems(self) -> list[str]:
        """Options that contradict one another (each valid alone)."""
        found = []
        if self.hints and (self.hint_layer or self.guided_layer):
            found.append("give --hints or --hint_layer/--guided_layer (one pair), not both")
        pairs = 1 if not self.hints or self.hints == ("auto",) else len(self.hints)
        if self.hint_weights is not None and len(self.hint_weights) != pairs:
            found.append(f"--hint_weights needs one weight per hint pair: {pairs} pair(s), "
                         f"{len(self.hint_weights)} weight(s)")  # fmt: skip
        # A student file may hold maxout layers: the run checks when it loads it.
        maybe = self.builds_a_maxout_net() or sources.is_keras_file(self.student)
        if self.maxout_ties != lookups.maxout_ties()[0] and not maybe:
            found.append(f"--maxout_ties={self.maxout_ties} concerns the paper's maxout nets, and "
                         f"neither --teacher={self.teacher} nor --student={self.student} "
                         "is one built here: drop --maxout_ties")  # fmt: skip
        if self.teacher_path and sources.is_keras_file(self.teacher):
            found.append(f"--teacher={self.teacher} is a trained teacher already: drop "
                         "--teacher_path (or name an architecture with --teacher)")  # fmt: skip
        return found


@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
    """Modes, epochs, optimizer and the KD curriculum (defaults: the paper's CIFAR-10 values)."""

    modes: tuple[str, ...] = option(
        ("fitnet",), "Student training modes, in order; the first gives the final student.",
        flag="mode", choices=lookups.modes,
    )  # fmt: skip
    teacher_epochs: int = option(10, "Teacher epochs.", minimum=0)
    hints_epochs: int = option(5, "Stage-1 epochs.", minimum=0)
    kd_epochs: int = option(10, "Stage-2 (and scratch) epochs.", minimum=0)
    early_stopping_patience: int = option(
        0, "Stop a stage after N epochs without validation improvement and keep the best "
        "weights (paper: 100). 0: off.", minimum=0,
    )  # fmt: skip
    # The training recipe (fitnets_tf.recipes): one optimizer for every stage; the learning
    # rate and schedule are stage 2's, and stage 1's and the teacher's unless given.
    optimizer: str = option("rmsprop", "Optimizer (paper: rmsprop).", choices=recipes.OPTIMIZERS)
    learning_rate: float = option(5e-3, "Stage-2 learning rate.", exclusive_minimum=0)
    rho: float = option(
        recipes.RHO, "RMSProp decay, in [0, 1) (paper's code: 0.9).", check=recipes.rho_problem
    )
    teacher_learning_rate: float | None = option(
        None, "Teacher's learning rate. The flag has a default of its own (below), not "
        "--learning_rate's; in Python, None is learning_rate.", exclusive_minimum=0,
    )  # fmt: skip
    hints_learning_rate: float | None = option(
        None, "Stage-1 learning rate (None: --learning_rate).", exclusive_minimum=0
    )
    hints_optimizer: str | None = option(
        None, "Stage-1 optimizer (None: --optimizer). Another one runs with Keras' defaults: "
        "no momentum, weight decay or warm-up.", choices=recipes.OPTIMIZERS,
    )  # fmt: skip
    momentum: float = option(0.0, "Momentum of sgd and rmsprop.", check=recipes.momentum_problem)
    nesterov: bool = option(False, "Nesterov momentum (sgd).")
    weight_decay: float = option(
        0.0, "Keras' decoupled weight decay, w -= lr * weight_decay * w each step (not biases, "
        "BatchNorm): PyTorch SGD's L2 λ with momentum m is about λ / (1 - m) here.", minimum=0,
    )  # fmt: skip
    lr_schedule: str = option(
        "constant", "Stage-2 learning-rate schedule: constant, cosine (to 0), or step:E1,E2,... "
        "(x --lr_decay from those epochs of the stage on).", check=recipes.schedule_problem,
    )  # fmt: skip
    teacher_lr_schedule: str | None = option(
        None, "Teacher's schedule (None: --lr_schedule).", check=recipes.schedule_problem
    )
    hints_lr_schedule: str | None = option(
        None, "Stage-1 schedule (None: --lr_schedule).", check=recipes.schedule_problem
    )
    lr_decay: float = option(
        recipes.LR_DECAY, "Factor of each step of step:E1,...", exclusive_minimum=0, maximum=1
    )
    warmup_epochs: int = option(0, "Linear warm-up from 0, in each stage's epochs.", minimum=0)
    label_smoothing: float = option(
        0.0, "ε of the students' cross-entropy on the labels (stage 2's, scratch's, "
        "guided_labels'): target (1 - ε)·y + ε/K. Not the soft targets' or the hints' loss, "
        "not the teacher's. 0: none.", check=losses.label_smoothing_problem,
    )  # fmt: skip
    ema_momentum: float = option(
        0.0, "Keras' EMA of the weights in every stage (use_ema), in [0, 1): a stage ends "
        "with its weights replaced by their average (e.g. 0.999). 0: off.",
        check=recipes.ema_problem,
    )  # fmt: skip
    global_clipnorm: float = option(
        0.0, "Scale every stage's gradients, all variables together, down to this norm when "
        "above it (Keras' global_clipnorm, as PyTorch's clip_grad_norm_). 0: off.", minimum=0,
    )  # fmt: skip
    epsilon: float | None = option(
        None, "ε of rmsprop, adam, adamw (None: Keras' 1e-7). RMSProp divides by sqrt(v + ε); "
        "the paper's code floors sqrt(v) at 1e-5, which 1e-10 approaches.", exclusive_minimum=0,
    )  # fmt: skip
    conv_lr_scale: float = option(
        1.0, "Convolutions' kernels and biases train at this multiple of each stage's learning "
        "rate (paper's code: 0.05 for its students; not the regressor). 1: one rate.",
        exclusive_minimum=0,
    )  # fmt: skip
    temperature: float = option(3.0, "τ of the soft targets (> 0).", exclusive_minimum=0)
    kd_lambda: float = option(4.0, "λ at the start of stage 2 (>= 0).", minimum=0)
    lambda_end: float = option(1.0, "λ at the end of its decay.", minimum=0)
    lambda_hold: int = option(0, "Epochs at --kd_lambda before decaying.", minimum=0)
    lambda_epochs: int | None = option(
        None, "Decay length in epochs (default: rest of stage 2).", minimum=1
    )
    tau_squared: bool = option(False, "Multiply the soft term by τ² (not the paper).")
    kd_targets: str = option(
        "exact", "Teacher outputs stage 2 learns from. exact: of the very image the student "
        "sees. uncropped: under --augment, the logits of each uncropped training image and "
        "of its mirror image, computed once (each view gets those of its flip): a KD step "
        "then costs a student step.", choices=("exact", "uncropped"),
    )  # fmt: skip
    # Bounded below 2**31: the run derives seeds from it (seed + 1, + 2, + a layer's index),
    # and TensorFlow, NumPy and Keras all take a 32-bit one.
    seed: int = option(0, "Seed of weights, shuffling and augmentation.", minimum=0,
                       maximum=2**31 - 1)  # fmt: skip
    mixed_precision: bool = option(
        False, "Mixed precision: float16 on a GPU, bfloat16 on a CPU (fast with AVX-512 BF16/AMX)."
    )

    def problems(self, trains_teacher: bool = True) -> list[str]:
        """Recipe options that contradict one another (each valid alone)."""
        from fitnets_tf import stages

        stage1 = any(stages.PAPER_STAGE[s] == "stage1" for m in self.modes
                     for s in stages.STAGES_OF_MODE.get(m, ()))  # fmt: skip
        own_optimizer = self.hints_optimizer not in (None, self.optimizer)  # warms up not
        used = {"teacher_epochs": trains_teacher, "hints_epochs": stage1 and not own_optimizer,
                "kd_epochs": True}  # fmt: skip
        epochs = {flag: getattr(self, flag) for flag, trained in used.items() if trained}
        own = recipes.own_optimizer_problem(self.hints_optimizer, self.optimizer) if stage1 else None
        schedules = [self.lr_schedule]
        schedules += [self.teacher_lr_schedule or self.lr_schedule] if trains_teacher else []
        schedules += [self.hints_lr_schedule or self.lr_schedule] if stage1 else []
        return recipes.combination_problems(
            self.optimizer, momentum=self.momentum, nesterov=self.nesterov,
            weight_decay=self.weight_decay, rho=self.rho, epsilon=self.epsilon,
        ) + recipes.warmup_problems(self.warmup_epochs, epochs) + ([own] if own else []) + (
            recipes.unused_lr_decay_problems(self.lr_decay, schedules)
        ) + recipes.ema_stopping_problems(self.ema_momentum, self.early_stopping_patience)


@dataclasses.dataclass(frozen=True)
class RuntimeConfig:
    """How this call runs: none of it changes the numbers a finished run reports."""

    data_dir: str | None = option(None, "Prepared TFDS data directory (default: TFDS's).")
    stages: tuple[str, ...] = option(
        RUN_STAGES, "Stages to run now: teacher, stage1 (hints; guided_labels), stage2 (kd; "
        "scratch). 'hints' and 'kd' are accepted for stage1 and stage2. Without 'teacher', "
        "--teacher_path or the workdir's teacher is used.",
        choices=RUN_STAGES + tuple(STAGE_ALIASES), noun="stage",
    )  # fmt: skip
    custom_modules: tuple[str, ...] = option(
        (), "Python modules to import before any model file is loaded: those defining (with "
        "@keras.saving.register_keras_serializable) the custom layers or models of the "
        "--teacher/--student/--teacher_path files, on PYTHONPATH or installed (fitnets-export "
        "imports the run's own).", check=lookups.custom_modules_problem,
    )  # fmt: skip
    strategy: str = option("default", "tf.distribute strategy.", choices=lookups.strategies)
    cluster_timeout: float = option(
        600.0, "Seconds a --strategy=multi_worker worker waits for every worker TF_CONFIG "
        "lists to join the cluster, then stops with an error saying so (0: wait without end, "
        "TensorFlow's own behaviour). Raise it where hosts start far apart.", minimum=0,
    )  # fmt: skip
    jit_compile: bool = option(False, "XLA-compile the train step (slower on CPU).")
    deterministic: bool = option(False, "TF op determinism (bit-identical reruns on CPU).")
    measure_latency: bool = option(True, "Time CPU inference of every model for the summary.")
    serving_runtimes: tuple[str, ...] = option(
        (), "Also time every model exported to these runtimes (litert, onnxruntime) for the "
        "summary: what a student is deployed with.", choices=latency.SERVING_RUNTIMES,
        noun="runtime",
    )  # fmt: skip
    cache_teacher: str = option(
        "auto", "Run the frozen teacher once over train/validation and reuse its logits (and "
        "hint) every epoch. auto: when exact (not --augment, or --kd_targets=uncropped); yes "
        "with --augment needs --kd_targets=uncropped.",
        choices=CACHE_TEACHER,
    )  # fmt: skip
    cache_memory_gb: float | None = option(
        None, "GiB of memory the cached teacher outputs may take; above, they go to the run's "
        "teacher_cache/ in checksummed shards, read back in the same order with the same "
        "numbers (default: a quarter of physical memory).", exclusive_minimum=0,
    )  # fmt: skip
    checkpoint_every: int = option(
        0, "Also checkpoint every N steps within an epoch (0: at epoch ends only); a run "
        "killed mid-epoch resumes at its last such step. SIGTERM/SIGINT always checkpoint "
        "the step under way and exit with status 75: the same command resumes.", minimum=0,
    )  # fmt: skip
    checkpoint_minutes: float = option(
        0.0, "Also checkpoint within an epoch once this many minutes have passed since the "
        "last checkpoint (0: never).", minimum=0,
    )  # fmt: skip

    def __post_init__(self):
        # One vocabulary from here on: the old names become the paper's.
        object.__setattr__(self, "stages", tuple(STAGE_ALIASES.get(s, s) for s in self.stages))

    def run_stages(self) -> tuple[str, ...]:
        """The stages to run now, in the paper's names."""
        return self.stages
