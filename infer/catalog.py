"""The catalog: the models one request may use, and the one rule that picks a job's model (standard library only)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Mapping, Sequence

from infer.checkpoints import DENOISE_TWINS, denoise_twin, is_checkpoint
from infer.errors import ModelError, UsageError
from infer.families import Family
from infer.licences import ModelLicence, is_allowed, parse_allowed, withheld_reason
from infer.models import DEFAULT_MODEL_FILE, ModelEntry, catalog_licence, default_in, load_manifest
from infer.models import models_dir as folder_from_env
from infer.faces.options import GFPGAN_FILE
from infer.modelsfolder import files_in, inside
from infer.modelspec import ModelSpec, spec_from_path
from infer.scans import Scan, checkpoint_files, read_scan


class NoSuchChoice(UsageError):
    """A request names a model, kind, scale or quality that nothing installed gives; `code` says which (the
    API's error code), the message lists the valid values."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


class Quality(str, Enum):
    BEST = "best"  # the highest tier installed at a scale (EDSR, then LapSRN and the checkpoints)
    FAST = "fast"  # the lowest tier (ESPCN, FSRCNN)


QUALITIES = tuple(q.value for q in Quality)
# The kinds of result a person chooses between (a family's `kind`), in the page's order.
KINDS = ("restore", "faithful", "fast")

# The community's photo models rank above RealESRGAN_x4plus: each was trained on degraded photographs (JPEG,
# noise, blur, the web's resizing) where x4plus was trained on general images. Provisional, from what their
# authors publish and not yet measured here on real weights (none are on this project's test machines); revise
# them from docs/benchmarks.md once they are. The transformer (DAT) restores the most but is the slowest by far:
# on a CPU the page's estimate says so before a job starts.
_PHOTO_RANKS = {"4xRealWebPhoto_v4_dat2": 44, "4xNomosWebPhoto_RealPLKSR": 42, "4xNomosWebPhoto_esrgan": 38,
                "4xPurePhoto-span": 34}

# Declared ranks within a family's tier, by file stem: higher is picked first. For photos RealESRGAN_x4plus
# restores more than the general Compact model, which restores more than the anime and video models; among the
# light networks FSRCNN is the sharper. A checkpoint not named here ranks 0, below every catalog model of its
# kind, unless the operator ranks it (SR_MODEL_RANKS).
RANKS: dict[str, int] = {
    "RealESRGAN_x4plus": 30, "RealESRGAN_x2plus": 30, "realesr-general-x4v3": 20,
    "realesr-animevideov3": 5, "RealESRGAN_x4plus_anime_6B": 5,
    **_PHOTO_RANKS,
    **{f"FSRCNN_x{s}": 3 for s in (2, 3, 4)}, **{f"ESPCN_x{s}": 2 for s in (2, 3, 4)}, "FSRCNN-small_x3": 1,
    **{f"EDSR_x{s}": 1 for s in (2, 3, 4)}, **{f"LapSRN_x{s}": 1 for s in (2, 4, 8)},
}
# A denoise twin is blended into its model, never offered as one of its own.
_TWIN_STEMS = frozenset(DENOISE_TWINS.values())


@dataclass(frozen=True)
class InstalledModel:
    """One usable model file: its id is the file name without its extension (`EDSR_x3`)."""

    id: str
    spec: ModelSpec
    licence: ModelLicence = ModelLicence()  # the catalog's, where the file is the catalog's own

    @property
    def family(self) -> Family:
        return self.spec.family

    @property
    def scale(self) -> int:
        return self.spec.scale

    @property
    def path(self) -> Path:
        return self.spec.path

    @property
    def label(self) -> str:
        """How the page names it: the family's label for a .pb; file name, architecture and scale for a checkpoint."""
        info = self.spec.checkpoint
        if info is not None:
            return f"{self.id} ({info.architecture_name} x{info.scale})"
        return self.family.label or self.family.name

    @property
    def kind(self) -> str:
        return self.family.kind


def checkpoint_model(path: Path, entries: list[ModelEntry] | None = None) -> InstalledModel | None:
    """A checkpoint as its scan record describes it (no PyTorch needed); None when unscanned, stale or not offered."""
    scan = read_scan(path)
    if scan is None or not scan.offered or scan.info is None:
        return None
    spec = ModelSpec(path=path, algo=scan.info.architecture.lower(), scale=scan.info.scale, checkpoint=scan.info)
    licence = catalog_licence(path.name, _entries(entries), sha256=scan.sha256)
    return InstalledModel(path.stem, spec, licence)


def _entries(entries: list[ModelEntry] | None) -> list[ModelEntry]:
    try:
        return load_manifest() if entries is None else entries
    except ModelError:
        return []


def model_at(path: Path, *, local_file: bool = True, entries: list[ModelEntry] | None = None) -> InstalledModel | None:
    """The model file at `path` as a choice (a .pb by its name, a checkpoint by its scan record), or None;
    `local_file=False` takes a .pb by its name alone (a file on other machines)."""
    try:
        if is_checkpoint(path):
            return checkpoint_model(path, entries)
        if local_file and (not path.is_file() or path.stat().st_size == 0):
            return None
        size = path.stat().st_size if local_file else None
        return InstalledModel(path.stem, spec_from_path(path), catalog_licence(path.name, _entries(entries), size=size))
    except (ModelError, OSError):
        return None


def installed_models(folder: Path, entries: list[ModelEntry] | None = None) -> list[InstalledModel]:
    """Every non-empty `*.pb` in `folder` whose name says its family and scale, and every checkpoint whose scan
    record offers it (denoise twins aside), sorted by scale, then as `Catalog` ranks them."""
    entries = _entries(entries)
    paths = [*(p for p in files_in(Path(folder)) if p.suffix == ".pb"), *checkpoint_files(Path(folder))]
    found = [m for m in (model_at(p, entries=entries) for p in paths) if m is not None and m.id not in _TWIN_STEMS]
    return sorted(found, key=lambda m: _order_key(m, {}))


def parse_ranks(text: str | None) -> dict[str, int]:
    """`SR_MODEL_RANKS` ("my-model=40,other=2") as a mapping; ValueError naming the bad entry."""
    ranks: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        name, sep, value = item.partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            ranks[name.strip()] = int(value)
        except ValueError:
            raise ValueError(f"{item!r} is not <model id>=<whole number>") from None
    return ranks


def _rank_key(model: InstalledModel, ranks: Mapping[str, int]) -> tuple[int, int, str]:
    """Higher is better: the family's tier, then the operator's or the declared rank, then the id without case."""
    declared = ranks.get(model.id, RANKS.get(model.id, 0))
    return model.family.quality_rank, declared, model.id.casefold()


def served_scales(scale: int) -> list[int]:
    """The one rule for the scales a model of `scale` writes, for the page, the API and the worker: its own, or
    any from 2 up to it, its output area-reduced tile by tile; never enlarged further."""
    return list(range(min(2, scale), scale + 1))


def _order_key(model: InstalledModel, ranks: Mapping[str, int]) -> tuple[int, int, int, str]:
    """How lists show models: by scale, then best first."""
    tier, declared, name = _rank_key(model, ranks)
    return model.scale, -tier, -declared, name


@dataclass(frozen=True)
class Pick:
    """A job's model, the scale its result is written at, and why it was picked (for logs and the job row)."""

    model: InstalledModel
    outscale: int | None  # the written scale where it is below the model's own
    why: str

    @property
    def scale(self) -> int:
        return self.outscale or self.model.scale


class Catalog:
    """The models one request may use: the models folder's, by their files and scan records, and the default."""

    def __init__(self, models: list[InstalledModel], default: InstalledModel | None, *, configured_default: Path,
                 models_dir: Path, ranks: Mapping[str, int] | None = None, default_note: str | None = None,
                 allowed_licences: frozenset[str] | None = None, withheld: Mapping[str, ModelLicence] | None = None):
        self.ranks = dict(ranks or {})
        self.allowed_licences = allowed_licences  # None: every licence (SR_ALLOWED_LICENCES unset)
        # Installed models not offered because of their licence: id -> that licence, for the operator.
        self.withheld = dict(withheld or {})
        self.models = sorted(models, key=lambda m: _order_key(m, self.ranks))
        self.default = default
        self.configured_default = configured_default
        self.models_dir = models_dir
        # Set when the configured default is missing and another model stands in: what is wrong, and the fix.
        self.default_note = default_note

    @classmethod
    def load(cls, models_dir: Path, configured_default: Path | None = None, *, ranks: Mapping[str, int] | None = None,
             local_files: bool = True, elsewhere: Sequence[InstalledModel] = (),
             allowed_licences: frozenset[str] | None = None) -> "Catalog":
        """From the folder, its scan records and the configured default (SR_MODEL_PATH, else EDSR_x3.pb in the
        folder). `local_files=False`: the default is taken by its name, its file being on other machines.
        `elsewhere`: models other machines have (the Ray nodes' reports), offered too; the default among them.
        `allowed_licences` (SR_ALLOWED_LICENCES) leaves out every model under another licence."""
        configured = Path(configured_default) if configured_default else Path(models_dir) / DEFAULT_MODEL_FILE
        entries = _entries(None)
        models = installed_models(Path(models_dir), entries)
        here = {m.id.lower() for m in models}
        models += [m for m in elsewhere if m.id.lower() not in here]
        default = model_at(configured, local_file=local_files, entries=entries) or next(
            (m for m in models if m.path.name.lower() == configured.name.lower()), None)
        if default is not None and all(m.id.lower() != default.id.lower() for m in models):
            models.append(default)
        withheld = {m.id: m.licence for m in models if not is_allowed(m.licence, allowed_licences)}
        models = [m for m in models if m.id not in withheld]
        if default is not None and default.id in withheld:
            default = None
        catalog = cls(models, default, configured_default=configured, models_dir=Path(models_dir), ranks=ranks,
                      allowed_licences=allowed_licences, withheld=withheld)
        if default is None and catalog.models:
            stand_in = catalog._stand_in()
            catalog.default = stand_in
            if configured.stem in withheld:
                catalog.default_note = (f"the default model {withheld_reason(configured.name, withheld[configured.stem])}"
                                        f", so {stand_in.id} is the default; list its licence in "
                                        "SR_ALLOWED_LICENCES or set SR_MODEL_PATH")
            else:
                catalog.default_note = (f"the default model {configured.name} is not installed, so {stand_in.id} is "
                                        f"the default; fetch it with `sr-models fetch {configured.stem}` or set "
                                        "SR_MODEL_PATH")
        return catalog

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Catalog":
        """The worker's catalog: SR_MODELS_DIR (else the install's models/), SR_MODEL_PATH and SR_MODEL_RANKS."""
        env = os.environ if env is None else env
        folder = folder_from_env(env=env)
        try:
            ranks = parse_ranks(env.get("SR_MODEL_RANKS"))
            allowed = parse_allowed(env.get("SR_ALLOWED_LICENCES"))
        except ValueError as err:
            raise UsageError(f"SR_MODEL_RANKS or SR_ALLOWED_LICENCES: {err}") from None
        return cls.load(folder, default_in(folder, env), ranks=ranks, allowed_licences=allowed)

    def _rank(self, model: InstalledModel) -> tuple[int, int, str]:
        return _rank_key(model, self.ranks)

    def _stand_in(self) -> InstalledModel:
        """The best model at the configured default's scale and kind where there is one, else the best there is."""
        want = model_at(self.configured_default, local_file=False)
        scale, kind = (want.scale, want.kind) if want else (3, "faithful")
        return max(self.models, key=lambda m: (m.scale == scale, m.kind == kind, self._rank(m)))

    def best(self, models: list[InstalledModel]) -> InstalledModel:
        return max(models, key=self._rank)

    def scales(self) -> list[int]:
        return sorted({m.scale for m in self.models})

    def served_scales(self, model: InstalledModel) -> list[int]:
        return served_scales(model.scale)

    def strength_offered(self, model: InstalledModel) -> bool:
        """A denoise strength applies to a checkpoint whose denoise twin (realesr-general-wdn-x4v3) lies beside it."""
        twin = denoise_twin(model.path) if model.spec.checkpoint is not None else None
        return twin is not None and inside(self.models_dir, self.models_dir / twin.name)

    def _face_scan(self) -> Scan | None:
        path = self.models_dir / GFPGAN_FILE
        return read_scan(path) if inside(self.models_dir, path) else None

    def withheld_note(self) -> str | None:
        """The installed models SR_ALLOWED_LICENCES leaves out, with their licences, on one line (for /healthz)."""
        if not self.withheld:
            return None
        return "not offered because SR_ALLOWED_LICENCES does not list their licence: " + ", ".join(
            f"{name} ({licence.id})" for name, licence in sorted(self.withheld.items()))

    def _face_licence(self, scan: Scan) -> ModelLicence:
        return catalog_licence(GFPGAN_FILE, _entries(None), sha256=scan.sha256)

    def faces_offered(self) -> bool:
        """Face restoration is offered when the folder's GFPGAN file has an up-to-date scan record that found
        GFPGAN in it, under a licence the service allows: the front end never reads the file, and a file nobody
        has checked is never handed to a job."""
        scan = self._face_scan()
        return (scan is not None and scan.offered
                and is_allowed(self._face_licence(scan), self.allowed_licences))

    def face_refusal(self) -> str | None:
        """Why the installed GFPGAN file is not used, when its scan or its licence refused it (for the operator)."""
        scan = self._face_scan()
        if scan is None:
            return None
        if not scan.offered:
            return f"{GFPGAN_FILE} is not used for faces: {scan.reason}"
        licence = self._face_licence(scan)
        if is_allowed(licence, self.allowed_licences):
            return None
        return f"{withheld_reason(GFPGAN_FILE, licence)}, so faces are not restored"

    def kinds(self) -> list[str]:
        return [k for k in KINDS if any(m.kind == k for m in self.models)]

    def quality_of(self, model: InstalledModel) -> str:
        """"best" for the highest tier installed at the model's scale, else "fast"."""
        top = max(m.family.quality_rank for m in self.models if m.scale == model.scale)
        return Quality.BEST.value if model.family.quality_rank >= top else Quality.FAST.value

    def find(self, model_id: str) -> InstalledModel:
        for m in self.models:
            if m.id.lower() == model_id.lower():
                return m
        if any(w.lower() == model_id.lower() for w in self.withheld):
            raise NoSuchChoice("bad_model", f"{model_id} is not offered on this service; use one of: "
                               f"{', '.join(m.id for m in self.models)}")
        raise NoSuchChoice("bad_model", f"unknown model {model_id!r}; installed: {', '.join(m.id for m in self.models)}")

    def _of_kind(self, kind: str, scale: int | None) -> Pick:
        of_kind = [m for m in self.models if m.kind == kind]
        if not of_kind:
            raise NoSuchChoice("kind_unavailable", f"no {kind} model is installed here; use one of: {', '.join(self.kinds())}")
        if scale is None:
            if self.default is not None and self.default in of_kind:
                return Pick(self.default, None, f"the default, a {kind} model")
            scale = self.default.scale if self.default is not None else of_kind[0].scale
        exact = [m for m in of_kind if m.scale == scale]
        if exact:
            return Pick(self.best(exact), None, f"the best {kind} model at x{scale}")
        larger = [m for m in of_kind if scale in self.served_scales(m)]
        if larger:
            smallest = min(m.scale for m in larger)
            model = self.best([m for m in larger if m.scale == smallest])
            return Pick(model, scale, f"no {kind} model at x{scale}: the best at x{smallest}, reduced to x{scale}")
        valid = sorted({s for m in of_kind for s in self.served_scales(m)})
        raise NoSuchChoice("bad_scale", f"no {kind} model gives x{scale} here; scales available for {kind}: "
                         f"{', '.join(f'x{s}' for s in valid)}")

    def pick(self, model_id: str | None = None, kind: str | None = None, quality: str | None = None,
             scale: int | None = None) -> Pick:
        """The one rule for a job's model: a named model (at a smaller `scale` it serves); else the best of a
        `kind` at `scale` (else the smallest larger one, reduced); else the best (or fastest) at `scale`; else
        the default. UsageError, with the valid values, when nothing installed matches."""
        if not self.models:
            raise ModelError(f"no model is installed in {self.models_dir}; fetch one with `sr-models fetch EDSR_x3` "
                             "(or FSRCNN_x3 for a fast one), or copy a model file in")
        if quality is not None and quality not in QUALITIES:
            raise NoSuchChoice("bad_quality", f"unknown quality {quality!r}; use one of: {', '.join(QUALITIES)}")
        if kind is not None and kind not in KINDS:
            raise NoSuchChoice("bad_kind", f"unknown kind {kind!r}; use one of: {', '.join(KINDS)}")
        if model_id:
            model = self.find(model_id)
            if kind is not None and model.kind != kind:
                raise NoSuchChoice("kind_conflict", f"{model.id} is a {model.kind} model, not {kind}; send kind={model.kind} with it, "
                                 "or leave kind out")
            if scale is None or scale == model.scale:
                return Pick(model, None, "named")
            if scale not in self.served_scales(model):
                raise NoSuchChoice("bad_scale", f"{model.id} gives x{model.scale} and is never enlarged further; scales it gives: "
                                 f"{', '.join(f'x{s}' for s in self.served_scales(model))}")
            return Pick(model, scale, f"named, reduced to x{scale}")
        if kind is not None:
            return self._of_kind(kind, scale)
        if scale is None and quality is None:
            assert self.default is not None
            return Pick(self.default, None, "the default")
        at = f"x{scale}"
        if scale is None:
            scale = self.default.scale if self.default is not None else self.models[0].scale
            at = f"x{scale}, the default model's scale"
        at_scale = [m for m in self.models if m.scale == scale]
        if not at_scale:
            raise NoSuchChoice("bad_scale", f"no model for x{scale} is installed; scales available: "
                             f"{', '.join(f'x{s}' for s in self.scales())}")
        if quality == Quality.FAST.value:
            lowest = min(m.family.quality_rank for m in at_scale)
            return Pick(self.best([m for m in at_scale if m.family.quality_rank == lowest]), None, f"the fastest at {at}")
        return Pick(self.best(at_scale), None, f"the best at {at}")

    def table(self) -> dict[str, dict[int, str]]:
        """kind -> written scale -> the model id `pick(kind=, scale=)` gives: what the page shows and sends."""
        out: dict[str, dict[int, str]] = {}
        for kind in self.kinds():
            scales = sorted({s for m in self.models if m.kind == kind for s in self.served_scales(m)})
            out[kind] = {s: self._of_kind(kind, s).model.id for s in scales}
        return out

    def path_of(self, file_name: str) -> Path:
        return model_file_path(file_name, self.models_dir, self.configured_default)


def model_file_path(file_name: str, models_dir: Path, configured_default: Path) -> Path:
    """Where a job's model file (`EDSR_x3.pb`) is on this machine: the configured default's own path when it
    names that file, else in the models folder. The local runner and Ray nodes alike ask this."""
    if file_name.lower() == configured_default.name.lower():
        return configured_default
    return models_dir / Path(file_name).name
