"""What people may choose (models by scale and quality, denoise, format), time estimates, and whether jobs can run."""

from __future__ import annotations

import logging
import statistics
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from infer.catalog import QUALITIES, InstalledModel, checkpoint_model, choose, installed_models, quality_of, scales
from infer import contract
from infer.checkpoints import denoise_twin, is_checkpoint
from infer.contract import DENOISE_LEVELS
from infer.errors import ModelError, UsageError
from infer.faces.options import DEFAULT_FIDELITY, FACE_MODES, GFPGAN_FILE, GFPGAN_LICENCE, FaceMode, parse_fidelity
from infer.modelspec import spec_from_path
from infer.modelsfolder import inside
from infer.scans import SCAN_COMMAND, read_scan, unscanned
from web.config import Config
from web.disk import Space
from web.jobs import JobStore

log = logging.getLogger(__name__)

DEFAULT_DENOISE = contract.Denoise.OFF.value
# The kinds of result a person chooses between (a family's `kind`), in the page's order.
KINDS = ("restore", "faithful", "fast")
# Denoise strength and face fidelity are taken in steps of 0.01: the value a job records, passes to the worker
# and is cached under is then one and the same.
SETTING_STEP = 0.01
# What the person reads when the service cannot run jobs; the operator's reason goes to the log and /healthz.
UNAVAILABLE_TEXT = "Upscaling is not available right now; the administrator has been told."


def quantised(value: float) -> float:
    """A 0..1 setting on the SETTING_STEP grid (0.3004 -> 0.3)."""
    return round(round(value / SETTING_STEP) * SETTING_STEP, 2)


class BadChoice(Exception):
    """A request names a model, scale, quality or denoise level that is not offered; `code` says which."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def default_model(config: Config, local_file: bool = True) -> InstalledModel | None:
    """SR_MODEL_PATH as a choice; None when its name says no family, or (`local_file`) it is missing or empty."""
    path = config.model_path
    if is_checkpoint(path):
        return checkpoint_model(path)  # from its scan record: the front end never loads a checkpoint
    try:
        if local_file and (not path.is_file() or path.stat().st_size == 0):
            return None
        return InstalledModel(path.stem, spec_from_path(path))
    except (ModelError, OSError):
        return None


def offered_models(config: Config, local_file: bool = True) -> list[InstalledModel]:
    """The models folder's models plus the default one, sorted as `installed_models` sorts them."""
    models = installed_models(config.models_dir)
    default = default_model(config, local_file)
    if default is not None and all(m.id.lower() != default.id.lower() for m in models):
        models.append(default)
        models.sort(key=lambda m: (m.scale, -m.family.quality_rank, m.id))
    return models


def seconds_per_mp(store: JobStore, model: InstalledModel) -> float:
    """The median of this service's recent jobs with the model, else the family's figure from the benchmarks."""
    measured = store.recent_speeds(model.path.name)
    return round(statistics.median(measured) if measured else model.family.cpu_seconds_per_mp, 3)


def model_path_for(config: Config, model_file: str | None) -> Path:
    """Where a job's model file (its row's `model`, `EDSR_x3.pb`) is: the default's own path when it names
    that file, else in the models folder."""
    if model_file is None or model_file.lower() == config.model_path.name.lower():
        return config.model_path
    return config.models_dir / Path(model_file).name


def faces_offered(config: Config) -> bool:
    """Face restoration is offered when the models folder's GFPGAN file has an up-to-date scan record that found
    GFPGAN in it: the front end never reads the file, and a file nobody has checked is never handed to a job."""
    path = config.models_dir / GFPGAN_FILE
    scan = read_scan(path) if inside(config.models_dir, path) else None
    return scan is not None and scan.offered


def _face_refusal(config: Config) -> str | None:
    """Why the installed GFPGAN file is not used, when its scan refused it (for the operator)."""
    path = config.models_dir / GFPGAN_FILE
    scan = read_scan(path) if inside(config.models_dir, path) else None
    if scan is None or scan.offered:
        return None
    return f"{GFPGAN_FILE} is not used for faces: {scan.reason}"


def strength_offered(config: Config, model: InstalledModel) -> bool:
    """A denoise strength applies to a checkpoint whose denoise twin (realesr-general-wdn-x4v3) lies beside it."""
    twin = denoise_twin(model.path) if model.spec.checkpoint is not None else None
    try:
        return twin is not None and (config.models_dir / twin.name).is_file()
    except OSError:
        return False


def served_scales(model: InstalledModel) -> list[int]:
    """The written scales a model gives: a checkpoint's output may be reduced (from 2x up); a .pb gives its own."""
    if model.spec.checkpoint is None:
        return [model.scale]
    return list(range(min(2, model.scale), model.scale + 1))


@dataclass(frozen=True)
class Choice:
    model: InstalledModel
    denoise: str
    faces: str = FaceMode.OFF.value
    face_fidelity: float = DEFAULT_FIDELITY
    outscale: int | None = None  # the written scale where it is below the model's
    denoise_strength: float | None = None

    @property
    def scale(self) -> int:
        """The scale the result is written at."""
        return self.outscale or self.model.scale


