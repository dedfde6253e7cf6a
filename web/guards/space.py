"""Free space in the data folder: what `/healthz` reports, when uploads are refused (SR_MIN_FREE_MB), what a full disk looks like."""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
from dataclasses import dataclass

from web.config import Config
from web.http.errors import Refusal

# What the person reads; what to do about it goes to the log and /healthz.
OUT_OF_SPACE_MESSAGE = "the server is out of space; try again later"


def out_of_space() -> Refusal:
    """The refusal of an upload that does not fit (the reason went to the log and /healthz)."""
    return Refusal(507, "out_of_space", OUT_OF_SPACE_MESSAGE, retry_after=60)
REMEDY = (
    "free space on the data folder's filesystem (SR_DATA_DIR): remove old results or give it more room; "
    "finished jobs are removed after SR_RESULT_TTL_H"
)
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
SQLITE_FULL = 13  # sqlite3.SQLITE_FULL from Python 3.11 on; before it, only SQLite's message says so
_MB = 1024 * 1024


@dataclass(frozen=True)
class Space:
    """The free space of the data folder's filesystem against SR_MIN_FREE_MB."""

    free_mb: float
    min_free_mb: float

    @property
    def ok(self) -> bool:
        return self.free_mb >= self.min_free_mb

    @property
    def reason(self) -> str | None:
        """For the operator; no paths and no changing numbers, so that the log says it once."""
        if self.ok:
            return None
        return (f"the data folder has less free space than SR_MIN_FREE_MB ({self.min_free_mb:g} MB), so uploads "
                f"are refused; {REMEDY}")

    def as_json(self) -> dict[str, object]:
        return {"free_mb": round(self.free_mb, 1), "min_free_mb": self.min_free_mb, "ok": self.ok}


def data_space(config: Config) -> Space:
    """The least free space among the folders the service writes to (they may be mounted apart). A
    filesystem of no size (procfs, some FUSE ones) keeps no account of space and is left out."""
    folders = (config.uploads_dir, config.results_dir, config.state_dir)
    usages = [shutil.disk_usage(folder) for folder in folders if folder.is_dir()]
    free = [usage.free for usage in usages if usage.total > 0]
    return Space(min(free, default=0) / _MB, config.min_free_mb)


def is_out_of_space(err: BaseException) -> bool:
    """A write that failed because the filesystem (or the user's quota) is full, SQLite's included."""
    if isinstance(err, OSError):
        return err.errno in _NO_SPACE
    if isinstance(err, sqlite3.Error):
        return getattr(err, "sqlite_errorcode", None) == SQLITE_FULL or "database or disk is full" in str(err)
    return False


def says_out_of_space(message: str) -> bool:
    """Whether a worker's message reports a full filesystem (it carries the system's own text for it)."""
    return any(os.strerror(code) in message for code in _NO_SPACE)
