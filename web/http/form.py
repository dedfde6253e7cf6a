"""The upload form read against the request's catalog (model, kind, scale, denoise, faces), and `GET /api/options`."""

from __future__ import annotations

from typing import Any, Mapping

from infer import contract
from infer.catalog import KINDS, QUALITIES, Catalog, InstalledModel, NoSuchChoice
from infer.contract import COLOUR_MODES, DENOISE_LEVELS, MASK_FORMATS, REPAIR_MODES, Colour, Repair
from infer.faces.options import DEFAULT_FIDELITY, FACE_MODES, GFPGAN_LICENCE, FaceMode, parse_fidelity
from web.config import Config
from web.guards.health import UNAVAILABLE_TEXT, Availability
from web.http.errors import Refusal
from web.jobs.choice import DEFAULT_DENOISE, Choice, quantised, seconds_per_mp, start_seconds
from web.jobs.store import JobStore


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


def _mode(form: Mapping[str, str], name: str, modes: tuple[str, ...], default: str) -> str:
    value = (form.get(name) or default).strip().lower()
    if value not in modes:
        raise Refusal(400, f"bad_{name}", f"unknown {name} setting {form.get(name)!r}; use one of: {', '.join(modes)}")
    return value


def parse_choice(form: Mapping[str, str], catalog: Catalog) -> Choice:
    """The model, denoise, face, repair and colour settings a form asks for (`model`, or `kind` and `scale`, or
    `scale` and `quality`; `denoise` or `denoise_strength`; `faces` and `face_fidelity`; `repair`, `colour`); the
    model is the catalog's pick."""
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
                  _strength(form, pick.model, denoise, offered), pick.why,
                  _mode(form, "repair", REPAIR_MODES, Repair.OFF.value),
                  _mode(form, "colour", COLOUR_MODES, Colour.OFF.value))


def family_name(model: InstalledModel) -> str:
    """The family as the page names it: "LapSRN", "EDSR", "RealESRGAN Compact"."""
    if model.spec.checkpoint is not None:
        return model.spec.checkpoint.architecture_name
    return model.family.display_name


def options_json(store: JobStore, catalog: Catalog, state: Availability, config: Config) -> dict[str, Any]:
    """The body of `GET /api/options`: the models, and `table` (kind -> scale -> model id), the catalog's own
    picks, which the page shows and sends as they are. A job's expected time is `start_seconds` plus its input
    megapixels times its model's `seconds_per_megapixel`."""
    default = catalog.default
    return {
        "start_seconds": start_seconds(store, config),
        "models": [
            {
                "id": m.id,
                "family": m.family.name,
                "family_name": family_name(m),
                "label": m.label,
                "kind": m.kind,
                "scale": m.scale,
                "quality": catalog.quality_of(m),
                "seconds_per_megapixel": seconds_per_mp(store, m),
                "scales": catalog.served_scales(m),
                "denoise_strength": catalog.strength_offered(m),
                "licence": m.licence.as_json(),
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
        "repair": {
            "modes": list(REPAIR_MODES),
            "default": Repair.OFF.value,
            # An optional file field beside `image`: non-zero pixels (its alpha where it has transparency,
            # else its grey level) are repaired; the photo's size as shown, within its own limit.
            "mask": {"field": "repair_mask", "formats": [f.lower() for f in MASK_FORMATS],
                     "max_mb": round(config.max_mask_bytes / 2**20, 3)},
        },
        "colour": {"modes": list(COLOUR_MODES), "default": Colour.OFF.value},
        "available": state.ok,
        "message": None if state.ok else UNAVAILABLE_TEXT,
        "fix_command": None if state.ok else state.fix_command,
    }
