"""Architectures by name: the paper's teachers and FitNets, and the distillation benchmark's zoo.

Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015 (arXiv:1412.6550).

The modules: :mod:`~fitnets_tf.models.specs` (a maxout net as data), :mod:`~fitnets_tf.models.paper`
(the paper's nets), :mod:`~fitnets_tf.models.maxout_net` (builds one),
:mod:`~fitnets_tf.models.cifar_resnet` and :mod:`~fitnets_tf.models.cifar_vgg` (the CRD /
RepDistiller CIFAR-100 benchmark's ResNets, WRNs and VGGs), :mod:`~fitnets_tf.models.registry`
(:func:`build` by name), :mod:`~fitnets_tf.models.counting` (parameters, and Table 5's
multiplications), :mod:`~fitnets_tf.models.sources` (a name, a user's ``.keras`` file or a
``keras.applications`` constructor: what ``--teacher`` and ``--student`` take) and
:mod:`~fitnets_tf.models.logits` (a final softmax left out, and the checks of a teacher and a
student's ends), :mod:`~fitnets_tf.models.traced` (a subclassed model as the graph of its
own layers, for hints), :mod:`~fitnets_tf.models.saved_model` and
:mod:`~fitnets_tf.models.onnx_model` (a trained teacher given as a SavedModel folder or an ONNX
file, run as a function, whose hints are tensors of its graph:
:mod:`~fitnets_tf.models.saved_model_hints`, :mod:`~fitnets_tf.models.onnx_hints`, each in its
layout, :mod:`~fitnets_tf.models.onnx_layouts`).

Every model is Functional and outputs logits, with stable layer names for hints: the paper's
``conv{i}`` / ``pool{i}`` / ``fc`` / ``logits`` (see :mod:`~fitnets_tf.models.maxout_net`), the
zoo's ``stage{k}`` stage outputs.
"""

from fitnets_tf.models.counting import count_multiplications, count_params, uncounted_layers
from fitnets_tf.models.paper import ARCHITECTURES, DEPTH_NETS
from fitnets_tf.models.registry import (
    ZOO,
    PaperPair,
    build,
    get_spec,
    guided_layer_name,
    hint_layer_name,
    names,
    paper_layer_name,
    paper_pair,
)
from fitnets_tf.models.sources import at_input_shape
from fitnets_tf.models.specs import PAPER_INIT_RANGE, ArchSpec, ConvSpec, Pool

__all__ = [
    "ARCHITECTURES",
    "DEPTH_NETS",
    "PAPER_INIT_RANGE",
    "ZOO",
    "ArchSpec",
    "ConvSpec",
    "PaperPair",
    "Pool",
    "at_input_shape",
    "build",
    "count_multiplications",
    "count_params",
    "get_spec",
    "guided_layer_name",
    "hint_layer_name",
    "names",
    "paper_layer_name",
    "paper_pair",
    "uncounted_layers",
]
