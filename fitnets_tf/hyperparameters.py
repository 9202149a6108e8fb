"""What the paper fixes for every stage: :class:`Hyperparameters`, a training recipe.

One frozen dataclass builds each stage's optimizer (:mod:`fitnets_tf.recipes`), the stage-1
variant of the recipe and the λ annealing of stage 2; :mod:`fitnets_tf.stages` trains with it.
"""

from __future__ import annotations

import dataclasses

import keras

from fitnets_tf import layer_rates, recipes
from fitnets_tf.callbacks import LambdaAnnealing


@dataclasses.dataclass(frozen=True)
class Hyperparameters:
    """What the paper fixes for both stages (defaults: the paper's CIFAR-10 values).

    The training recipe (optimizer, learning rate, schedule: :mod:`fitnets_tf.recipes`) is
    stage 2's; stage 1 (:meth:`stage_one`) may have its own learning rate and schedule.

    Attributes:
        learning_rate: the learning rate of stage 2 (paper: RMSProp, 0.005; MNIST 0.0005),
            and of stage 1 unless ``hints_learning_rate``.
        rho: RMSProp decay (paper's code: 0.9).
        temperature: τ (paper: 3).
        lambda_start: λ at the start of stage 2 (paper: 4).
        lambda_end: λ at the end of its decay (paper: 1).
        lambda_hold: epochs at ``lambda_start`` before the decay (paper's code: 5).
        lambda_epochs: length of the decay in epochs; ``None``: the rest of stage 2, so that
            its last epoch runs at ``lambda_end``.
        tau_squared: multiply the soft term by τ² (not in the paper).
        regressor: ``"auto"`` (paper) or ``"linear"``.
        regressor_max_norm: bound of each regressor kernel's L2 norm after every update
            (paper's code: 0.9); None: none.
        optimizer_name: ``rmsprop`` (paper), ``sgd``, ``adam`` or ``adamw``.
        momentum: of ``sgd`` and ``rmsprop``, in [0, 1). nesterov: ``sgd``'s Nesterov momentum.
        weight_decay: Keras' decoupled weight decay (``w -= lr·weight_decay·w`` every step;
            not biases or BatchNorm γ/β); 0: none.
        lr_schedule: ``constant``, ``cosine`` or ``step:E1,E2,...`` (epochs of the stage).
        lr_decay: factor of each step of a ``step:`` schedule.
        warmup_epochs: linear warm-up from 0 over each stage's first epochs.
        hints_learning_rate, hints_lr_schedule: stage 1's, when not stage 2's (None).
        hints_optimizer: stage 1's optimizer when not stage 2's (None). Fitting the regressor
            is a regression whose loss starts in the thousands (the paper's ½·sum of squares):
            Adam's step size does not grow with it, an SGD recipe tuned for cross-entropy's
            does. Another optimizer than stage 2's runs with Keras' defaults, no momentum,
            weight decay or warm-up: stage 1 only positions the guided layer for stage 2.
        label_smoothing: ε of the cross-entropy on the labels the student's stages train on
            (stage 2's ``H(y, P_S)``, ``scratch``, ``guided_labels``): the target is
            ``(1 − ε)·y + ε/K``. Never the soft targets' or the hint's loss. 0: none.
        ema_momentum: > 0: every stage's optimizer keeps an exponential moving average of the
            weights it trains (Keras' ``use_ema``), and the stage ends with the weights
            replaced by it. 0: none.
        global_clipnorm: > 0: every stage's gradients, all variables together, are scaled
            down to this norm when above it (Keras' ``global_clipnorm``). 0: none.
        epsilon: ε of ``rmsprop``, ``adam`` and ``adamw`` (None: Keras' 1e-7). RMSProp
            divides by ``sqrt(v + ε)``; the paper's code floors ``sqrt(v)`` at 1e-5, which
            ε = 1e-10 approaches.
        conv_lr_scale: the convolutions' kernels and biases train at this multiple of the
            learning rate in every stage (:mod:`fitnets_tf.layer_rates`; the paper's code:
            0.05 for its students; never the regressor). 1: one rate for all.
    """

    learning_rate: float = 5e-3
    rho: float = 0.9
    temperature: float = 3.0
    lambda_start: float = 4.0
    lambda_end: float = 1.0
    lambda_hold: int = 0
    lambda_epochs: int | None = None
    tau_squared: bool = False
    regressor: str = "auto"
    regressor_max_norm: float | None = None
    optimizer_name: str = "rmsprop"
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    lr_schedule: str = "constant"
    lr_decay: float = 0.1
    warmup_epochs: int = 0
    hints_learning_rate: float | None = None
    hints_lr_schedule: str | None = None
    hints_optimizer: str | None = None
    label_smoothing: float = 0.0
    ema_momentum: float = 0.0
    global_clipnorm: float = 0.0
    epsilon: float | None = None
    conv_lr_scale: float = 1.0

    def optimizer(
        self, epochs: int | None = None, steps_per_epoch: int | None = None, model=None
    ) -> keras.optimizers.Optimizer:
        """A fresh optimizer for a stage of ``epochs`` epochs of ``steps_per_epoch`` steps,
        training ``model`` (whose convolutions ``conv_lr_scale`` concerns).

        Every stage starts with new optimizer state, as in the paper. A schedule is a function
        of the optimizer's step (``iterations``, saved with its state, so a resumed stage
        continues it): it needs both numbers. A constant rate without warm-up (the paper's
        RMSProp, ``optimizer()``) needs neither.

        Raises:
            ValueError: ``conv_lr_scale`` is not 1 and ``model`` has no convolution layer.
        """
        rate = recipes.learning_rate(
            self.learning_rate, self.lr_schedule, epochs=epochs,
            steps_per_epoch=steps_per_epoch, warmup_epochs=self.warmup_epochs,
            decay=self.lr_decay,
        )  # fmt: skip
        return recipes.build_optimizer(
            self.optimizer_name, rate, rho=self.rho, momentum=self.momentum,
            nesterov=self.nesterov, weight_decay=self.weight_decay,
            ema_momentum=self.ema_momentum, global_clipnorm=self.global_clipnorm,
            epsilon=self.epsilon, scaled_variables=self._scaled_variables(model),
            rate_scale=self.conv_lr_scale,
        )  # fmt: skip

    def _scaled_variables(self, model) -> list:
        if self.conv_lr_scale == 1:
            return []
        found = layer_rates.convolution_variables(model) if model is not None else []
        if not found:
            name = f"model {model.name!r}" if model is not None else "no model (model=None)"
            raise ValueError(f"conv_lr_scale={self.conv_lr_scale} scales the learning rate of "
                             f"the convolution layers, and {name} has none: give the model "
                             "a stage trains, or leave conv_lr_scale at 1.")  # fmt: skip
        return found

    def with_rate(
        self, learning_rate: float | None = None, lr_schedule: str | None = None
    ) -> Hyperparameters:
        """A copy with a stage's own learning rate and schedule, each where not None."""
        return dataclasses.replace(
            self, learning_rate=self.learning_rate if learning_rate is None else learning_rate,
            lr_schedule=lr_schedule or self.lr_schedule,
        )  # fmt: skip

    def stage_one(self) -> Hyperparameters:
        """These hyperparameters with stage 1's optimizer, learning rate and schedule, where given."""
        own = self.with_rate(self.hints_learning_rate, self.hints_lr_schedule)
        if self.hints_optimizer in (None, self.optimizer_name):
            return own
        problem = recipes.own_optimizer_problem(self.hints_optimizer, self.optimizer_name)
        if problem:
            raise ValueError(f"{problem}. Received: hints_optimizer={self.hints_optimizer!r}, "
                             f"optimizer_name={self.optimizer_name!r}")  # fmt: skip
        return dataclasses.replace(own, optimizer_name=self.hints_optimizer, momentum=0.0,
                                   nesterov=False, weight_decay=0.0, warmup_epochs=0,
                                   epsilon=None)  # fmt: skip

    def annealing(self, kd_epochs: int) -> LambdaAnnealing:
        decay = self.lambda_epochs or max(kd_epochs - 1 - self.lambda_hold, 1)
        return LambdaAnnealing(
            self.lambda_start, self.lambda_end, epochs=decay, hold=self.lambda_hold
        )
