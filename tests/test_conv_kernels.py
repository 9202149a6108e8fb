"""bench/conv_kernels.py: reading oneDNN's verbose lines (the timing itself is a benchmark)."""

import pytest

from bench import conv_kernels

# As oneDNN 3 prints them (ONEDNN_VERBOSE=1), shortened: the formats of TensorFlow's second
# convolution, a weight reorder before it, and lines that are not executions.
VERBOSE = """\
onednn_verbose,v1,info,oneDNN v3.7.1 (commit 8d263e6)
onednn_verbose,v1,primitive,info,template:operation,engine,primitive,implementation,prop_kind
onednn_verbose,v1,primitive,exec,cpu,reorder,jit:uni,undef,src:f32::blocked:cdba::f0,,,96x48x8x8,0.19
onednn_verbose,v1,primitive,exec,cpu,convolution,brg_conv_fwd:avx512_core,forward_training,\
src:f32::blocked:acdb::f0,attr-scratchpad:user,alg:convolution_direct,\
mb128_ic48oc96_ih10oh9kh8sh1dh0ph3_iw10ow9kw8sw1dw0pw3,20.5
some other line,exec,not a number
onednn_verbose,v1,primitive,exec,cpu,reorder,jit:blk,undef,src:f32::blocked:abcd::f0,,,128x1x28x28,0.05
onednn_verbose,v1,primitive,exec,cpu,convolution,jit:avx512_core,forward_training,\
src:f32:a:blocked:abcd::f0,,alg:convolution_direct,mb128_ic1oc96_ih28oh21kh8sh1dh0ph0,9.1
onednn_verbose,v1,primitive,exec,cpu,convolution,jit:avx512_core,forward_training,\
src:f32:a:blocked:abcd::f0,,alg:convolution_direct,mb128_ic1oc96_ih28oh21kh8sh1dh0ph0,8.9
onednn_verbose,v1,primitive,exec,cpu,convolution,jit:avx512_core,forward_training,\
src:f32::blocked:abcd::f0,,alg:convolution_direct,mb1_ic3oc7_ih5oh3kh3sh1dh0ph0,0.01
"""


def test_verbose_exec_lines_are_read_in_order():
    executed = conv_kernels.parse_verbose(VERBOSE)
    assert [(e["primitive"], e["implementation"], e["ms"]) for e in executed] == [
        ("reorder", "jit:uni", 0.19), ("convolution", "brg_conv_fwd:avx512_core", 20.5),
        ("reorder", "jit:blk", 0.05), ("convolution", "jit:avx512_core", 9.1),
        ("convolution", "jit:avx512_core", 8.9), ("convolution", "jit:avx512_core", 0.01),
    ]  # fmt: skip
    assert executed[1]["problem"] == "mb128_ic48oc96_ih10oh9kh8sh1dh0ph3_iw10ow9kw8sw1dw0pw3"


@pytest.mark.parametrize(("problem", "name"), [
    ("mb128_ic1oc96_ih28oh21kh8sh1dh0ph0_iw28ow21kw8sw1dw0pw0", "conv1"),
    ("mb128_ic48oc96_ih10oh9kh8sh1dh0ph3_iw10ow9kw8sw1dw0pw3", "conv2"),  # padded inside (both)
    ("mb128_ic48oc96_ih16oh9kh8sh1dh0ph0_iw16ow9kw8sw1dw0pw0", "conv2"),  # an input padded first
    ("mb128_ic48oc48_ih4oh6kh5sh1dh0ph3_iw4ow6kw5sw1dw0pw3", "conv3"),
    ("mb1_ic3oc7_ih5oh3kh3sh1dh0ph0", None),
    ("128x1x28x28", None),
])  # fmt: skip
def test_convolutions_are_told_apart_by_channels_and_kernel(problem, name):
    assert conv_kernels.convolution_of(problem) == name


def test_kernels_name_each_convolutions_implementations_and_what_ran_before_it():
    found = conv_kernels.kernels(conv_kernels.parse_verbose(VERBOSE))
    assert found == {
        "conv2": {"implementations": ["brg_conv_fwd:avx512_core"], "calls": 1,
                  "around": {"reorder:jit:uni": 1.0}, "kernel_ms": 20.5},
        "conv1": {"implementations": ["jit:avx512_core"], "calls": 2,
                  "around": {"reorder:jit:blk": 0.5}, "kernel_ms": 8.9},  # the first left out
    }  # fmt: skip


def test_the_onednn_build_is_read_from_the_header():
    assert conv_kernels.onednn_build(VERBOSE + "onednn_verbose,v1,info,cpu,runtime:threadpool,"
                                     "nthr:2\n") == {"version": "v3.7.1", "runtime": "threadpool"}
    assert conv_kernels.onednn_build("") == {"version": None, "runtime": None}
