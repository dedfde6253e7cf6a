"""PyTorch checkpoints through spandrel: real Real-ESRGAN weights against ncnn, precision, size requirements,
alpha and metadata, and the refusals (TorchScript, code in a pickle, unrecognised weights)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageCms

from tests.helpers import psnr, read, run_worker

# Real photos, cropped small: RealESRGAN_x4plus costs about 36 TFLOP per input megapixel.
CROPS = {"x4plus": ("coffee.png", (200, 100, 264, 124)), "compact": ("chelsea.png", (120, 40, 216, 120))}
# Tiles smaller than the crop, with the default context (16 pixels), so tiling really runs: 3 and 9 tiles.
TILES = {"x4plus": (24, 3), "compact": (32, 9)}


@pytest.fixture(scope="module")
def crops(shared_photos: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("crops")
    out = {}
    for key, (name, box) in CROPS.items():
        out[key] = folder / f"{key}.png"
        Image.open(shared_photos / name).convert("RGB").crop(box).save(out[key])
    return out


def _ncnn(key: str, src: Path) -> np.ndarray:
    from tests.fixtures.ncnn_realesrgan import ANIMEVIDEOV3, X4PLUS, ncnn_upscale

    rgb = np.asarray(Image.open(src).convert("RGB"))
    return ncnn_upscale(X4PLUS if key == "x4plus" else ANIMEVIDEOV3, rgb)[:, :, ::-1]  # as BGR, like read()


def _upscale(model: Path, src: Path, out: Path, *flags: str) -> list[dict]:
    code, events, err = run_worker("--input", src, "--output", out, "--model", model, "--device", "cpu", *flags)
    assert code == 0, err
    return events


@pytest.mark.slow
@pytest.mark.parametrize("key", ["compact", "x4plus"])
def test_fp32_equals_ncnn_untiled_and_tiled(realesrgan: dict[str, Path], crops: dict[str, Path], tmp_path: Path, key: str):
    reference = _ncnn(key, crops[key])
    for tile, tiles in ((0, 1), TILES[key]):
        out = tmp_path / f"{key}_{tile}.png"
        events = _upscale(realesrgan[key], crops[key], out, "--precision", "fp32", "--tile", str(tile))
        start = events[0]
        assert start["engine"] == "spandrel" and start["precision"] == "fp32" and start["scale"] == 4
        assert start["tiles"] == tiles and start["tile_pad"] == {"compact": 16, "x4plus": 32}[key]
        result = read(out)
        assert result.shape == reference.shape
        diff = np.abs(result.astype(int) - reference.astype(int))
        # RRDBNet sees far past 16 pixels: its 32 of context keep a seam within a level of the untiled result.
        limit = 1 if tile == 0 or key == "compact" else 2
        assert diff.max() <= limit, f"{key} tile {tile}: {diff.max()} levels from ncnn"
        assert psnr(result, reference) >= 50.0


@pytest.mark.slow
@pytest.mark.parametrize("key", ["compact", "x4plus"])
def test_default_and_bf16_precision_stay_close_to_fp32(realesrgan: dict[str, Path], crops: dict[str, Path], tmp_path: Path, key: str):
    fp32 = tmp_path / "fp32.png"
    _upscale(realesrgan[key], crops[key], fp32, "--precision", "fp32", "--tile", "0")
    for precision in ("auto", "bf16"):
        out = tmp_path / f"{precision}.png"
        events = _upscale(realesrgan[key], crops[key], out, "--precision", precision, "--tile", "0")
        assert events[-1]["event"] == "done" and events[-1]["precision_fallbacks"] == 0
        assert psnr(read(out), read(fp32)) >= 45.0, (key, precision)


def test_descriptor_is_read_from_the_weights(realesrgan: dict[str, Path], tmp_path: Path):
    from infer import checkpoints

    # A misleading name changes nothing: scale and architecture come from the weights.
    renamed = tmp_path / "EDSR_x2.safetensors"
    os.link(realesrgan["x4plus"], renamed)
    info = checkpoints.inspect(renamed)
    assert (info.architecture, info.scale, info.purpose, info.input_channels) == ("ESRGAN", 4, "SR", 3)
    assert info.size_minimum == 2 and info.tiling is checkpoints.Tiling.SUPPORTED
    compact = checkpoints.inspect(realesrgan["compact"])
    assert (compact.architecture, compact.scale, compact.half_formats) == ("Compact", 4, ("bf16", "fp16"))


def test_pads_to_the_size_requirements(realesrgan: dict[str, Path], tmp_path: Path):
    from infer.engines.checkpoint import pad_to_requirements

    assert pad_to_requirements(5, 7, 0, 1, False) == (5, 7)
    assert pad_to_requirements(1, 9, 2, 1, False) == (2, 9)
    assert pad_to_requirements(5, 9, 0, 8, True) == (16, 16)
    # RRDBNet needs at least 2 pixels a side; a 1-pixel-high photo still runs, cropped back to x4.
    src = tmp_path / "strip.png"
    Image.new("RGB", (6, 1), (200, 120, 40)).save(src)
    out = tmp_path / "strip_x4.png"
    _upscale(realesrgan["x4plus"], src, out, "--precision", "fp32")
    assert Image.open(out).size == (24, 4)


def test_alpha_exif_icc_and_grayscale(realesrgan: dict[str, Path], shared_photos: Path, tmp_path: Path):
    model = realesrgan["compact"]
    src = tmp_path / "logo.png"
    rgba = np.asarray(Image.open(shared_photos / "logo.png").convert("RGBA").resize((40, 40))).copy()
    rgba[:, :, 3] = np.linspace(0, 255, 40, dtype=np.uint8)[None, :]  # a fade from transparent to opaque
    Image.fromarray(rgba).save(src)
    out = tmp_path / "logo_x4.png"
    _upscale(model, src, out)
    res = Image.open(out)
    assert res.mode == "RGBA" and res.size == (160, 160)
    expected = cv2.resize(rgba[:, :, 3], (160, 160), interpolation=cv2.INTER_CUBIC)
    assert np.abs(np.asarray(res)[:, :, 3].astype(int) - expected).max() <= 1

    src = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    exif[0x013B] = "Grandma"
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.open(shared_photos / "chelsea.png").convert("RGB").crop((100, 50, 148, 82)).save(src, exif=exif.tobytes(), icc_profile=icc)
    out = tmp_path / "phone_x4.jpg"
    _upscale(model, src, out)
    res = Image.open(out)
    assert res.size == (128, 192)
    assert res.getexif().get(0x013B) == "Grandma" and res.info.get("icc_profile") == icc

    src = tmp_path / "camera.png"
    Image.open(shared_photos / "camera.png").crop((200, 100, 240, 130)).save(src)
    out = tmp_path / "camera_x4.png"
    _upscale(model, src, out)
    assert Image.open(out).mode == "L" and Image.open(out).size == (160, 120)


class _Payload:
    """Pickles as a call to os.system that would create a file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _expect_model_error(model: Path, src: Path, tmp_path: Path, words: str) -> str:
    out = tmp_path / "never.png"
    code, events, err = run_worker("--input", src, "--output", out, "--model", model)
    assert code == 5, err
    assert events[-1]["event"] == "error" and events[-1]["code"] == "model_error"
    assert words in events[-1]["message"], events[-1]["message"]
    assert not out.exists()
    return events[-1]["message"]


