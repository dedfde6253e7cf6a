"""The child process that `sr-models scan` reads checkpoints in: one file at a time under an address-space cap,
each answer a JSON line on stdout; it writes no file."""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path


def _address_space() -> int:
    """This process's mapped address space in bytes (`VmSize`): the base each file's cap is counted from."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


def _answer(payload: dict) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


def main() -> int:
    """Reads `{"path", "purposes", "memory_bytes"}` requests, one JSON line each, from stdin until it closes."""
    from infer import checkpoints
    from infer.errors import ModelError

    try:
        checkpoints.require_loader()
    except checkpoints.LoaderMissing as err:
        _answer({"missing": err.message})
        return 0
    _answer({"ready": True})
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    for line in sys.stdin:
        request = json.loads(line)
        path = Path(request["path"])
        cap = _address_space() + int(request["memory_bytes"])
        resource.setrlimit(resource.RLIMIT_AS, (cap if hard == resource.RLIM_INFINITY else min(cap, hard), hard))
        try:
            info = checkpoints.load(path, served_only=False, purposes=tuple(request["purposes"]))[1]
            answer = {"info": info.to_json()}
        except ModelError as err:
            answer = {"reason": err.message}
        except MemoryError:
            answer = {"reason": f"{path.name} needs more memory to read than a checkpoint of its size should"}
        finally:
            resource.setrlimit(resource.RLIMIT_AS, (hard, hard))
        _answer(answer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
