"""The GraphDef reader/writer against OpenCV's own importer, the real shared models and the EDSR fixture."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from infer import tfgraph
from infer.errors import EXIT_MODEL, ModelError
from infer.families import FAMILIES
from infer.tfgraph import (
    DT_FLOAT,
    DT_QUINT8,
    DType,
    Graph,
    Node,
    Shape,
    Tensor,
    dequantize_min_first,
    read_graph,
)
from tests.fixtures import tfgraph_write
from tests.fixtures.tfgraph_write import quantize_min_first, write_graph
from tests.fixtures.edsr_graph import _conv_attrs, edsr_graph, edsr_weights, write_edsr_graph


def _opencv_conv_weights(model: Path) -> dict[str, np.ndarray]:
    """Convolution kernels as OpenCV's TensorFlow importer loaded them, by Conv2D node name (OIHW)."""
    net = cv2.dnn.readNetFromTensorflow(str(model))
    out = {}
    for node in read_graph(model).nodes:
        if node.op == "Conv2D":
            layer = net.getLayer(net.getLayerId(node.name))
            assert layer.type == "Convolution", node.name
            out[node.name] = layer.blobs[0]
    return out


def _shared_model_paths(shared_models: Path) -> list[Path]:
    paths = sorted(shared_models.glob("*.pb"))
    assert len(paths) >= 10, f"expected the 10 shared models in {shared_models}"
    return paths


# ---------------------------------------------------------------- real models


def test_every_shared_model_parses_and_its_constants_decode(shared_models: Path) -> None:
    for path in _shared_model_paths(shared_models):
        graph = read_graph(path)
        assert [n.name for n in graph.nodes if n.op == "Placeholder"] == ["IteratorGetNext"], path.name
        names = {n.name for n in graph.nodes}
        for node in graph.nodes:
            for ref in node.inputs:
                assert tfgraph.input_node_name(ref) in names, f"{path.name}: {node.name} reads missing {ref}"
            if node.op == "Const":
                value = graph.const(node.name)
                assert int(node.attrs["dtype"]) in (tfgraph.DT_FLOAT, tfgraph.DT_INT32), (path.name, node.name)
                assert value.dtype in (np.float32, np.int32)
                assert np.all(np.isfinite(value)), (path.name, node.name)
            if node.op == "Conv2D":
                kernel = graph.const(node.inputs[1])
                assert kernel.ndim == 4 and kernel.shape[0] == kernel.shape[1], (path.name, node.name, kernel.shape)
        assert graph.node("NCHW_output").op == "Transpose"
        assert graph.const("NCHW_output/perm").tolist() == [0, 3, 1, 2]


def test_shared_model_kernels_match_what_opencv_loads(shared_models: Path) -> None:
    for path in _shared_model_paths(shared_models):
        graph = read_graph(path)
        loaded = _opencv_conv_weights(path)
        convs = [n for n in graph.nodes if n.op == "Conv2D"]
        assert convs and len(loaded) == len(convs), path.name
        for node in convs:
            ours = graph.const(node.inputs[1]).transpose(3, 2, 0, 1)  # HWIO -> OIHW
            np.testing.assert_array_equal(ours, loaded[node.name], err_msg=f"{path.name}: {node.name}")


def test_rewriting_a_shared_model_keeps_every_node(shared_models: Path, tmp_path: Path) -> None:
    source = shared_models / "FSRCNN_x3.pb"
    graph = read_graph(source)
    copy = write_graph(graph, tmp_path / "FSRCNN_x3.pb")
    again = read_graph(copy)
    _assert_same_nodes(graph.nodes, again.nodes)
    # OpenCV reads the rewritten file to the same kernels.
    for name, kernel in _opencv_conv_weights(copy).items():
        np.testing.assert_array_equal(kernel, _opencv_conv_weights(source)[name])


# ---------------------------------------------------------------- the EDSR fixture


def _assert_same_nodes(expected: list[Node], actual: list[Node]) -> None:
    assert [(n.name, n.op, n.inputs) for n in actual] == [(n.name, n.op, n.inputs) for n in expected]
    for want, got in zip(expected, actual):
        assert sorted(got.attrs) == sorted(want.attrs), want.name
        for key, value in want.attrs.items():
            read = got.attrs[key]
            if isinstance(value, (np.ndarray, Tensor)):
                array = value.value if isinstance(value, Tensor) else value
                assert isinstance(read, np.ndarray) and read.shape == array.shape, (want.name, key)
                np.testing.assert_array_equal(read, array)
            else:
                assert read == value and type(read) is type(value), (want.name, key, read, value)


