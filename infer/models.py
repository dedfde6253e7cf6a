"""Model manifest and the `sr-models` command: list, fetch (download + verify) and verify model files."""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import signal
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Mapping, Sequence

from infer import data_home, scans
from infer.checkpoints import is_checkpoint
from infer.digests import sha256_of
from infer.errors import EXIT_OK, ModelError, OutputError, UsageError, WorkerError
from infer.faces.options import GFPGAN_FILE
from infer.licences import UNKNOWN, ModelLicence
from infer.modelsfolder import links_out

# The catalog: every model's file name, sources, size and checksums; package data, so an installed copy has it.
MANIFEST_PATH = Path(__file__).with_name("manifest.json")
DEFAULT_MODEL_FILE = "EDSR_x3.pb"
CHUNK_BYTES = 1 << 20
NETWORK_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class ModelEntry:
    """One downloadable model: where it comes from and how to recognise an intact copy."""

    name: str
    file: str
    algo: str
    scale: int
    url: str
    bytes: int
    git_sha1: str | None  # the blob's id where the file lives in a git repository (None for release assets)
    sha256: str | None
    source: str = ""
    purpose: str = "upscaling"  # or "faces" (the face restorer), "face detection"
    licence: str = UNKNOWN  # its SPDX identifier (infer/licences.py)
    attribution: str = ""  # who the licence asks to name
    licence_note: str = ""  # what the identifier alone does not say

    @property
    def model_licence(self) -> ModelLicence:
        return ModelLicence(self.licence, self.attribution, self.source, self.licence_note)

    def __post_init__(self) -> None:
        if not (self.git_sha1 or self.sha256):
            raise ValueError(f"{self.name} has neither a git SHA-1 nor a SHA-256")

    def url_from(self, base_url: str | None) -> str:
        """The download URL, with its folder replaced by `base_url` when one is given (mirrors, tests)."""
        if not base_url:
            return self.url
        return base_url.rstrip("/") + "/" + urllib.parse.quote(self.file)


@dataclass(frozen=True)
class Check:
    """The outcome of checking a file on disk against its manifest entry."""

    entry: ModelEntry
    path: Path
    status: str  # "ok", "missing", "wrong size", "wrong checksum"
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def models_dir(override: str | Path | None = None, env: Mapping[str, str] | None = None) -> Path:
    """--dir, else $SR_MODELS_DIR, else models/ in the checkout or, for an installed copy, the current folder."""
    env = os.environ if env is None else env
    chosen = override or env.get("SR_MODELS_DIR")
    return Path(chosen) if chosen else data_home() / "models"


def default_model_path(env: Mapping[str, str] | None = None) -> Path:
    """The model a job uses when none is named: $SR_MODEL_PATH, else EDSR_x3.pb in the models folder."""
    return default_in(models_dir(env=env), env)


