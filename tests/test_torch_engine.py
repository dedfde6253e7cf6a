"""The torch engine: same pixels as the OpenCV engine, real models and fixtures, weight cache, missing torch, OOM halving."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from infer import REPO_ROOT
from infer.tfgraph import DT_FLOAT, DT_INT32, DType, Graph, Node, Shape
from tests.fixtures.tfgraph_write import write_graph
from tests.helpers import WORKER, run_worker

# Every shared real model; the torch engine is checked on each, beside the EDSR fixtures.
REAL_MODELS = ["FSRCNN_x2", "FSRCNN_x3", "FSRCNN_x4", "FSRCNN-small_x3", "ESPCN_x2", "ESPCN_x3", "ESPCN_x4", "LapSRN_x2", "LapSRN_x4", "LapSRN_x8"]


def _require_torch() -> None:
    if importlib.util.find_spec("torch") is None:
        reason = "PyTorch is not installed (pip install torch==2.13.0, or pip install -e '.[gpu]')"
        if os.environ.get("SR_TEST_STRICT") == "1":
            pytest.fail(reason + "; SR_TEST_STRICT=1 makes this an error")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def torch_mod():
    _require_torch()
    import torch

    return torch


@pytest.fixture(scope="module")
def models(shared_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Copies of the shared models, so weight caches land in a temporary folder, not in shared data."""
    folder = tmp_path_factory.mktemp("models")
    for name in REAL_MODELS:
        shutil.copy(shared_models / f"{name}.pb", folder)
    return folder


def _engines(torch_mod):
    from infer.engines.opencv import OpenCVEngine
    from infer.engines.torch import TorchEngine

    return OpenCVEngine(device="cpu"), TorchEngine(device="cpu", precision="fp32")


# --- DepthToSpace and pixel_shuffle ----------------------------------------------------------


def _tf_depth_to_space(x: np.ndarray, b: int) -> np.ndarray:
    """TensorFlow's definition, element by element: out[h*b+dy, w*b+dx, c] = in[h, w, (dy*b+dx)*C + c]."""
    h, w, cb = x.shape
    c_out = cb // (b * b)
    out = np.zeros((h * b, w * b, c_out), x.dtype)
    for i in range(h):
        for j in range(w):
            for dy in range(b):
                for dx in range(b):
                    for c in range(c_out):
                        out[i * b + dy, j * b + dx, c] = x[i, j, (dy * b + dx) * c_out + c]
    return out


@pytest.mark.parametrize("block,channels", [(2, 1), (3, 3), (2, 4)])
def test_reordered_channels_make_pixel_shuffle_equal_depth_to_space(torch_mod, block: int, channels: int):
    from infer.engines.graph_plan import depth_to_space_order

    torch = torch_mod
    rng = np.random.default_rng(block)
    x = rng.integers(0, 1000, size=(3, 4, channels * block * block)).astype(np.float32)
    want = _tf_depth_to_space(x, block)
    nchw = torch.from_numpy(x.transpose(2, 0, 1).copy())[None]
    plain = torch.nn.functional.pixel_shuffle(nchw, block)[0].permute(1, 2, 0).numpy()
    if channels > 1:
        assert not np.array_equal(plain, want), "the two orders differ: without reordering the colours mix"
    order = depth_to_space_order(channels * block * block, block)
    shuffled = torch.nn.functional.pixel_shuffle(nchw[:, order], block)[0].permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(shuffled, want)


def _graph(nodes: list[Node], path: Path) -> Path:
    return write_graph(Graph(nodes=nodes, producer=27), path)


def _const(name: str, value: np.ndarray) -> Node:
    dtype = DT_INT32 if value.dtype == np.int32 else DT_FLOAT
    return Node(name, "Const", [], {"dtype": DType(dtype), "value": value})


def _conv(name: str, x: str, w: str, stride: int = 1, padding: str = "SAME") -> Node:
    attrs = {"T": DType(DT_FLOAT), "strides": [1, stride, stride, 1], "padding": padding, "data_format": "NHWC",
             "dilations": [1, 1, 1, 1]}
    return Node(name, "Conv2D", [x, w], attrs)