@pytest.mark.parametrize("quantize", [True, False])
def test_fixture_reads_back_exactly_as_written(quantize: bool, tmp_path: Path) -> None:
    written = edsr_graph(blocks=2, filters=16, scale=3, quantize=quantize, seed=0)
    path = write_edsr_graph(tmp_path / "EDSR_x3.pb", blocks=2, filters=16, scale=3, quantize=quantize, seed=0)
    read = read_graph(path)
    _assert_same_nodes(written.nodes, read.nodes)
    assert read.producer == written.producer


def test_fixture_has_the_published_edsr_layout(edsr_model: Path) -> None:
    graph = read_graph(edsr_model)
    ops = [n.op for n in graph.nodes if n.op not in ("Const", "Dequantize")]
    block = ["Conv2D", "Add", "Relu", "Conv2D", "Add", "Mul", "Add"]
    assert ops == ["Placeholder", "Conv2D", "Add"] + block * 2 + ["Conv2D", "Add", "Add", "Conv2D", "Add"] + [
        "DepthToSpace",
        "Transpose",
    ]
    placeholder = graph.nodes[0]
    assert (placeholder.name, placeholder.attrs["dtype"], placeholder.attrs["shape"]) == (
        "IteratorGetNext",
        DT_FLOAT,
        [-1, -1, -1, 3],
    )
    for conv in (n for n in graph.nodes if n.op == "Conv2D"):
        assert conv.attrs == _conv_attrs()
    d2s = graph.node("NHWC_output")
    assert (d2s.op, d2s.attrs["block_size"], d2s.attrs["data_format"]) == ("DepthToSpace", 3, "NHWC")
    out = graph.node("NCHW_output")
    assert out.inputs[0] == "NHWC_output" and graph.const(out.inputs[1]).tolist() == [0, 3, 1, 2]
    assert float(graph.const("mul/y")) == pytest.approx(0.1)
    # Dequantize exactly where TensorFlow's quantize_weights puts it: every weight of 1024+ elements.
    for name, value in edsr_weights(blocks=2, filters=16, scale=3, seed=0).items():
        node = graph.node(name)
        if value.size >= 1024:
            assert node.op == "Dequantize" and node.attrs == {"T": DT_QUINT8, "mode": "MIN_FIRST"}
            assert node.inputs == [f"{name}_quantized_const", f"{name}_quantized_min", f"{name}_quantized_max"]
            assert graph.node(f"{name}_quantized_const").attrs["dtype"] == DT_QUINT8
            assert graph.const(f"{name}_quantized_min").shape == ()
        else:
            assert node.op == "Const"


def test_dequantized_fixture_weights_are_within_one_step_of_the_originals(edsr_model: Path) -> None:
    graph = read_graph(edsr_model)
    quantized = 0
    for name, value in edsr_weights(blocks=2, filters=16, scale=3, seed=0).items():
        got = graph.const(name)
        assert got.dtype == np.float32 and got.shape == value.shape
        if graph.node(name).op == "Dequantize":
            quantized += 1
            lo, hi = float(graph.const(f"{name}_quantized_min")), float(graph.const(f"{name}_quantized_max"))
            step = (hi - lo) / 255
            assert np.abs(got - value).max() <= step * 1.001, name
            assert np.abs(got - value).max() > 0, name  # really went through 8 bits
        else:
            np.testing.assert_array_equal(got, value)
    assert quantized == 6  # every 3x3x16x16 and the last conv; filter_one has only 432 elements


def test_dequantized_weights_equal_what_opencv_computes(edsr_model: Path) -> None:
    graph = read_graph(edsr_model)
    loaded = _opencv_conv_weights(edsr_model)
    convs = [n for n in graph.nodes if n.op == "Conv2D"]
    assert len(loaded) == len(convs) == 7
    for node in convs:
        ours = graph.const(node.inputs[1]).transpose(3, 2, 0, 1)
        np.testing.assert_array_equal(ours, loaded[node.name], err_msg=node.inputs[1])