def load_manifest(path: Path = MANIFEST_PATH) -> list[ModelEntry]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return [ModelEntry(**item) for item in data["models"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"cannot read the model manifest {path}: {exc}") from None


def find_entry(name: str, entries: Sequence[ModelEntry]) -> ModelEntry:
    """Looks a model up by name or file name, case-insensitively (`EDSR_x3`, `EDSR_x3.pb`)."""
    wanted = name.lower()
    for entry in entries:
        if wanted in (entry.name.lower(), entry.file.lower()):
            return entry
    known = ", ".join(e.name for e in entries)
    raise UsageError(f"unknown model {name!r}; known models: {known}")


def catalog_licence(file_name: str, entries: Sequence[ModelEntry], *, sha256: str | None = None,
                    size: int | None = None) -> ModelLicence:
    """The licence of the catalog's file of that name, where the file is the catalog's: its SHA-256 (a scanned
    checkpoint's) or else its size is the entry's; neither given, by its name (a file on other machines).
    Any other file's licence is unknown."""
    entry = next((e for e in entries if e.file.lower() == Path(file_name).name.lower()), None)
    if entry is None:
        return ModelLicence()
    if sha256 is not None and entry.sha256 and sha256 != entry.sha256:
        return ModelLicence()
    if sha256 is None and size is not None and size != entry.bytes:
        return ModelLicence()
    return entry.model_licence


def file_digests(path: Path) -> tuple[str, str]:
    """(git blob SHA-1, SHA-256) of a file, read once."""
    git = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    sha256 = sha256_of(path, also=(git,))
    return git.hexdigest(), sha256


def _compare(entry: ModelEntry, path: Path, size: int, git_sha1: str, sha256: str) -> Check:
    if size != entry.bytes:
        return Check(entry, path, "wrong size", f"{size} bytes, expected {entry.bytes}")
    if entry.git_sha1 and git_sha1 != entry.git_sha1:
        return Check(entry, path, "wrong checksum", f"git SHA-1 {git_sha1}, expected {entry.git_sha1}")
    if entry.sha256 and sha256 != entry.sha256:
        return Check(entry, path, "wrong checksum", f"SHA-256 {sha256}, expected {entry.sha256}")
    return Check(entry, path, "ok")


def check_file(entry: ModelEntry, directory: Path, *, hashes: bool = True) -> Check:
    """Checks the copy of `entry` in `directory`: size always, checksums unless `hashes` is False."""
    path = directory / entry.file
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return Check(entry, path, "missing")
    if size != entry.bytes or not hashes:
        return _compare(entry, path, size, entry.git_sha1 or "", entry.sha256 or "")
    git_sha1, sha256 = file_digests(path)
    return _compare(entry, path, size, git_sha1, sha256)


def _offline_message(url: str, reason: object, directory: Path, entry: ModelEntry) -> str:
    host = urllib.parse.urlsplit(url).netloc or url
    return (
        f"could not reach {host} ({reason}); download {url} on a machine with internet and copy it "
        f"to {directory}/{entry.file}, or set SR_MODEL_PATH to a model file you have"
    )


def fetch(
    entry: ModelEntry,
    directory: Path,
    *,
    base_url: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Check:
    """Downloads `entry` into `directory` unless an intact copy is there; leaves nothing behind on failure.

    The bytes go to NAME.pb.part while size and checksums are computed on the fly; only a verified
    file is renamed into place. Raises ModelError (unreachable, HTTP error, interrupted, mismatch)
    or OutputError (the folder cannot be written).
    """
    existing = check_file(entry, directory)
    if existing.ok:
        return existing
    url = entry.url_from(base_url)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the models folder {directory}: {exc.strerror or exc}") from None
    part = directory / (entry.file + ".part")
    request = urllib.request.Request(url, headers={"User-Agent": "sr-models"})
    try:
        response = urllib.request.urlopen(request, timeout=NETWORK_TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        raise ModelError(
            f"{url} answered HTTP {exc.code} {exc.reason}; check the address (or --base-url / "
            "SR_MODELS_BASE_URL), or download the file by hand and copy it to "
            f"{directory}/{entry.file}"
        ) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise ModelError(_offline_message(url, reason, directory, entry)) from None

    try:
        out = part.open("wb")
    except OSError as exc:
        response.close()
        raise OutputError(f"cannot write {part}: {exc.strerror or exc}") from None
    received = 0
    declared = _content_length(response)

    def interrupted(why: str) -> ModelError:
        return ModelError(
            f"the download of {entry.name} from {url} was interrupted after {received} of {entry.bytes} "
            f"bytes ({why}); nothing was kept, run the command again"
        )

    git = hashlib.sha1(f"blob {entry.bytes}\0".encode())
    sha = hashlib.sha256()
    try:
        with response, out:
            while True:
                try:
                    chunk = response.read(CHUNK_BYTES)
                except (http.client.HTTPException, OSError) as exc:
                    raise interrupted(exc.__class__.__name__) from None
                if not chunk:
                    # read(n) returns b"" when the server hangs up early, even short of Content-Length
                    if declared is not None and received < declared:
                        raise interrupted("connection closed")
                    break
                received += len(chunk)
                if received > entry.bytes:
                    break
                git.update(chunk)
                sha.update(chunk)
                _write(out, chunk, part)
                if progress:
                    progress(received, entry.bytes)
            _write(out, b"", part, sync=True)
        result = _compare(entry, part, received, git.hexdigest(), sha.hexdigest())
        if not result.ok:
            raise ModelError(
                f"the download of {entry.name} from {url} does not match the manifest ({result.status}: "
                f"{result.detail}); nothing was kept. The source may have changed or the transfer was "
                "corrupted: try again, or download it by hand and check it with "
                f"`sr-models verify {entry.name}`"
            )
        try:
            os.replace(part, directory / entry.file)
        except OSError as exc:
            raise OutputError(f"cannot move {part} into place: {exc.strerror or exc}") from None
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return Check(entry, directory / entry.file, "ok")


def _content_length(response: http.client.HTTPResponse) -> int | None:
    try:
        return int(response.headers["Content-Length"])
    except (KeyError, TypeError, ValueError):
        return None


def _write(out: BinaryIO, data: bytes, path: Path, *, sync: bool = False) -> None:
    try:
        out.write(data)
        if sync:
            out.flush()
            os.fsync(out.fileno())
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None


# ---------------------------------------------------------------- command line


def _progress_printer(name: str) -> Callable[[int, int], None] | None:
    if not sys.stderr.isatty():
        return None
    last = [-1]

    def show(done: int, total: int) -> None:
        percent = done * 100 // max(total, 1)
        if percent != last[0]:
            last[0] = percent
            print(f"\r{name}: {done / 1e6:.1f} / {total / 1e6:.1f} MB ({percent}%)", end="", file=sys.stderr)
            if done >= total:
                print(file=sys.stderr)

    return show


def default_in(directory: Path, env: Mapping[str, str] | None = None) -> Path:
    """The default model for a models folder: $SR_MODEL_PATH when set, else EDSR_x3.pb in that folder."""
    env = os.environ if env is None else env
    chosen = env.get("SR_MODEL_PATH")
    return Path(chosen) if chosen else directory / DEFAULT_MODEL_FILE


def _same_file(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()


def _fetch_hint(path: Path, entries: list[ModelEntry]) -> str:
    known = {e.file.lower(): e.name for e in entries}
    name = known.get(path.name.lower())
    if name:
        return f"fetch it with `sr-models fetch {name}`"
    return "copy the model file there or point SR_MODEL_PATH at one you have"


CUSTOM = "custom checkpoint"


def _custom_scan(check: Check) -> scans.Scan | None:
    """The scan record of a checkpoint under a catalog entry's file name that is another file (a conversion, a
    fine-tune, another release) which the scan offers; None for the catalog's file, a missing one, or one that
    does not read as a checkpoint (a damaged download)."""
    if check.ok or check.status == "missing" or not is_checkpoint(check.path):
        return None
    scan = scans.read_scan(check.path)
    return scan if scan is not None and scan.offered else None


def _custom_meaning(entry: ModelEntry, scan: scans.Scan) -> str:
    """What a custom checkpoint under the catalog's name means, for `list` and `verify`."""
    return (f"{entry.file} is not the catalog's {entry.name} (its checksum differs): another checkpoint under that "
            f"name, used as its weights say ({scan.label}); `sr-models fetch {entry.name}` would replace it with "
            "the catalog's file")


def _says_more(licence: ModelLicence) -> bool:
    """A licence whose terms reach the people a service is offered to (Creative Commons credit, a caveat)
    is spelled out by `list` beside its identifier."""
    return bool(licence.note) or licence.id.startswith("CC-BY")


def _cmd_list(entries: list[ModelEntry], directory: Path, as_json: bool) -> int:
    checks = [check_file(e, directory, hashes=False) for e in entries]
    customs = {c.entry.name: _custom_scan(c) for c in checks}
    default = default_in(directory)
    if as_json:
        rows = [
            {"name": c.entry.name, "file": str(c.path), "algo": c.entry.algo, "scale": c.entry.scale,
             "bytes": c.entry.bytes, "url": c.entry.url, "source": c.entry.source,
             "status": "present" if c.ok else (CUSTOM if customs[c.entry.name] else c.status),
             "installed": c.ok, "default": _same_file(c.path, default), "purpose": c.entry.purpose,
             "licence": c.entry.model_licence.as_json()}
            for c in checks
        ]
        print(json.dumps({"dir": str(directory), "default": str(default), "default_installed": default.is_file(),
                          "models": rows, "checkpoints": _checkpoint_rows(directory, entries)}, indent=2))
        return EXIT_OK
    print(f"models folder: {directory}")
    kinds = {c.entry.name: f"x{c.entry.scale}" if c.entry.purpose == "upscaling" else f"({c.entry.purpose})"
             for c in checks}
    name_w = max((len(c.entry.name) for c in checks), default=0)
    algo_w = max((len(c.entry.algo) for c in checks), default=0)
    kind_w = max((len(k) for k in kinds.values()), default=0)
    licence_w = max((len(c.entry.licence) for c in checks), default=0)
    for c in checks:
        custom = customs[c.entry.name]
        state = "installed" if c.ok else ("not installed" if c.status == "missing" else CUSTOM if custom else c.status)
        mark = "  (default)" if _same_file(c.path, default) else ""
        print(f"  {c.entry.name:<{name_w}} {c.entry.algo:<{algo_w}} {kinds[c.entry.name]:<{kind_w}}  "
              f"{c.entry.bytes / 1e6:7.2f} MB  {c.entry.licence:<{licence_w}}  {state}{mark}")
        if custom:
            print(f"  {'':<{name_w}} {_custom_meaning(c.entry, custom)}")
        if _says_more(c.entry.model_licence):
            print(f"  {'':<{name_w}} licence: {c.entry.model_licence.line()}, {c.entry.source}")
    if default.is_file():
        print(f"default model: {default}")
    else:
        print(f"default model: {default} is not installed; {_fetch_hint(default, entries)}")
    _list_checkpoints(directory, entries)
    return EXIT_OK


def _checkpoint_rows(directory: Path, entries: list[ModelEntry]) -> list[dict]:
    """Every checkpoint in the folder with its scan state (offered, not offered and why, or not scanned) and
    whether it is the catalog's file (`catalog`: its SHA-256 is the entry's) or a custom checkpoint."""
    by_file = {e.file.lower(): e for e in entries}
    rows = []
    for path in [*scans.checkpoint_files(directory), *scans.face_file(directory)]:
        scan = scans.read_scan(path)
        if scan is None:
            rows.append({"file": path.name, "status": "not scanned", "reason": f"run `{scans.SCAN_COMMAND}`"})
        else:
            entry = by_file.get(path.name.lower())
            rows.append({"file": path.name, "status": _scan_status(scan),
                         "label": scan.label, "reason": scan.reason, "sha256": scan.sha256,
                         "catalog": entry is not None and scan.sha256 == entry.sha256,
                         "licence": catalog_licence(path.name, entries, sha256=scan.sha256).as_json(),
                         **({"architecture": scan.info.architecture, "scale": scan.info.scale,
                             "purpose": scan.info.purpose} if scan.info else {})})
    return rows


def _scan_status(scan: scans.Scan) -> str:
    if scan.file == GFPGAN_FILE:
        return "used for faces" if scan.offered else "not used for faces"
    return "offered" if scan.offered else "not offered"


def _list_checkpoints(directory: Path, entries: list[ModelEntry]) -> None:
    rows = _checkpoint_rows(directory, entries)
    if not rows:
        return
    print("checkpoints in the folder:")
    for row in rows:
        what = row.get("label", row["file"]) if row["status"] in ("offered", "used for faces") else row["file"]
        reason = f": {row['reason']}" if row.get("reason") else ""
        custom = f" ({CUSTOM})" if row.get("catalog") is False and not row.get("reason") else ""
        used = row["status"] in ("offered", "used for faces")
        licence = ", licence unknown" if used and not row.get("catalog") else ""
        print(f"  {what}  {row['status']}{custom}{licence}{reason}")


def _cmd_scan(directory: Path) -> int:
    """Reads every checkpoint in the folder (refusing code) and writes what the front end needs beside it."""
    found = scans.scan_folder(directory)
    for link in links_out(directory):
        print(f"{link.name}: not followed: it is a link that leads outside {directory}; copy the file in instead")
    if not found:
        print(f"no checkpoints (.safetensors, .pth, .ckpt) in {directory}")
    for scan in found:
        if scan.offered:
            print(f"{scan.file}: {_scan_status(scan)} as {scan.label} ({scan.info.purpose if scan.info else ''})")
        else:
            print(f"{scan.file}: {_scan_status(scan)}: {scan.reason}")
    return EXIT_OK


def _scan_after_fetch(fetched: list[ModelEntry], directory: Path) -> None:
    if not any(is_checkpoint(Path(e.file)) for e in fetched):
        return
    try:
        scans.scan_folder(directory, only_new=True)
    except ModelError as err:
        print(f"sr-models: fetched, but not scanned ({err.message}); the page offers checkpoints once "
              f"`{scans.SCAN_COMMAND}` has run where the worker is installed", file=sys.stderr)


@dataclass(frozen=True)
class Failed:
    """A model `fetch` could not bring in: the URL it tried and why."""

    entry: ModelEntry
    url: str
    message: str


def _fetch_summary(fetched: list[ModelEntry], present: list[ModelEntry], failed: list[Failed], directory: Path,
                   base_url: str | None) -> str:
    """What `fetch` did, and where anything failed, the two other ways to bring the files in."""
    def names(entries: list[ModelEntry]) -> str:
        return ", ".join(e.name for e in entries) if entries else "none"

    lines = [f"fetched: {names(fetched)}", f"already present: {names(present)}",
             f"failed: {names([f.entry for f in failed])}"]
    if not failed:
        return "\n".join(lines)
    lines += [f"  {f.entry.name}: {f.url}" for f in failed]
    retry = " ".join(f.entry.name for f in failed)
    mirror = "another mirror" if base_url else "a mirror"
    lines += [
        f"to bring in what failed, either use {mirror}: a folder holding the files under their own names, served "
        f"over HTTP or as file:///path/to/folder, with `sr-models fetch {retry} --base-url URL` (or "
        "SR_MODELS_BASE_URL=URL);",
        f"or download each URL above on another machine and copy the files into {directory}, then check them with "
        f"`sr-models verify {retry}`",
    ]
    return "\n".join(lines)


def _cmd_fetch(names: list[str], entries: list[ModelEntry], directory: Path, base_url: str | None) -> int:
    """Tries every named model, whatever failed before it, then says what came in and what did not."""
    wanted = [find_entry(n, entries) for n in names]
    fetched: list[ModelEntry] = []
    present: list[ModelEntry] = []
    failed: list[Failed] = []
    for entry in wanted:
        if check_file(entry, directory).ok:
            print(f"{entry.name}: already present and verified at {directory / entry.file}", file=sys.stderr)
            present.append(entry)
            continue
        url = entry.url_from(base_url)
        print(f"{entry.name}: downloading {url} ({entry.bytes / 1e6:.1f} MB)", file=sys.stderr)
        try:
            result = fetch(entry, directory, base_url=base_url, progress=_progress_printer(entry.name))
        except ModelError as err:
            print(f"{entry.name}: failed: {err.message}", file=sys.stderr)
            failed.append(Failed(entry, url, err.message))
            continue
        print(f"{entry.name}: verified and saved to {result.path}", file=sys.stderr)
        fetched.append(entry)
    _scan_after_fetch(fetched, directory)
    if len(wanted) > 1 or failed:
        print(_fetch_summary(fetched, present, failed, directory, base_url), file=sys.stderr)
    if failed:
        raise ModelError(f"{len(failed)} of {len(wanted)} models could not be fetched: "
                         f"{', '.join(f.entry.name for f in failed)}")
    return EXIT_OK


def _cmd_verify(names: list[str], entries: list[ModelEntry], directory: Path) -> int:
    wanted = [find_entry(n, entries) for n in names] if names else entries
    failures = []
    present = 0
    for entry in wanted:
        check = check_file(entry, directory)
        if check.status == "missing" and not names:
            continue
        present += 1
        custom = None if check.ok else _custom_scan(check)
        if check.ok:
            print(f"{entry.name}: ok ({check.path})")
        elif custom is not None:
            print(f"{entry.name}: {CUSTOM}: {_custom_meaning(entry, custom)}")
        else:
            detail = f" ({check.detail})" if check.detail else ""
            print(f"{entry.name}: {check.status}{detail} at {check.path}")
            failures.append(entry.name)
    if not present:
        print(f"no known models in {directory}; fetch one with `sr-models fetch EDSR_x3`")
    problems = []
    if failures:
        problems.append(
            f"{', '.join(failures)} failed verification; fetch again with `sr-models fetch {' '.join(failures)}` "
            "(a damaged copy is replaced once a good one has been downloaded)"
        )
    default = default_in(directory)
    if not default.is_file() and not names:
        problems.append(
            f"the default model {default} is missing, so jobs without --model fail; "
            f"{_fetch_hint(default, entries)} (or set SR_MODEL_PATH to an installed model)"
        )
    if problems:
        raise ModelError("; ".join(problems))
    return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sr-models", description="List, download and verify super-resolution model files."
    )
    parser.add_argument("--dir", help="models folder (default: $SR_MODELS_DIR, else models/ in the repository)")
    sub = parser.add_subparsers(dest="command", required=True)
    p_list = sub.add_parser("list", help="show the known models and which are present")
    p_list.add_argument("--json", action="store_true", help="machine-readable output")
    p_fetch = sub.add_parser("fetch", help="download models and verify their size and checksums")
    p_fetch.add_argument("names", nargs="+", metavar="NAME", help="e.g. EDSR_x3 (see `sr-models list`)")
    p_fetch.add_argument(
        "--base-url", help="download from this folder instead of each model's source, e.g. a mirror holding the files "
        "under their own names (http://host/models or file:///path/to/folder; default: $SR_MODELS_BASE_URL)"
    )
    p_verify = sub.add_parser("verify", help="check present model files against the manifest")
    p_verify.add_argument("names", nargs="*", metavar="NAME", help="models to check (default: every present one)")
    p_scan = sub.add_parser("scan", help="read the folder's checkpoints (.safetensors, .pth, .ckpt) and write what "
                            "the page needs beside each (needs the worker's install)")
    for p in (p_list, p_fetch, p_verify, p_scan):
        p.add_argument("--dir", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so a stopped download still removes its .part file.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    directory = models_dir(args.dir)
    try:
        entries = load_manifest()
        if args.command == "list":
            return _cmd_list(entries, directory, args.json)
        if args.command == "scan":
            return _cmd_scan(directory)
        if args.command == "fetch":
            base_url = args.base_url or os.environ.get("SR_MODELS_BASE_URL") or None
            return _cmd_fetch(args.names, entries, directory, base_url)
        return _cmd_verify(args.names, entries, directory)
    except WorkerError as exc:
        print(f"sr-models: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("sr-models: stopped; nothing partial was kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