def test_a_pickle_that_names_os_system_executes_nothing(crops: dict[str, Path], tmp_path: Path):
    import torch

    from infer import checkpoints
    from infer.errors import ModelError

    for name in ("evil.pth", "evil.ckpt"):
        marker = tmp_path / f"pwned_{name}"
        model = tmp_path / name
        torch.save({"params_ema": _Payload(marker)}, model)
        with pytest.raises(ModelError, match="refused"):
            checkpoints.load(model)  # in this process too
        message = _expect_model_error(model, crops["compact"], tmp_path, "refused")
        assert "system" in message
        assert not marker.exists(), "the payload ran"
    # A plain pickle (not a torch archive) with the same payload.
    marker = tmp_path / "pwned_plain"
    model = tmp_path / "plain.pth"
    model.write_bytes(pickle.dumps(_Payload(marker)))
    _expect_model_error(model, crops["compact"], tmp_path, "refused")
    assert not marker.exists(), "the payload ran"


def test_torchscript_is_refused_whatever_its_name(crops: dict[str, Path], tmp_path: Path):
    import torch

    scripted = torch.jit.script(torch.nn.Conv2d(3, 3, 3, padding=1))
    for name in ("model.pt", "disguised.pth"):
        torch.jit.save(scripted, str(tmp_path / name))
        _expect_model_error(tmp_path / name, crops["compact"], tmp_path, "TorchScript")