def _dequantize_graph(q: np.ndarray, lo: float, hi: float) -> Graph:
    cin = q.shape[2]
    return Graph(
        [
            Node("x", "Placeholder", [], {"dtype": DType(DT_FLOAT), "shape": Shape([-1, -1, -1, cin])}),
            Node("w_quantized_const", "Const", [], {"dtype": DType(DT_QUINT8), "value": Tensor(q, DT_QUINT8)}),
            Node("w_quantized_min", "Const", [], {"dtype": DType(DT_FLOAT), "value": Tensor(np.array(lo, np.float32), DT_FLOAT)}),
            Node("w_quantized_max", "Const", [], {"dtype": DType(DT_FLOAT), "value": Tensor(np.array(hi, np.float32), DT_FLOAT)}),
            Node(
                "w",
                "Dequantize",
                ["w_quantized_const", "w_quantized_min", "w_quantized_max"],
                {"T": DType(DT_QUINT8), "mode": "MIN_FIRST"},
            ),
            Node("conv", "Conv2D", ["x", "w"], _conv_attrs()),
        ]
    )


@pytest.mark.parametrize(
    "lo, hi",
    [
        (-2.5, 252.5),  # min / scale = -2.5: cvRound gives -2 (half to even), not -3
        (-3.5, 251.5),
        (-0.3, 0.7),
        (-1.2345, 3.21),
        (-0.19497108, 0.14372502),
        (0.0, 1e-30),
    ],
)
def test_dequantize_min_first_is_bit_exact_with_opencv(lo: float, hi: float, tmp_path: Path) -> None:
    q = np.arange(256, dtype=np.uint8).reshape(1, 1, 16, 16)
    path = write_graph(_dequantize_graph(q, lo, hi), tmp_path / "dequantize.pb")
    net = cv2.dnn.readNetFromTensorflow(str(path))
    net.setInput(np.eye(16, dtype=np.float32).reshape(16, 16, 1, 1))  # one-hot pixels read out each kernel row
    opencv = net.forward().reshape(16, 16)
    ours = read_graph(path).const("w").reshape(16, 16)
    np.testing.assert_array_equal(ours, opencv)
    np.testing.assert_array_equal(ours, dequantize_min_first(q, lo, hi).reshape(16, 16))


def test_quantize_min_first_follows_the_tensorflow_transform() -> None:
    q, lo, hi = quantize_min_first(np.array([-1.0, 0.0, 1.0], dtype=np.float32))
    # range 2 stretched by 256/255 -> 127.5 steps per unit; round(-127.5) = -128 (half away from zero)
    assert (q.tolist(), lo, hi) == ([0, 128, 255], -1.0, 1.0)
    q, lo, hi = quantize_min_first(np.array([0.5, 2.0], dtype=np.float32))
    assert lo == 0.0 and hi == 2.0 and q.tolist() == [64, 255]  # range widened down to 0
    q, lo, hi = quantize_min_first(np.array([-4.0, -2.0], dtype=np.float32))
    # max stays at FLT_MIN; -2 * 63.75 = -127.5 rounds away from zero to -128, plus round(4 * 63.75) = 255
    assert lo == -4.0 and hi == np.finfo(np.float32).tiny and q.tolist() == [0, 127]
    q, lo, hi = quantize_min_first(np.zeros(5, dtype=np.float32))
    assert q.tolist() == [0] * 5 and lo == 0.0 and hi > 0.0
    assert np.all(dequantize_min_first(q, lo, hi) == 0.0)
    with pytest.raises(ValueError):
        quantize_min_first(np.array([1.0, np.nan], dtype=np.float32))


def test_quantize_then_dequantize_round_trips_within_one_step() -> None:
    rng = np.random.default_rng(7)
    for scale in (1e-3, 0.05, 3.0):
        w = (rng.normal(0.2, 1.0, size=5000) * scale).astype(np.float32)
        q, lo, hi = quantize_min_first(w)
        back = dequantize_min_first(q, lo, hi)
        assert np.abs(back - w).max() <= (hi - lo) / 255 * 1.001


# ---------------------------------------------------------------- OpenCV runs the fixture


def _photo_crop(shared_photos: Path) -> np.ndarray:
    image = cv2.imread(str(shared_photos / "astronaut.png"), cv2.IMREAD_COLOR)
    return image[100:132, 200:240]


