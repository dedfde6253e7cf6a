"""The form's choices read against the catalog (model, kind, scale, denoise, faces), time estimates, and whether jobs can run."""

from __future__ import annotations

import logging
import statistics
from dataclasses import dataclass
from typing import Any, Mapping

from infer import contract
from infer.catalog import KINDS, QUALITIES, Catalog, InstalledModel, NoSuchChoice, parse_ranks
from infer.contract import DENOISE_LEVELS
from infer.faces.options import DEFAULT_FIDELITY, FACE_MODES, GFPGAN_LICENCE, FaceMode, parse_fidelity
from infer.scans import SCAN_COMMAND, unscanned
from web.config import Config
from web.disk import Space
from web.errors import Refusal
from web.jobs import JobStore

log = logging.getLogger(__name__)

DEFAULT_DENOISE = contract.Denoise.OFF.value
# Denoise strength and face fidelity are taken in steps of 0.01: the value a job records, passes to the worker
# and is cached under is then one and the same.
SETTING_STEP = 0.01
# What the person reads when the service cannot run jobs; the operator's reason goes to the log and /healthz.
UNAVAILABLE_TEXT = "Upscaling is not available right now; the administrator has been told."


def quantised(value: float) -> float:
    """A 0..1 setting on the SETTING_STEP grid (0.3004 -> 0.3)."""
    return round(round(value / SETTING_STEP) * SETTING_STEP, 2)


def catalog_for(config: Config, backend: Any) -> Catalog:
    """The catalog of one request: the models folder, its scan records and SR_MODEL_PATH (taken by its name
    alone where the backend's nodes hold the files)."""
    return Catalog.load(config.models_dir, config.model_path, ranks=parse_ranks(config.model_ranks),
                        local_files=backend.uses_local_model)


def seconds_per_mp(store: JobStore, model: InstalledModel) -> float:
    """The median of this service's recent jobs with the model, else the family's figure from the benchmarks."""
    measured = store.recent_speeds(model.path.name)
    return round(statistics.median(measured) if measured else model.family.cpu_seconds_per_mp, 3)


@dataclass(frozen=True)
class Choice:
    """What a job runs: the catalog's pick, and the settings that go with it."""

    model: InstalledModel
    denoise: str
    faces: str = FaceMode.OFF.value
    face_fidelity: float = DEFAULT_FIDELITY
    outscale: int | None = None  # the written scale where it is below the model's
    denoise_strength: float | None = None
    why: str = ""  # why the catalog picked the model

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
        raise Refusal(400, "bad_denoise_strength", f"denoise_strength must be a number from 0 to 1, not {raw!r}")
    if not offered:
        raise Refusal(400, "denoise_strength_unavailable",
                        f"denoise_strength applies only to a model whose denoise twin is installed, not {model.id}; "
                        "use denoise (off, light, strong) instead")
    if denoise != DEFAULT_DENOISE:
        raise Refusal(400, "bad_denoise", "denoise_strength replaces denoise for this model; send one of them")
    return quantised(strength)


def _face_choice(form: Mapping[str, str], offered: bool) -> tuple[str, float]:
    faces = (form.get("faces") or FaceMode.OFF.value).strip().lower()
    if faces not in FACE_MODES:
        raise Refusal(400, "bad_faces", f"unknown faces setting {form.get('faces')!r}; use one of: {', '.join(FACE_MODES)}")
    if faces == FaceMode.ON.value and not offered:
        raise Refusal(400, "faces_unavailable", "face restoration is not installed on this service; send the photo without faces=on")
    raw = (form.get("face_fidelity") or "").strip()
    try:
        fidelity = quantised(parse_fidelity(raw)) if raw else DEFAULT_FIDELITY
    except ValueError as err:
        raise Refusal(400, "bad_face_fidelity", str(err)) from None
    return faces, fidelity