def _opencv_forward(model: Path, x: np.ndarray) -> np.ndarray:
    cv2.dnn_superres.DnnSuperResImpl_create()  # registers the DepthToSpace layer the TF importer needs
    net = cv2.dnn.readNetFromTensorflow(str(model))
    net.setInput(np.ascontiguousarray(x.transpose(2, 0, 1)[None]))
    return net.forward()[0].transpose(1, 2, 0)


def test_depth_to_space_after_an_activation_runs_unfolded(torch_mod, tmp_path: Path):
    """A DepthToSpace whose input is not a convolution keeps TF's channel order via reshape/permute."""
    from infer.engines.torch import TorchEngine
    from infer.modelspec import spec_from_path

    rng = np.random.default_rng(1)
    t = {"T": DType(DT_FLOAT)}
    model = _graph([
        Node("IteratorGetNext", "Placeholder", [], {"dtype": DType(DT_FLOAT), "shape": Shape([-1, -1, -1, 1])}),
        _const("w", rng.normal(size=(3, 3, 1, 9)).astype(np.float32)),
        _const("perm", np.array([0, 3, 1, 2], np.int32)),
        _conv("conv", "IteratorGetNext", "w"),
        Node("Relu", "Relu", ["conv"], t),
        Node("DepthToSpace", "DepthToSpace", ["Relu"], {**t, "block_size": 3, "data_format": "NHWC"}),
        Node("NCHW_output", "Transpose", ["DepthToSpace", "perm"], {**t, "Tperm": DType(DT_INT32)}),
    ], tmp_path / "ESPCN_x3.pb")
    engine = TorchEngine(device="cpu", precision="fp32")
    engine.load(spec_from_path(model))
    assert [s.kind for s in engine._plan.steps] == ["conv", "unary", "depth_to_space"]
    x = rng.random((7, 9, 1), dtype=np.float32)
    np.testing.assert_allclose(engine.run(x), _opencv_forward(model, x), rtol=1e-5, atol=1e-5)


def test_transposed_convolution_same_padding_matches_opencv(torch_mod, tmp_path: Path):
    """Conv2DBackpropInput with SAME padding and stride = scale: output exactly in*stride, cropped as TF does."""
    from infer.engines.torch import TorchEngine
    from infer.modelspec import spec_from_path

    rng = np.random.default_rng(2)
    h, w, s = 8, 10, 3
    t = {"T": DType(DT_FLOAT)}
    model = _graph([
        Node("IteratorGetNext", "Placeholder", [], {"dtype": DType(DT_FLOAT), "shape": Shape([-1, -1, -1, 1])}),
        _const("w1", rng.normal(size=(5, 5, 1, 8)).astype(np.float32)),
        _const("b1", rng.normal(size=(8,)).astype(np.float32)),
        _const("w2", (rng.normal(size=(9, 9, 1, 8)) * 0.1).astype(np.float32)),
        _const("b2", np.array([0.5], np.float32)),
        _const("sizes", np.array([1, h * s, w * s, 1], np.int32)),
        _const("perm", np.array([0, 3, 1, 2], np.int32)),
        _conv("conv", "IteratorGetNext", "w1"),
        Node("add", "Add", ["conv", "b1"], t),
        Node("Relu", "Relu", ["add"], t),
        Node("deconv", "Conv2DBackpropInput", ["sizes", "w2", "Relu"],
             {**t, "strides": [1, s, s, 1], "padding": "SAME", "data_format": "NHWC", "dilations": [1, 1, 1, 1]}),
        Node("NHWC_output", "Add", ["deconv", "b2"], t),
        Node("NCHW_output", "Transpose", ["NHWC_output", "perm"], {**t, "Tperm": DType(DT_INT32)}),
    ], tmp_path / "FSRCNN_x3.pb")
    engine = TorchEngine(device="cpu", precision="fp32")
    engine.load(spec_from_path(model))
    assert [s.kind for s in engine._plan.steps] == ["conv", "unary", "deconv"]
    x = rng.random((h, w, 1), dtype=np.float32)
    got = engine.run(x)
    assert got.shape == (h * s, w * s, 1)
    np.testing.assert_allclose(got, _opencv_forward(model, x), rtol=1e-4, atol=1e-4)