@pytest.mark.parametrize("fixture_name", ["edsr_model", "edsr_model_plain"])
def test_opencv_superres_upscales_a_photo_with_the_fixture(
    fixture_name: str, request: pytest.FixtureRequest, shared_photos: Path
) -> None:
    model: Path = request.getfixturevalue(fixture_name)
    assert model.name == "EDSR_x3.pb"
    assert cv2.dnn.readNetFromTensorflow(str(model)).getLayerNames()
    crop = _photo_crop(shared_photos)
    sr = cv2.dnn_superres.DnnSuperResImpl_create()
    sr.readModel(str(model))
    sr.setModel("edsr", 3)
    out = sr.upsample(crop)
    assert out.shape == (96, 120, 3) and out.dtype == np.uint8
    nearest = cv2.resize(crop, None, fx=3, fy=3, interpolation=cv2.INTER_NEAREST).astype(np.float64)
    diff = np.abs(out.astype(np.float64) - nearest)
    assert 0.2 < diff.mean() < 4.0  # the picture, plus a residual that is there but small
    assert diff.max() < 20
    assert np.mean((out == 0) | (out == 255)) < 0.01  # not blown out


def test_fixture_network_output_is_mean_subtracted_bgr(edsr_model: Path, shared_photos: Path) -> None:
    crop = _photo_crop(shared_photos).astype(np.float32) - np.array(FAMILIES["edsr"].mean_bgr, dtype=np.float32)
    net = cv2.dnn.readNetFromTensorflow(str(edsr_model))
    net.setInput(cv2.dnn.blobFromImage(crop))
    out = net.forward()  # NCHW: the graph ends in NCHW_output
    assert out.shape == (1, 3, 96, 120)
    hwc = out[0].transpose(1, 2, 0)
    nearest = np.repeat(np.repeat(crop, 3, axis=0), 3, axis=1)
    assert np.abs(hwc - nearest).mean() < 4.0


def test_quantized_and_plain_fixtures_agree(edsr_model: Path, edsr_model_plain: Path, shared_photos: Path) -> None:
    crop = _photo_crop(shared_photos)
    outs = []
    for model in (edsr_model, edsr_model_plain):
        sr = cv2.dnn_superres.DnnSuperResImpl_create()
        sr.readModel(str(model))
        sr.setModel("edsr", 3)
        outs.append(sr.upsample(crop).astype(np.int16))
    assert np.abs(outs[0] - outs[1]).mean() < 1.0
    assert edsr_model.stat().st_size < edsr_model_plain.stat().st_size / 2


def test_fixture_generator_cli(tmp_path: Path) -> None:
    from tests.fixtures.edsr_graph import main

    out = tmp_path / "sub" / "EDSR_x2.pb"
    assert main([str(out), "--blocks", "1", "--filters", "8", "--scale", "2", "--plain"]) == 0
    graph = read_graph(out)
    assert graph.node("NHWC_output").attrs["block_size"] == 2
    assert not any(n.op == "Dequantize" for n in graph.nodes)


# ---------------------------------------------------------------- bad files


