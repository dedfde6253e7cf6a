"""One job's files (its repair mask among them): what counts as its leftovers in results/, and removing all of it leaves other jobs' files."""

from __future__ import annotations

import uuid
from pathlib import Path

from web.jobs.files import JobFiles


def _files(root: Path) -> JobFiles:
    job_id = str(uuid.uuid4())
    return JobFiles(job_id, f"{job_id}.jpg", f"{job_id}.png", root / "uploads", root / "results", root / "logs")


def test_leftovers_are_the_result_and_every_temporary_named_after_the_job(tmp_path: Path) -> None:
    job, other = _files(tmp_path), _files(tmp_path)
    for files in (job, other):
        files.prepare()
        files.uploads_dir.mkdir(exist_ok=True)
        for path in (files.upload, files.mask, files.result, files.log, files.cache_temp,
                     files.results_dir / f".{files.output_file}.3f9a1c.part",  # the worker's (infer/images.py)
                     files.results_dir / f".{files.job_id}.5d1e.part"):  # the Ray backend's
            path.write_bytes(b"x")

    assert sorted(p.name for p in job.leftovers(keep_result=True)) == sorted(
        [job.cache_temp.name, f".{job.output_file}.3f9a1c.part", f".{job.job_id}.5d1e.part"])
    assert job.result in job.leftovers()
    job.remove_leftovers(keep_result=True)
    assert job.result.is_file() and job.leftovers(keep_result=True) == []

    job.remove_all()
    assert not job.upload.exists() and not job.mask.exists() and not job.result.exists() and not job.log.exists()
    # The other job's files are all still there.
    assert other.upload.is_file() and other.mask.is_file() and other.log.is_file() and len(other.leftovers()) == 4
    assert job.kept_names() == {job.input_file, f"{job.job_id}.mask.png", job.output_file, f"{job.job_id}.log"}