def test_unrecognised_checkpoint_is_refused_with_its_message(crops: dict[str, Path], tmp_path: Path):
    import torch

    model = tmp_path / "mystery.pth"
    torch.save({"encoder.weight": torch.zeros(4, 4), "decoder.bias": torch.zeros(4)}, model)
    _expect_model_error(model, crops["compact"], tmp_path, "not an architecture spandrel recognises")
    broken = tmp_path / "truncated.safetensors"
    broken.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    _expect_model_error(broken, crops["compact"], tmp_path, "cannot be read as a checkpoint")


def test_pb_engines_do_not_take_checkpoints(realesrgan: dict[str, Path], crops: dict[str, Path], tmp_path: Path):
    code, events, _ = run_worker("--input", crops["compact"], "--output", tmp_path / "o.png", "--model",
                                 realesrgan["compact"], "--engine", "opencv")
    assert code == 2 and "--engine spandrel" in events[-1]["message"]


def test_a_x4_model_serves_3x_by_reducing_its_output_and_says_so(realesrgan: dict[str, Path], crops: dict[str, Path], tmp_path: Path):
    model, src = realesrgan["compact"], crops["compact"]  # 96 x 80
    full = tmp_path / "x4.png"
    events = _upscale(model, src, full, "--precision", "fp32")
    assert events[0]["ran"] == "RealESRGAN Compact x4" and events[0]["outscale"] == 4
    out = tmp_path / "x3.png"
    events = _upscale(model, src, out, "--precision", "fp32", "--outscale", "3")
    assert events[0]["ran"] == "RealESRGAN Compact x4, reduced to 3x"
    assert events[0]["scale"] == 4 and events[0]["outscale"] == 3
    assert events[-1]["width"] == 288 and events[-1]["height"] == 240
    expected = cv2.resize(read(full), (288, 240), interpolation=cv2.INTER_AREA)
    assert np.abs(read(out).astype(int) - expected.astype(int)).max() <= 1
    code, events, _ = run_worker("--input", src, "--output", tmp_path / "x5.png", "--model", model, "--outscale", "5")
    assert code == 2 and "never enlarged" in events[-1]["message"]
    # --scale names the model's own scale; a smaller one is what --outscale is for.
    code, events, _ = run_worker("--input", src, "--output", tmp_path / "s2.png", "--model", model, "--scale", "2")
    assert code == 2 and [e["event"] for e in events] == ["error"], events
    assert "use --outscale 2 for a 2x result from this x4 model" in events[0]["message"]
    # Folder mode names results by the scale written.
    (tmp_path / "folder").mkdir()
    code, _, err = run_worker("--input", src, "--output", tmp_path / "folder", "--model", model, "--outscale", "2")
    assert code == 0, err
    assert Image.open(tmp_path / "folder" / "compact_x2.png").size == (192, 160)