# --- the same pixels as the OpenCV engine ------------------------------------------------------


def test_activation_patterns_are_folded(torch_mod, models: Path):
    """FSRCNN's PReLU (Relu + alpha*(x-|x|)/2) and LapSRN's leaky ReLU (Relu(x) - 0.2*Relu(-x)) become one step."""
    from infer.engines.weight_cache import load_plan

    fsrcnn = load_plan(models / "FSRCNN_x3.pb").plan
    assert [s.kind for s in fsrcnn.steps].count("act") == 7
    assert {s.params["op"] for s in fsrcnn.steps if s.kind == "act"} == {"prelu"}
    lapsrn = load_plan(models / "LapSRN_x4.pb").plan
    leaky = [s for s in lapsrn.steps if s.kind == "act"]
    assert leaky and all(s.params["op"] == "leaky_relu" and abs(s.params["slope"] - 0.2) < 1e-7 for s in leaky)
    assert not [s for s in fsrcnn.steps + lapsrn.steps if s.kind == "unary"]


@pytest.mark.parametrize("name", REAL_MODELS + ["edsr_model", "edsr_model_plain"])
def test_network_output_equals_opencv(torch_mod, request, models: Path, name: str):
    """Raw network output on a network-space tile, before any rounding to grey levels."""
    from infer.modelspec import spec_from_path

    model = request.getfixturevalue(name) if name.startswith("edsr") else models / f"{name}.pb"
    spec = spec_from_path(model)
    rng = np.random.default_rng(0)
    x = rng.random((23, 31, spec.channels), dtype=np.float32)
    if spec.algo == "edsr":
        x = x * 255 - 110
    cv2.dnn_superres.DnnSuperResImpl_create()  # registers DepthToSpace for OpenCV's TF importer
    ocv, tch = _engines(torch_mod)
    for engine in (ocv, tch):
        engine.load(spec)
    want, got = ocv.run(x), tch.run(x)
    assert got.shape == want.shape == (23 * spec.scale, 31 * spec.scale, spec.channels)
    tol = 2e-3 if spec.algo == "edsr" else 1e-4  # EDSR works in grey levels, the others in [0, 1]
    np.testing.assert_allclose(got, want, rtol=0, atol=tol)


@pytest.mark.parametrize(
    "name,tile",
    [("edsr_model", "0"), ("edsr_model", "16"), ("edsr_model_plain", "0"), ("edsr_model_plain", "16"),
     ("FSRCNN_x3", "0"), ("FSRCNN_x3", "16"), ("ESPCN_x3", "16")],
)
def test_worker_torch_equals_worker_opencv(torch_mod, request, models: Path, photo: Path, tmp_path: Path, name: str, tile: str):
    """The real worker, --engine torch against --engine opencv: within 1 grey level, tiled and untiled."""
    model = request.getfixturevalue(name) if name.startswith("edsr") else models / f"{name}.pb"
    outs = {}
    for engine in ("opencv", "torch"):
        out = tmp_path / f"{engine}.png"
        code, events, err = run_worker("--input", photo, "--output", out, "--model", model, "--engine", engine,
                                   "--device", "cpu", "--precision", "fp32", "--tile", tile, "--tile-pad", "8")
        assert code == 0, err
        done = events[-1]
        assert done["event"] == "done" and done["engine"] == engine and done["device"] == "cpu"
        outs[engine] = cv2.imread(str(out)).astype(int)
    assert outs["torch"].shape == (120, 168, 3)
    assert np.abs(outs["torch"] - outs["opencv"]).max() <= 1
    assert done["precision"] == "fp32" and done["tile_retries"] == 0 and "gpu_seconds" not in done
    assert done["tiles_run"] == (1 if tile == "0" else 12)
    assert set(done["torch_seconds"]) == {"import", "weights", "cuda_init", "to_device", "inference"}


# --- weight cache ------------------------------------------------------------------------------


