"""Counters and a job-duration histogram kept by the service, rendered in Prometheus text format."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

# Upper bounds (seconds) of the job duration histogram: small photos take seconds, big EDSR jobs minutes.
JOB_SECONDS_BUCKETS = (1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)


@dataclass
class Metrics:
    """Process-lifetime counters; gauges (queue length, jobs by state) are read at scrape time."""

    jobs_finished: dict[str, int] = field(default_factory=dict)
    uploads_rejected: dict[int, int] = field(default_factory=dict)
    bucket_counts: list[int] = field(default_factory=lambda: [0] * len(JOB_SECONDS_BUCKETS))
    seconds_sum: float = 0.0
    seconds_count: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def job_finished(self, outcome: str, seconds: float | None) -> None:
        """outcome is "done" or the failure's error code."""
        with self._lock:
            self.jobs_finished[outcome] = self.jobs_finished.get(outcome, 0) + 1
            if seconds is None:
                return
            self.seconds_sum += seconds
            self.seconds_count += 1
            for i, bound in enumerate(JOB_SECONDS_BUCKETS):
                if seconds <= bound:
                    self.bucket_counts[i] += 1

    def upload_rejected(self, status: int) -> None:
        with self._lock:
            self.uploads_rejected[status] = self.uploads_rejected.get(status, 0) + 1

    def render(self, *, queue_length: int, workers_running: int, jobs_by_state: dict[str, int]) -> str:
        with self._lock:
            finished = dict(self.jobs_finished)
            rejected = dict(self.uploads_rejected)
            buckets = list(self.bucket_counts)
            total, count = self.seconds_sum, self.seconds_count
        lines = [
            "# HELP sr_jobs_finished_total Jobs finished since the service started, by outcome (done or the error code).",
            "# TYPE sr_jobs_finished_total counter",
        ]
        lines += [f'sr_jobs_finished_total{{outcome="{k}"}} {v}' for k, v in sorted(finished.items())]
        lines += [
            "# HELP sr_uploads_rejected_total Uploads refused before queueing, by HTTP status.",
            "# TYPE sr_uploads_rejected_total counter",
        ]
        lines += [f'sr_uploads_rejected_total{{status="{k}"}} {v}' for k, v in sorted(rejected.items())]
        lines += [
            "# HELP sr_queue_length Jobs waiting for a worker.",
            "# TYPE sr_queue_length gauge",
            f"sr_queue_length {queue_length}",
            "# HELP sr_workers_running Worker processes alive now.",
            "# TYPE sr_workers_running gauge",
            f"sr_workers_running {workers_running}",
            "# HELP sr_jobs Jobs in the store by state.",
            "# TYPE sr_jobs gauge",
        ]
        lines += [f'sr_jobs{{state="{k}"}} {v}' for k, v in sorted(jobs_by_state.items())]
        lines += [
            "# HELP sr_job_seconds Wall time of finished jobs, from worker start to exit.",
            "# TYPE sr_job_seconds histogram",
        ]
        lines += [f'sr_job_seconds_bucket{{le="{b:g}"}} {n}' for b, n in zip(JOB_SECONDS_BUCKETS, buckets)]
        lines += [
            f'sr_job_seconds_bucket{{le="+Inf"}} {count}',
            f"sr_job_seconds_sum {total:.3f}",
            f"sr_job_seconds_count {count}",
        ]
        return "\n".join(lines) + "\n"
