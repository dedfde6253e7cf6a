"""Whether jobs can run, with the operator's reason and notes, logged once each."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from infer.catalog import Catalog
from infer.scans import SCAN_COMMAND, unscanned
from web.config import Config
from web.guards.space import Space
from web.jobs.choice import catalog_for

log = logging.getLogger(__name__)

# What the person reads when the service cannot run jobs; the operator's reason goes to the log and /healthz.
UNAVAILABLE_TEXT = "Upscaling is not available right now; try again later, or ask whoever runs this server (its log says why)."


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
    withheld = catalog.withheld_note()
    refused += (withheld,) if withheld else ()
    if not catalog.models and catalog.withheld:
        return Availability(False, f"every installed model is under a licence that SR_ALLOWED_LICENCES does not "
                            f"list ({withheld}); list their licences or install a model under one it lists",
                            None, waiting, refused)
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