def test_weight_cache_written_once_and_reused(torch_mod, edsr_model: Path, tmp_path: Path):
    from infer.digests import sha256_of as file_sha256
    from infer.engines.weight_cache import cache_path, load_plan

    model = shutil.copy(edsr_model, tmp_path / "EDSR_x3.pb")
    first = load_plan(model)
    cache = cache_path(model, file_sha256(model))
    assert first.source == "converted" and cache.is_file() and cache == first.cache_path
    assert cache.name.startswith("EDSR_x3.pb.") and cache.name.endswith(".torch.pt")
    stamp = cache.stat().st_mtime_ns
    second = load_plan(model)
    assert second.source == "cache" and cache.stat().st_mtime_ns == stamp
    assert [s.kind for s in second.plan.steps] == [s.kind for s in first.plan.steps]
    for key, value in first.plan.consts.items():
        np.testing.assert_array_equal(second.plan.consts[key], value)
    # A different model file under the same name gets its own cache; the stale one goes.
    from tests.fixtures.edsr_graph import write_edsr_graph

    write_edsr_graph(model, seed=5)
    third = load_plan(model)
    assert third.source == "converted" and third.cache_path != cache
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["EDSR_x3.pb", third.cache_path.name])


def test_corrupt_cache_is_rebuilt(torch_mod, edsr_model: Path, tmp_path: Path, capfd):
    from infer.engines.weight_cache import load_plan

    model = shutil.copy(edsr_model, tmp_path / "EDSR_x3.pb")
    cache = load_plan(model).cache_path
    cache.write_bytes(b"not a torch file")
    again = load_plan(model)
    assert again.source == "converted" and "ignoring the weight cache" in capfd.readouterr().err
    assert load_plan(model).source == "cache"


def test_unwritable_cache_only_skips_caching(torch_mod, edsr_model: Path, tmp_path: Path, photo: Path):
    """When the cache cannot be written (here: a folder squats on its name) the job still runs, and says why."""
    from infer.digests import sha256_of as file_sha256
    from infer.engines.weight_cache import cache_path

    model = shutil.copy(edsr_model, tmp_path / "EDSR_x3.pb")
    cache_path(model, file_sha256(model)).mkdir()
    out = tmp_path / "out.png"
    code, events, err = run_worker("--input", photo, "--output", out, "--model", model, "--engine", "torch", "--device", "cpu")
    assert code == 0, err
    assert events[-1]["weights"] == "converted, not cached"
    assert "cannot cache converted weights" in err
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


# --- choosing the engine and the device ----------------------------------------------------------


def test_engine_torch_without_torch_exits_5(edsr_model: Path, photo: Path, tmp_path: Path):
    """The real worker with `torch` made unimportable (sys.modules['torch'] = None), no torch needed here."""
    hide = textwrap.dedent(
        """
        import runpy, sys
        sys.modules["torch"] = None
        sys.argv = ["sr_infer.py"] + sys.argv[1:]
        runpy.run_path(sys.argv.pop(1), run_name="__main__")
        """
    )
    out = tmp_path / "out.png"
    code, events, err = run_worker(WORKER, "--input", photo, "--output", out, "--model", edsr_model, "--engine", "torch",
                                   python_args=("-c", hide))
    assert code == 5, err
    assert events[-1]["event"] == "error" and events[-1]["code"] == "model_error"
    assert "pip install -e '.[worker]'" in events[-1]["message"]
    assert not out.exists()
    # Everything else keeps working without torch.
    code, events, err = run_worker(WORKER, "--input", photo, "--output", out, "--model", edsr_model, "--engine", "auto",
                                   python_args=("-c", hide))
    assert code == 0, err
    assert events[-1]["engine"] == "opencv" and out.exists()
    assert "torch not installed" in events[0]["note"] and "pip install -e '.[worker]'" in err


def test_device_cuda_without_cuda_is_a_clear_error(torch_mod, edsr_model: Path, photo: Path, tmp_path: Path):
    if torch_mod.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    out = tmp_path / "out.png"
    code, events, err = run_worker("--input", photo, "--output", out, "--model", edsr_model, "--engine", "torch", "--device", "cuda")
    assert code == 5, err
    assert "no CUDA GPU" in events[-1]["message"] and "--device cpu" in events[-1]["message"]
    assert not out.exists()
    # auto falls back to the CPU and says so in the start event
    code, events, err = run_worker("--input", photo, "--output", out, "--model", edsr_model, "--engine", "torch", "--device", "auto")
    assert code == 0, err
    assert events[0]["event"] == "start" and events[0]["device"] == "cpu" and "CPU" in events[0]["note"]