def parse_choice(form: Mapping[str, str], catalog: Catalog) -> Choice:
    """The model, denoise and face settings a form asks for (`model`, or `kind` and `scale`, or `scale` and
    `quality`; `denoise` or `denoise_strength`; `faces` and `face_fidelity`); the model is the catalog's pick."""
    faces, fidelity = _face_choice(form, catalog.faces_offered())
    denoise = (form.get("denoise") or DEFAULT_DENOISE).strip().lower()
    if denoise not in DENOISE_LEVELS:
        raise Refusal(400, "bad_denoise", f"unknown denoise level {form.get('denoise')!r}; use one of: {', '.join(DENOISE_LEVELS)}")
    raw_scale = (form.get("scale") or "").strip().lower().removeprefix("x") or None
    scale = None
    if raw_scale is not None:
        try:
            scale = int(raw_scale)
        except ValueError:
            valid = ", ".join(str(s) for s in catalog.scales())
            raise Refusal(400, "bad_scale", f"unknown scale {form.get('scale')!r}; use one of: {valid}") from None
    try:
        pick = catalog.pick(model_id=(form.get("model") or "").strip() or None,
                            kind=(form.get("kind") or "").strip().lower() or None,
                            quality=(form.get("quality") or "").strip().lower() or None, scale=scale)
    except NoSuchChoice as err:
        raise Refusal(400, err.code, err.message) from None
    offered = catalog.strength_offered(pick.model)
    return Choice(pick.model, denoise, faces, fidelity, pick.outscale,
                  _strength(form, pick.model, denoise, offered), pick.why)


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


def availability(config: Config, backend: Any, catalog: Catalog | None = None, *, notes: bool = True) -> Availability:
    """Jobs can run when the backend can and at least one model is installed; a configured default that is
    missing is a note with its fix, not a stop. `notes=False` leaves out the notes (unscanned and refused
    files), which read every scan record: an upload needs only whether jobs can run."""
    health = backend.health()
    if not health.ok:
        return Availability(False, health.reason or "the backend cannot take jobs")
    if not backend.uses_local_model:
        return Availability(True)
    catalog = catalog or catalog_for(config, backend)
    face = catalog.face_refusal() if notes else None
    waiting = tuple(p.name for p in unscanned(config.models_dir)) if notes else ()
    refused = (face,) if face else ()
    fix = f"sr-models fetch {config.model_path.stem}"
    if not catalog.models:
        # Only file names: /healthz is public even when a token is set.
        return Availability(False, f"no model is installed in the models folder (SR_MODELS_DIR), and the default "
                            f"model {config.model_path.name} (SR_MODEL_PATH) is missing or unusable; fetch it with "
                            f"`{fix}` or copy a model file in", fix, waiting, refused)
    stand_in = (catalog.default_note,) if catalog.default_note else ()
    return Availability(True, None, fix if stand_in else None, waiting, refused + stand_in)


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


def options_json(store: JobStore, catalog: Catalog, state: Availability) -> dict[str, Any]:
    """The body of `GET /api/options`: the models, and `table` (kind -> scale -> model id), the catalog's own
    picks, which the page shows and sends as they are."""
    default = catalog.default
    return {
        "models": [
            {
                "id": m.id,
                "family": m.family.name,
                "label": m.label,
                "kind": m.kind,
                "scale": m.scale,
                "quality": catalog.quality_of(m),
                "seconds_per_megapixel": seconds_per_mp(store, m),
                "scales": catalog.served_scales(m),
                "denoise_strength": catalog.strength_offered(m),
            }
            for m in catalog.models
        ],
        "table": {kind: {str(s): model for s, model in scales.items()} for kind, scales in catalog.table().items()},
        "kinds": [{"kind": k, "available": k in catalog.kinds()} for k in KINDS],
        "scales": catalog.scales(),
        "qualities": list(QUALITIES),
        "denoise": list(DENOISE_LEVELS),
        "formats": [f.name for f in contract.OUTPUT_FORMATS],
        "format_labels": {f.name: f.label for f in contract.OUTPUT_FORMATS},
        "default": {
            "model": default.id if default else None,
            "scale": default.scale if default else None,
            "quality": catalog.quality_of(default) if default else None,
            "denoise": DEFAULT_DENOISE,
            "kind": default.kind if default else None,
        },
        "faces": {
            "available": catalog.faces_offered(),
            "default": FaceMode.OFF.value,
            "default_fidelity": DEFAULT_FIDELITY,
            "licence": GFPGAN_LICENCE,
        },
        "available": state.ok,
        "message": None if state.ok else UNAVAILABLE_TEXT,
        "fix_command": None if state.ok else state.fix_command,
    }
