"""bench/op_profile.py: how it attributes the profiler's ops to op types and layers."""

from __future__ import annotations

import keras
import pytest

from bench import op_profile


def test_ops_summed_per_type():
    ops = {"a/conv1/BiasAdd:_MklNativeFusedConv2D": 2.0,
           "b/conv2/BiasAdd:_MklNativeFusedConv2D": 1.0, "a/Max:Max": 0.5}  # fmt: skip
    assert op_profile.by_type(ops) == {"_MklNativeFusedConv2D": 3.0, "Max": 0.5}


def test_convolutions_attributed_to_their_layer_with_its_rate():
    inputs = keras.Input((6, 6, 2))
    hidden = keras.layers.Conv2D(4, 3, name="conv1")(inputs)  # 4 x 4 positions
    outputs = keras.layers.Conv2D(4, 3, name="conv10")(hidden)  # a name conv1 begins
    model = keras.Model(inputs, outputs)
    ops = {
        "Call/net_1/conv1_1/BiasAdd:_MklNativeFusedConv2D": 0.5,
        "Call/gradient_tape/net_1/conv1_1/convolution/Conv2DBackpropFilter:Filter": 1.0,
        "Call/net_1/conv10_1/BiasAdd:_MklNativeFusedConv2D": 0.25,
        "Call/net_1/conv1_1/Relu:Relu": 9.0,  # not a convolution
    }
    found = op_profile.convolutions_by_layer(model, ops, batch=10)
    # conv1: 3 * 3 * 2 * 4 weights x 16 positions x 10 images = 11520 multiplications a pass.
    assert found["conv1"]["ms"] == 1.5 and found["conv1"]["passes"] == 2
    assert found["conv1"]["gflops"] == pytest.approx(2 * 11520 / 1.5 / 1e6)
    assert found["conv10"] == {"ms": 0.25, "passes": 1,
                               "gflops": pytest.approx(3 * 3 * 4 * 4 * 4 * 10 / 0.25 / 1e6)}  # fmt: skip