# --- out of memory -------------------------------------------------------------------------------

_OOM_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys
    import numpy as np, psutil
    from infer.engines.torch import TorchEngine
    from infer.errors import OutOfMemoryError
    from infer.modelspec import spec_from_path

    model, headroom_mb = sys.argv[1], float(sys.argv[2])
    engine = TorchEngine(device="cpu", precision="fp32")
    engine.load(spec_from_path(model))
    x = (np.random.default_rng(0).random((384, 384, 3), dtype=np.float32) * 255 - 110)
    whole = engine.run(x)  # warms every thread and allocator up, and is the reference
    engine._tiles = 0
    # From here on the process may grow by `headroom_mb` only: a real allocation failure, no mock.
    limit = psutil.Process().memory_info().vms + int(headroom_mb * 2**20)
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        out = engine.run(x)
    except OutOfMemoryError as err:
        print(json.dumps({"oom": err.message, "exit_code": err.exit_code}))
        sys.exit(0)
    resource.setrlimit(resource.RLIMIT_AS, (hard, hard))
    stats = engine.stats()
    print(json.dumps({"max_diff": float(np.abs(out - whole).max()), "retries": stats["tile_retries"],
                      "limit": stats["tile_limit"], "tiles": stats["tiles_run"]}))
    """
)


@pytest.fixture(scope="module")
def edsr_32_filters(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.fixtures.edsr_graph import write_edsr_graph

    return write_edsr_graph(tmp_path_factory.mktemp("edsr32") / "EDSR_x3.pb", filters=32)


def _oom_job(model: Path, headroom_mb: str) -> dict:
    # A fixed mmap threshold makes glibc hand big blocks straight back, so the address-space limit is exact.
    env = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    code, events, err = run_worker(model, headroom_mb, python_args=("-c", _OOM_SCRIPT), env=env)
    assert code == 0, err
    return events[-1]


def test_out_of_memory_halves_the_tile_and_goes_on(torch_mod, edsr_32_filters: Path):
    # The 384x384 tile needs about 80 MB more, a 192x192 window about 35 MB (measured: 40-72 MB of headroom
    # gives exactly one split): 56 MB fails the whole tile and fits its halves.
    result = _oom_job(edsr_32_filters, "56")
    assert "oom" not in result, result
    assert result["retries"] >= 1 and result["limit"] <= 192 and result["tiles"] > 1
    # 7 stacked 3x3 convolutions see 7 pixels around; the split keeps 24: the same pixels.
    assert result["max_diff"] < 1e-3


def test_out_of_memory_on_the_smallest_tile_is_exit_6(torch_mod, edsr_32_filters: Path):
    result = _oom_job(edsr_32_filters, "0.05")
    assert result.get("exit_code") == 6 and "ran out of memory" in result["oom"], result


def test_tile_for_memory_grows_with_free_memory(torch_mod, edsr_model: Path):
    from infer.engines.graph_plan import build_plan
    from infer.engines.torch import MIN_WINDOW, tile_for_memory
    from infer.engines.weight_cache import load_plan
    from tests.fixtures.edsr_graph import edsr_graph

    full = build_plan(edsr_graph(blocks=32, filters=256, scale=3, quantize=False))
    gib = 1 << 30
    small, big = tile_for_memory(full, 2 * gib, 2, 24), tile_for_memory(full, 40 * gib, 2, 24)
    assert MIN_WINDOW <= small < big
    # fp16 EDSR keeps about 1k activations per pixel alive: 2 GB free holds roughly a 600-pixel window
    assert 400 <= small <= 900, small
    assert tile_for_memory(full, 256 << 20, 2, 24) == MIN_WINDOW
    assert tile_for_memory(load_plan(edsr_model).plan, 80 * gib, 2, 24) <= 2048
