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


@dataclasses.dataclass(frozen=True)
class Node:
    """One op of a graph: the tensors it reads and makes, by name, and its part in a block:
    :data:`WEIGHTED` (it starts one), :data:`SKIPPED` (a map passes through it unchanged or
    only re-laid out, or it pools the map into a vector: never a block's output), or ``""``."""

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    role: str = ""


def block_outputs(nodes: list[Node], images: set[str], maps: dict) -> list:
    """The values of ``maps`` (tensor name -> a feature map's description) that end the blocks
    of the graph of ``nodes`` (in a topological order), input to output. ``images``: the names
    of the tensors holding the images.

    Only what is computed from the images counts: weights, constants and what is computed from
    them alone (a BatchNormalization's scale) are no part of a path. What precedes the first
    weighted node (the images scaled, normalised, padded) computes no features and is left out,
    as Keras' preprocessing layers are.
    """
    nodes = _from_images(nodes, images)
    cuts = _cuts(nodes, images)
    found, last, started = [], None, False
    for node, cut in zip(nodes, cuts, strict=True):
        if node.role == WEIGHTED:
            if last is not None:
                found.append(last)
            last, started = None, True
        if not started or node.role == SKIPPED or not cut:  # not cut: a path goes around it
            continue
        last = next((maps[t] for t in reversed(node.outputs) if t in maps), last)
    if last is not None:
        found.append(last)
    return found


def _from_images(nodes: list[Node], images: set[str]) -> list[Node]:
    """The nodes that read a tensor computed from the images, with only such inputs."""
    made, kept = set(images), []
    for node in nodes:
        inputs = tuple(t for t in node.inputs if t in made)
        if inputs:
            kept.append(dataclasses.replace(node, inputs=inputs))
            made.update(node.outputs)
    return kept


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
