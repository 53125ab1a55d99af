"""What the bulk export tests share."""

from __future__ import annotations


class RecordingRunner:
    """An export runner that records the runs it is asked to start and stop; the test runs their steps itself,
    when it wants them to run."""

    def __init__(self) -> None:
        self.started: list[int] = []
        self.stopped: list[str] = []

    def start(self, job_id: int, resource_types) -> str:
        assert list(resource_types)
        self.started.append(job_id)
        return f"arn:aws:states:us-east-1:000000000000:execution:bulk-export:export-{job_id}"

    def stop(self, handle: str) -> None:
        self.stopped.append(handle)
