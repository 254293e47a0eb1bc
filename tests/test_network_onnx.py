"""ONNX import through TVM's Relax ONNX frontend: a model built with onnx.helper, checked
against onnx's own reference evaluator (float) and quantised to int8 (kernels bit-exact)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from slicert_ops.network import (
    NetworkError,
    extract_tasks,
    generate_layer_kernel,
    load_network,
    run_reference,
)
from slicert_ops.network.host import run_op_host

pytestmark = pytest.mark.integration


def residual_cnn(path, *, clip_opset11: bool = True, extra_node=None):
    rng = np.random.default_rng(0)

    def t(name, *shape, scale=0.3):
        return numpy_helper.from_array((rng.normal(size=shape) * scale).astype(np.float32),
                                       name)

    init = [t("W1", 8, 3, 3, 3), t("B1", 8), t("Wd", 8, 1, 3, 3), t("Bd", 8),
            t("Wp", 8, 8, 1, 1), t("Bp", 8), t("Wf", 10, 32), t("Bf", 10),
            numpy_helper.from_array(np.array(0, np.float32), "lo"),
            numpy_helper.from_array(np.array(6, np.float32), "hi")]
    nodes = [
        helper.make_node("Conv", ["x", "W1", "B1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "Wd", "Bd"], ["dw"], pads=[1, 1, 1, 1], group=8,
                         strides=[2, 2]),
        helper.make_node("Clip", ["dw", "lo", "hi"], ["d6"]),
        helper.make_node("Conv", ["d6", "Wp", "Bp"], ["pw"]),
        helper.make_node("Add", ["pw", "d6"], ["s"]),
        helper.make_node("Relu", ["s"], ["sr"]),
        helper.make_node("MaxPool", ["sr"], ["mp"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["mp"], ["f"]),
        helper.make_node("Gemm", ["f", "Wf", "Bf"], ["out"], transB=1),
    ]
    if extra_node is not None:
        nodes.append(extra_node)
    out_name = nodes[-1].output[0]
    graph = helper.make_graph(
        nodes, "residual_cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                              [1, 3, 8, 8])],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, [1, 10])], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return model


def test_float_import_matches_onnx_reference(tmp_path):
    model = residual_cnn(tmp_path / "m.onnx")
    net = load_network({"experiment": {"model": {"onnx": "m.onnx", "dtype": "float32"}}},
                       tmp_path / "manifest.yaml")
    types = [ly.type for ly in net.spec.layers]
    assert types == ["conv2d", "relu", "depthwise_conv2d", "relu6", "conv2d", "add", "relu",
                     "max_pool", "flatten", "dense"]
    assert net.input.shape == (1, 8, 8, 3)
    x = net.make_input()
    ours = run_reference(net, x)[net.ops[-1].output]
    theirs = ReferenceEvaluator(model).run(None, {"x": x.transpose(0, 3, 1, 2).copy()})[0]
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)


def test_int8_import_runs_bit_exact_kernels(tmp_path):
    model = residual_cnn(tmp_path / "m.onnx")
    net = load_network({"model": {"onnx": "m.onnx", "name": "cnn"}}, tmp_path / "a.yaml")
    assert net.name == "cnn" and net.dtype == "int8"
    x = net.make_input()
    values = run_reference(net, x)
    for task in extract_tasks(net):
        kernel = generate_layer_kernel(task)
        for i in task.ops:
            op = net.ops[i]
            ins = [values[t].reshape(op.layer.in_shapes[j]) for j, t in enumerate(op.inputs)]
            got, _ = run_op_host(net, op, kernel, ins)
            assert np.array_equal(got, values[op.output]), op.label
    # the int8 network approximates the float model
    xf = x.astype(np.float32) * net.input.scale - net.input.scale * net.input.zero_point
    ref = ReferenceEvaluator(model).run(None, {"x": xf.transpose(0, 3, 1, 2).copy()})[0]
    out = net.output
    deq = (values[net.ops[-1].output].astype(np.float32) - out.zero_point) * out.scale
    assert np.corrcoef(deq.ravel(), ref.ravel())[0, 1] > 0.95


def test_unsupported_onnx_operators_are_named(tmp_path):
    residual_cnn(tmp_path / "m.onnx", extra_node=helper.make_node("Softmax", ["out"], ["sm"]))
    with pytest.raises(NetworkError, match="softmax: not implemented in the firmware"):
        load_network({"model": {"onnx": "m.onnx"}}, tmp_path / "a.yaml")
    with pytest.raises(NetworkError, match="no such file"):
        load_network({"model": {"onnx": "missing.onnx"}}, tmp_path / "a.yaml")
    with pytest.raises(NetworkError, match="experiment.model.layers: not allowed with"):
        load_network({"model": {"onnx": "m.onnx", "layers": []}}, tmp_path / "a.yaml")
