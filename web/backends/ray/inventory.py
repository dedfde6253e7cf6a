"""What a worker node has: the model files in its models folder, listed by a small task run on that node."""

from __future__ import annotations

import os
from pathlib import Path


def list_node_models() -> tuple[str, list[str]]:
    """(this node's models folder, the file names in it): the folder a job's model is looked up in here."""
    from infer.models import models_dir

    folder = models_dir(env=os.environ)
    try:
        names = sorted(p.name for p in Path(folder).iterdir() if p.is_file() and not p.name.startswith("."))
    except OSError:
        names = []
    return str(folder), names