def _strength(form: Mapping[str, str], model: InstalledModel, denoise: str, offered: bool) -> float | None:
    raw = (form.get("denoise_strength") or "").strip()
    if not raw:
        return None
    try:
        strength = float(raw)
    except ValueError:
        strength = -1.0
    if not 0.0 <= strength <= 1.0:
        raise BadChoice("bad_denoise_strength", f"denoise_strength must be a number from 0 to 1, not {raw!r}")
    if not offered:
        raise BadChoice("denoise_strength_unavailable",
                        f"denoise_strength applies only to a model whose denoise twin is installed, not {model.id}; "
                        "use denoise (off, light, strong) instead")
    if denoise != DEFAULT_DENOISE:
        raise BadChoice("bad_denoise", "denoise_strength replaces denoise for this model; send one of them")
    return quantised(strength)


def _by_kind(kind: str, scale: int | None, models: list[InstalledModel], default: InstalledModel | None) -> tuple[InstalledModel, int | None]:
    """The best model of a kind for a written scale: one of that scale, else the smallest larger one whose output
    can be reduced; with its outscale (None when it writes its own scale)."""
    of_kind = [m for m in models if m.family.kind == kind]
    if not of_kind:
        offered = [k for k in KINDS if any(m.family.kind == k for m in models)]
        raise BadChoice("kind_unavailable", f"no {kind} model is installed here; use one of: {', '.join(offered)}")
    if scale is None:
        if default is not None and default in of_kind:
            return default, None
        scale = default.scale if default is not None else of_kind[0].scale
    # At one scale, the highest quality rank, then the last id (as `choose` takes "best"); the page's modelFor
    # mirrors this rule for its estimates and options.
    rank = lambda m: (m.family.quality_rank, m.id)  # noqa: E731
    exact = [m for m in of_kind if m.scale == scale]
    if exact:
        return max(exact, key=rank), None
    larger = [m for m in of_kind if scale in served_scales(m)]
    if larger:
        smallest = min(m.scale for m in larger)
        return max((m for m in larger if m.scale == smallest), key=rank), scale
    valid = sorted({s for m in of_kind for s in served_scales(m)})
    raise BadChoice("bad_scale", f"no {kind} model gives x{scale} here; scales available for {kind}: "
                    f"{', '.join(f'x{s}' for s in valid)}")


def _face_choice(form: Mapping[str, str], offered: bool) -> tuple[str, float]:
    faces = (form.get("faces") or FaceMode.OFF.value).strip().lower()
    if faces not in FACE_MODES:
        raise BadChoice("bad_faces", f"unknown faces setting {form.get('faces')!r}; use one of: {', '.join(FACE_MODES)}")
    if faces == FaceMode.ON.value and not offered:
        raise BadChoice("faces_unavailable", "face restoration is not installed on this service; send the photo without faces=on")
    raw = (form.get("face_fidelity") or "").strip()
    try:
        fidelity = quantised(parse_fidelity(raw)) if raw else DEFAULT_FIDELITY
    except ValueError as err:
        raise BadChoice("bad_face_fidelity", str(err)) from None
    return faces, fidelity


def parse_choice(form: Mapping[str, str], models: list[InstalledModel], default: InstalledModel | None,
                 faces_offered: bool = False, config: Config | None = None) -> Choice:
    """The model, denoise and face settings a form asks for (`model`, or `kind` and `scale`, or `scale` and
    `quality`; `denoise` or `denoise_strength`; `faces` and `face_fidelity`)."""
    faces, fidelity = _face_choice(form, faces_offered)
    denoise = (form.get("denoise") or DEFAULT_DENOISE).strip().lower()
    if denoise not in DENOISE_LEVELS:
        raise BadChoice("bad_denoise", f"unknown denoise level {form.get('denoise')!r}; use one of: {', '.join(DENOISE_LEVELS)}")
    model_id = (form.get("model") or "").strip() or None
    quality = (form.get("quality") or "").strip().lower() or None
    raw_scale = (form.get("scale") or "").strip().lower().removeprefix("x") or None
    valid_scales = ", ".join(str(s) for s in scales(models))
    scale = None
    if raw_scale is not None:
        try:
            scale = int(raw_scale)
        except ValueError:
            raise BadChoice("bad_scale", f"unknown scale {form.get('scale')!r}; use one of: {valid_scales}") from None
    if quality is not None and quality not in QUALITIES:
        raise BadChoice("bad_quality", f"unknown quality {form.get('quality')!r}; use one of: {', '.join(QUALITIES)}")
    kind = (form.get("kind") or "").strip().lower() or None
    if kind is not None and kind not in KINDS:
        raise BadChoice("bad_kind", f"unknown kind {form.get('kind')!r}; use one of: {', '.join(KINDS)}")
    outscale = None
    if kind is not None and not model_id:
        model, outscale = _by_kind(kind, scale, models, default)
    else:
        try:
            model = choose(models, model_id=model_id, scale=scale, quality=quality, default=default)
        except UsageError as err:
            code = "bad_model" if model_id else "bad_scale"
            raise BadChoice(code, str(err)) from None
        if model_id and scale is not None and scale != model.scale:
            if scale not in served_scales(model):
                raise BadChoice("bad_scale", f"{model.id} gives x{model.scale} and is never enlarged further; scales "
                                f"it gives: {', '.join(f'x{s}' for s in served_scales(model))}")
            outscale = scale
        if kind is not None and model.family.kind != kind:
            raise BadChoice("kind_conflict", f"{model.id} is a {model.family.kind} model, not {kind}; send "
                            f"kind={model.family.kind} with it, or leave kind out")
    offered = config is not None and strength_offered(config, model)
    return Choice(model, denoise, faces, fidelity, outscale, _strength(form, model, denoise, offered))