def _bad_files(tmp_path: Path, edsr_model: Path, shared_photos: Path) -> dict[str, Path]:
    rng = np.random.default_rng(3)
    good = edsr_model.read_bytes()
    files = {
        "empty": b"",
        "random": rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "truncated": good[: len(good) // 2],
        "text": b"this is not a model\n" * 20,
    }
    paths = {}
    for name, data in files.items():
        paths[name] = tmp_path / f"{name}.pb"
        paths[name].write_bytes(data)
    paths["photo"] = shared_photos / "chelsea.png"
    return paths


def test_files_that_are_not_graphs_raise_a_model_error(tmp_path: Path, edsr_model: Path, shared_photos: Path) -> None:
    for name, path in _bad_files(tmp_path, edsr_model, shared_photos).items():
        with pytest.raises(ModelError) as info:
            read_graph(path)
        assert info.value.exit_code == EXIT_MODEL
        assert str(path) in info.value.message, name
        assert "sr-models fetch" in info.value.message, name


def test_missing_model_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        read_graph(tmp_path / "EDSR_x3.pb")


def test_const_of_a_non_constant_node_is_a_model_error(edsr_model: Path) -> None:
    graph = read_graph(edsr_model)
    with pytest.raises(ModelError, match="not a constant"):
        graph.const("NHWC_output")
    with pytest.raises(ModelError, match="no node named"):
        graph.node("nope")


# ---------------------------------------------------------------- wire-format details


def _tensor_proto(*fields: bytes) -> bytes:
    return b"".join(fields)


def test_short_value_lists_fill_the_shape_like_tensorflow() -> None:
    shape = tfgraph_write._enc_len(2, tfgraph_write.encode_shape([2, 3]))
    splat = _tensor_proto(tfgraph_write._enc_int(1, DT_FLOAT), shape, tfgraph_write._enc_len(5, np.float32([1.5]).tobytes()))
    assert tfgraph._parse_tensor(memoryview(splat)).tolist() == [[1.5] * 3] * 2
    repeat_last = _tensor_proto(
        tfgraph_write._enc_int(1, tfgraph.DT_INT32), shape, tfgraph_write._enc_len(7, b"".join(tfgraph_write._enc_varint(v) for v in (4, -1)))
    )
    assert tfgraph._parse_tensor(memoryview(repeat_last)).tolist() == [[4, -1, -1], [-1, -1, -1]]
    # unpacked (one value per field) encodings are accepted as protobuf requires
    unpacked = _tensor_proto(
        tfgraph_write._enc_int(1, DT_FLOAT),
        tfgraph_write._enc_len(2, tfgraph_write.encode_shape([2])),
        tfgraph_write._key(5, 5) + np.float32(2.0).tobytes(),
        tfgraph_write._key(5, 5) + np.float32(3.0).tobytes(),
    )
    assert tfgraph._parse_tensor(memoryview(unpacked)).tolist() == [2.0, 3.0]
    half = _tensor_proto(
        tfgraph_write._enc_int(1, tfgraph.DT_HALF),
        tfgraph_write._enc_len(2, tfgraph_write.encode_shape([1])),
        tfgraph_write._enc_len(13, tfgraph_write._enc_varint(int(np.float16(0.5).view(np.uint16)))),
    )
    assert tfgraph._parse_tensor(memoryview(half)).tolist() == [0.5]


def test_attr_kinds_round_trip(tmp_path: Path) -> None:
    attrs = {
        "i": -3,
        "f": 0.25,
        "b": False,
        "s": "SAME",
        "raw": b"\xff\x00",
        "type": DType(DT_FLOAT),
        "shape": Shape([-1, 4]),
        "unknown": Shape(unknown_rank=True),
        "ints": [1, -2, 3],
        "floats": [0.5, 1.5],
        "strings": ["a", "b"],
        "types": [DType(1), DType(3)],
        "shapes": [Shape([1]), Shape([])],
        "bools": [True, False],
        "tensor": np.arange(6, dtype=np.int64).reshape(2, 3),
        "empty": [],
    }
    path = write_graph(Graph([Node("n", "NoOp", ["^a", "b:1"], attrs, device="/cpu:0")]), tmp_path / "g.pb")
    node = read_graph(path).nodes[0]
    assert node.inputs == ["^a", "b:1"] and node.device == "/cpu:0"
    for key, value in attrs.items():
        got = node.attrs[key]
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(got, value)
            assert got.dtype == value.dtype
        else:
            assert got == value and type(got) is type(value), key
    assert node.attrs["unknown"].unknown_rank
    assert [type(t) for t in node.attrs["types"]] == [DType, DType]
    assert tfgraph.input_node_name("^a") == "a" and tfgraph.input_node_name("b:1") == "b"


# ---------------------------------------------------------------- shared-data fixtures


def test_missing_shared_data_skips_locally_and_fails_in_strict_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.conftest import _require_dir

    absent = tmp_path / "shared" / "models"
    monkeypatch.delenv("SR_TEST_STRICT", raising=False)
    with pytest.raises(pytest.skip.Exception, match="shared models not found"):
        _require_dir(absent, "shared models")
    monkeypatch.setenv("SR_TEST_STRICT", "1")
    with pytest.raises(pytest.fail.Exception, match="SR_TEST_STRICT=1"):
        _require_dir(absent, "shared models")
    absent.mkdir(parents=True)
    (absent / "ESPCN_x2.pb").write_bytes(b"x")
    assert _require_dir(absent, "shared models") == absent