def test_a_reduced_scale_is_reached_tile_by_tile_without_seams_and_keeps_alpha(realesrgan: dict[str, Path],
                                                                                crops: dict[str, Path], tmp_path: Path):
    """Each tile's output is reduced as it is pasted; the result is the whole x4 image's reduction within a level,
    colour and alpha alike."""
    rgb = np.asarray(Image.open(crops["compact"]).convert("RGB"))
    height, width = rgb.shape[:2]
    alpha = np.clip(np.add.outer(np.arange(height) * 3, np.arange(width) * 2), 0, 255).astype(np.uint8)
    alpha[:, : width // 3] = 0  # a hard edge as well as a ramp
    src = tmp_path / "rgba.png"
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(src)
    flags = ("--precision", "fp32", "--tile", str(TILES["compact"][0]))
    full, out = tmp_path / "x4.png", tmp_path / "x3.png"
    _upscale(realesrgan["compact"], src, full, *flags)
    events = _upscale(realesrgan["compact"], src, out, *flags, "--outscale", "3")
    assert events[0]["tiles"] == TILES["compact"][1] and events[0]["outscale"] == 3
    result = np.asarray(Image.open(out))
    assert Image.open(out).mode == "RGBA" and result.shape == (height * 3, width * 3, 4)
    size = (width * 3, height * 3)
    colour = cv2.resize(np.asarray(Image.open(full))[:, :, :3], size, interpolation=cv2.INTER_AREA)
    assert np.abs(result[:, :, :3].astype(int) - colour.astype(int)).max() <= 1
    alpha_x4 = cv2.resize(alpha, (width * 4, height * 4), interpolation=cv2.INTER_CUBIC)
    expected_alpha = cv2.resize(alpha_x4, size, interpolation=cv2.INTER_AREA)
    assert np.abs(result[:, :, 3].astype(int) - expected_alpha.astype(int)).max() <= 1


@pytest.mark.slow
def test_denoise_strength_blends_the_twins_weights(general_pair: Path, photo: Path, tmp_path: Path):
    model, twin = general_pair / "realesr-general-x4v3.pth", general_pair / "realesr-general-wdn-x4v3.pth"
    fp32 = ("--precision", "fp32")
    plain, wdn = tmp_path / "plain.png", tmp_path / "wdn.png"
    _upscale(model, photo, plain, *fp32)
    _upscale(twin, photo, wdn, *fp32)
    results = {}
    for strength in ("0", "0.5", "1"):
        results[strength] = tmp_path / f"s{strength}.png"
        events = _upscale(model, photo, results[strength], *fp32, "--denoise-strength", strength)
        assert events[0]["denoise_strength"] == float(strength)
    a, b, mid = read(plain).astype(int), read(wdn).astype(int), read(results["0.5"]).astype(int)
    assert np.abs(read(results["1"]).astype(int) - a).max() <= 1
    assert np.abs(read(results["0"]).astype(int) - b).max() <= 1
    apart = np.abs(a - b).mean()
    assert apart > 2  # the twins really differ
    assert 0 < np.abs(mid - a).mean() < apart and 0 < np.abs(mid - b).mean() < apart

    code, events, _ = run_worker("--input", photo, "--output", tmp_path / "x.png", "--model", model, "--denoise-strength", "1.5")
    assert code == 2 and "between 0 and 1" in events[-1]["message"]
    code, events, _ = run_worker("--input", photo, "--output", tmp_path / "x.png", "--model", twin, "--denoise-strength", "0.5")
    assert code == 2 and "realesr-general-x4v3 only" in events[-1]["message"]
    twin.unlink()
    code, events, _ = run_worker("--input", photo, "--output", tmp_path / "x.png", "--model", model, "--denoise-strength", "0.5")
    assert code == 5 and "sr-models fetch realesr-general-wdn-x4v3" in events[-1]["message"]


def test_the_face_restorer_loads_through_the_checkpoint_loader_and_is_no_upscaler(tmp_path: Path) -> None:
    # A full-size GFPGAN v1.4 layout with random weights (the real file is 348 MB and not here).
    import torch
    from spandrel.architectures.GFPGAN.__arch.gfpganv1_clean_arch import GFPGANv1Clean

    from infer import checkpoints
    from infer.errors import ModelError
    from infer.faces.restorers import GFPGANRestorer

    net = GFPGANv1Clean(out_size=512, num_style_feat=512, channel_multiplier=2, decoder_load_path=None, fix_decoder=False,
                        num_mlp=8, input_is_latent=True, different_w=True, narrow=1, sft_half=True)
    path = tmp_path / "GFPGANv1.4.pth"
    torch.save({"params_ema": net.state_dict()}, path)
    with pytest.raises(ModelError, match="FaceSR model"):
        checkpoints.load(path)
    _, info = checkpoints.load(path, purposes=("FaceSR",))
    assert info.architecture == "GFPGAN"
    restorer = GFPGANRestorer(path, device="cpu")
    faces = np.full((1, 512, 512, 3), 128, np.uint8)
    assert restorer.restore(faces).shape == faces.shape
    restorer.close()