@dataclass(frozen=True)
class Availability:
    """Whether jobs can run; `reason` (what is wrong and what to do) is for the operator only."""

    ok: bool
    reason: str | None = None
    # The command that fixes it, for the page's line to whoever runs the server (a missing default model).
    fix_command: str | None = None
    # Checkpoints in the models folder that cannot be offered until the worker side scans them.
    unscanned: tuple[str, ...] = ()
    # Files whose scan refused them, with the reason (the face file: a checkpoint refused is simply not listed).
    refused: tuple[str, ...] = ()

    @property
    def notes(self) -> tuple[str, ...]:
        waiting = () if not self.unscanned else (
            f"{', '.join(self.unscanned)} not offered yet: run `{SCAN_COMMAND}` where the worker is installed "
            "(it writes what the page needs beside each checkpoint)",)
        return waiting + self.refused


def availability(config: Config, backend: Any) -> Availability:
    state = _availability(config, backend)
    waiting = tuple(p.name for p in unscanned(config.models_dir)) if backend.uses_local_model else ()
    refused = _face_refusal(config)
    return dataclasses.replace(state, unscanned=waiting, refused=() if refused is None else (refused,))


def _availability(config: Config, backend: Any) -> Availability:
    health = backend.health()
    if not health.ok:
        return Availability(False, health.reason or "the backend cannot take jobs")
    if not backend.uses_local_model:
        return Availability(True)
    if default_model(config) is None:
        path = config.model_path
        fetch = f"sr-models fetch {path.stem}"
        if not path.is_file():
            what = "is missing"
        elif path.stat().st_size == 0:
            what = "is empty"
        else:
            what, fetch = "has a name that says no model family and scale", None
        return Availability(
            False,
            # Only the file name: /healthz is public even when a token is set.
            f"the default model {path.name} (SR_MODEL_PATH) {what}; fetch it with `sr-models fetch {path.stem}` "
            "(into SR_MODELS_DIR) or point SR_MODEL_PATH at a model file",
            fetch,
        )
    return Availability(True)


class HealthLog:
    """Logs each distinct operator reason once, however often it is asked about."""

    def __init__(self) -> None:
        self._said: set[str] = set()

    def note(self, state: Availability | Space) -> None:
        if state.reason and state.reason not in self._said:
            self._said.add(state.reason)
            log.error("jobs cannot run: %s", state.reason)
        # Warnings that do not stop jobs (checkpoints not yet scanned); a disk Space has none.
        for note in getattr(state, "notes", ()):
            if note not in self._said:
                self._said.add(note)
                log.warning("%s", note)


def options_json(config: Config, store: JobStore, backend: Any, state: Availability) -> dict[str, Any]:
    """The body of `GET /api/options`."""
    models = offered_models(config, local_file=backend.uses_local_model)
    default = default_model(config, local_file=backend.uses_local_model) or (models[0] if models else None)
    return {
        "models": [
            {
                "id": m.id,
                "family": m.family.name,
                "label": m.label,
                "kind": m.family.kind,
                "scale": m.scale,
                "quality": quality_of(m, models),
                "seconds_per_megapixel": seconds_per_mp(store, m),
                "scales": served_scales(m),
                "denoise_strength": strength_offered(config, m),
            }
            for m in models
        ],
        "kinds": [
            {"kind": k, "available": any(m.family.kind == k for m in models)}
            for k in KINDS
        ],
        "scales": scales(models),
        "qualities": list(QUALITIES),
        "denoise": list(DENOISE_LEVELS),
        "formats": [f.name for f in contract.OUTPUT_FORMATS],
        "format_labels": {f.name: f.label for f in contract.OUTPUT_FORMATS},
        "default": {
            "model": default.id if default else None,
            "scale": default.scale if default else None,
            "quality": quality_of(default, models) if default else None,
            "denoise": DEFAULT_DENOISE,
            "kind": default.family.kind if default else None,
        },
        "faces": {
            "available": faces_offered(config),
            "default": FaceMode.OFF.value,
            "default_fidelity": DEFAULT_FIDELITY,
            "licence": GFPGAN_LICENCE,
        },
        "available": state.ok,
        "message": None if state.ok else UNAVAILABLE_TEXT,
        "fix_command": None if state.ok else state.fix_command,
    }
