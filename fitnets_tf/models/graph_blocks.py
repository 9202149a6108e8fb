"""The tensors ending a graph's blocks: the paper's "layers" found in a graph of ops (an ONNX
file's, a SavedModel's), as :func:`fitnets_tf.hint_choice.feature_layers` finds them among a
Keras model's layers.

A block starts at a node with weights (a convolution or a matrix product) and ends, before the
next one, at the last 4-D activation that every path from the images passes through (after a
residual sum, never inside a block). Each kind of graph says which of its nodes hold weights and
which never end a block (:class:`Node`); the rule is the same for all.
"""

from __future__ import annotations

import dataclasses

WEIGHTED, SKIPPED = "weighted", "skipped"
DEPTHWISE, POINTWISE, LAYOUT, BIAS = "depthwise", "pointwise", "layout", "bias"
_STARTS = {WEIGHTED, DEPTHWISE, POINTWISE}
_NEVER_ENDS = {SKIPPED, LAYOUT}
_LINKS = {LAYOUT, BIAS}


@dataclasses.dataclass(frozen=True)
class Node:
    """One op of a graph: the tensors it reads and makes, by name, and its part in a block:

    - :data:`WEIGHTED`: a convolution or a matrix product; it starts a block when one of its
      operands is a weight (not computed from the images: an attention's product of two
      activations holds none).
    - :data:`DEPTHWISE`, :data:`POINTWISE`: a depthwise convolution, a 1×1 one; weighted, but
      a pointwise one reading a depthwise one's map through :data:`LAYOUT` and :data:`BIAS`
      nodes only continues its block: the two are one separable convolution (Keras'
      ``SeparableConv2D`` is one layer), whose depthwise half, with no activation, is half a
      linear map.
    - :data:`SKIPPED`: it pools the map (never a block's output); :data:`LAYOUT`: a map passes
      through it unchanged or re-laid out (never a block's output either).
    - :data:`BIAS`: it adds a bias (one operand computed from the images); ``""``: anything
      else.
    """

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    role: str = ""


def block_outputs(nodes: list[Node], images: set[str], maps: dict) -> list:
    """The values of ``maps`` (tensor name -> a feature map's description) that end the blocks
    of the graph of ``nodes`` (in a topological order), input to output. ``images``: the names
    of the tensors holding the images; ``maps`` should hold only maps larger than 1×1 (a 1×1
    map has no spatial information to hint: Keras' global pooling kept as a map).

    Only what is computed from the images counts: weights, constants and what is computed from
    them alone (a BatchNormalization's scale) are no part of a path. What precedes the first
    weighted node (the images scaled, normalised, padded) computes no features and is left out,
    as Keras' preprocessing layers are.
    """
    nodes = _from_images(nodes, images)
    starts = _starts(nodes)
    cuts = _cuts(nodes, images)
    found, last, started = [], None, False
    for node, start, cut in zip(nodes, starts, cuts, strict=True):
        if start:
            if last is not None:
                found.append(last)
            last, started = None, True
        if not started or node.role in _NEVER_ENDS or not cut:  # not cut: a path goes around
            continue
        last = next((maps[t] for t in reversed(node.outputs) if t in maps), last)
    if last is not None:
        found.append(last)
    return found


def spatial(shape) -> bool:
    """Whether a feature map of ``shape`` ``(H, W, C)`` can be a block's output: a 1×1 map
    (global pooling with its axes kept, a classifier written as a 1×1 conv on it) has no
    spatial information to hint; it is a pooled vector, for a Keras model's layers
    (:func:`fitnets_tf.hint_choice.feature_layers`) as for a graph's tensors."""
    return tuple(shape[:2]) != (1, 1)


def _from_images(nodes: list[Node], images: set[str]) -> list[Node]:
    """The nodes that read a tensor computed from the images, with only such inputs; a
    weighted one none of whose operands is a weight is weighted no more."""
    made, kept = set(images), []
    for node in nodes:
        inputs = tuple(t for t in node.inputs if t in made)
        if inputs:
            weightless = node.role in _STARTS and len(inputs) == len([t for t in node.inputs if t])
            kept.append(dataclasses.replace(node, inputs=inputs,
                                            role="" if weightless else node.role))  # fmt: skip
            made.update(node.outputs)
    return kept


def _starts(nodes: list[Node]) -> list[bool]:
    """For each node, whether it starts a block: a weighted one, but for the pointwise half of
    a separable convolution (:class:`Node`)."""
    made_by = {t: node for node in nodes for t in node.outputs}
    starts = []
    for node in nodes:
        source = None
        if node.role == POINTWISE and len(node.inputs) == 1:
            source = made_by.get(node.inputs[0])
            while source is not None and source.role in _LINKS and len(source.inputs) == 1:
                source = made_by.get(source.inputs[0])
        starts.append(node.role in _STARTS and (source is None or source.role != DEPTHWISE))
    return starts


def _cuts(nodes: list[Node], images: set[str]) -> list[bool]:
    """For each node, whether no edge of the graph passes over it: every path from the images
    goes through it. The images count as made before the first node (a path from them around a
    node leaves it inside a block)."""
    made_by = dict.fromkeys(images, -1) | {t: i for i, node in enumerate(nodes)
                                           for t in node.outputs}  # fmt: skip
    over = [0] * (len(nodes) + 1)  # edges passing over each node, as differences
    for j, node in enumerate(nodes):
        for i in {made_by[t] for t in node.inputs}:
            if j - i > 1:
                over[i + 1] += 1
                over[j] -= 1
    cuts, passing = [], 0
    for change in over[:-1]:
        passing += change
        cuts.append(passing == 0)
    return cuts
