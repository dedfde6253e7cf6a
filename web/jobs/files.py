"""The files of one job: its upload, result and log, the temporaries written beside the result, and their removal."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from web.config import Config
    from web.jobs.store import Job

# An upload being received, before its checks pass and it is renamed to its job's upload name.
INCOMING_PREFIX = ".incoming-"


def upload_name(job_id: str, ext: str) -> str:
    return f"{job_id}.{ext}"


def incoming_name(job_id: str) -> str:
    return f"{INCOMING_PREFIX}{job_id}"


def result_name(job_id: str, output_format: str) -> str:
    return f"{job_id}.{output_format}"


def mask_name(job_id: str) -> str:
    """The job's repair mask beside its upload (always PNG)."""
    return f"{job_id}.mask.png"


@dataclass(frozen=True)
class JobFiles:
    """Where one job's files are. Every temporary a writer of the result makes beside it (the worker's
    `.{result}.<random>.part`, the Ray backend's `.{id}.<random>.part`, the cache's `.{id}.cached`) starts
    with `.{id}.`, so that what a job leaves behind is found by its name alone."""

    job_id: str
    input_file: str
    output_file: str
    uploads_dir: Path
    results_dir: Path
    logs_dir: Path

    @classmethod
    def named(cls, config: "Config", job_id: str, input_file: str, output_file: str) -> "JobFiles":
        return cls(job_id, input_file, output_file, config.uploads_dir, config.results_dir, config.logs_dir)

    @classmethod
    def of(cls, config: "Config", job: "Job") -> "JobFiles":
        return cls.named(config, job.id, job.input_file, job.output_file)

    @property
    def upload(self) -> Path:
        return self.uploads_dir / self.input_file

    @property
    def mask(self) -> Path:
        """The job's repair mask, where it was sent one."""
        return self.uploads_dir / mask_name(self.job_id)

    @property
    def result(self) -> Path:
        return self.results_dir / self.output_file

    @property
    def log(self) -> Path:
        return self.logs_dir / f"{self.job_id}.log"

    @property
    def cache_temp(self) -> Path:
        """Where the cache links a reused result before renaming it into place."""
        return self.results_dir / f".{self.job_id}.cached"

    @property
    def temp_prefix(self) -> str:
        """How the names of this job's temporaries in results/ begin."""
        return f".{self.job_id}."

    def kept_names(self) -> set[str]:
        """The names a live job's own files have in uploads/, results/ and logs/ (the sweep leaves them)."""
        return {self.upload.name, self.mask.name, self.result.name, self.log.name}

    def leftovers(self, keep_result: bool = False) -> list[Path]:
        """What is in results/ for this job: its temporaries, and the result itself unless `keep_result`."""
        if not self.results_dir.is_dir():
            return []
        return [
            path
            for path in self.results_dir.iterdir()
            if path.name.startswith(self.temp_prefix) or (path.name == self.output_file and not keep_result)
        ]

    def remove_leftovers(self, keep_result: bool = False) -> None:
        for path in self.leftovers(keep_result):
            path.unlink(missing_ok=True)

    def remove_upload(self) -> None:
        """The photo and its repair mask: the mask has no use without it."""
        self.upload.unlink(missing_ok=True)
        self.mask.unlink(missing_ok=True)

    def remove_log(self) -> None:
        self.log.unlink(missing_ok=True)

    def remove_all(self) -> None:
        """Everything of the job: upload and mask, result, temporaries and log."""
        self.remove_upload()
        self.remove_log()
        self.remove_leftovers()

    def prepare(self) -> None:
        """The folders a worker writes into."""
        self.results_dir.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
