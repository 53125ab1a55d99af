"""The export's AWS adapters: the bucket (streamed multipart uploads, presigned links, deletes) and the
state machine (start, stop). boto3 is imported only by the functions that use them.

Configuration (set by the template): ``EXPORT_BUCKET`` (the API and the worker), ``EXPORT_STATE_MACHINE_ARN``
(the API). Without them (``make run``) there is no export runner and the kick-off says so.
An emulator is reached through ``AWS_ENDPOINT_URL``, which boto3 reads itself; its bucket is addressed
path-style there, since an emulator's host name has no per-bucket DNS.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from functools import cache
from typing import Any

# S3 takes parts of 5 MiB at least (all but the last); a part is sent once this much is buffered.
PART_BYTES = 8 * 1024 * 1024
NDJSON_CONTENT_TYPE = "application/fhir+ndjson"


@cache
def _client(service: str) -> Any:
    import boto3
    from botocore.config import Config

    options: dict[str, Any] = {"retries": {"max_attempts": 5, "mode": "standard"}}
    if service == "s3":
        options["signature_version"] = "s3v4"
        if os.environ.get("AWS_ENDPOINT_URL"):
            options["s3"] = {"addressing_style": "path"}
    return boto3.client(service, config=Config(**options))


@dataclass
class S3Upload:
    """One object written as it is produced: buffered up to PART_BYTES, then sent as a multipart part.
    A small object (under one part) is sent with one PUT when it is complete."""

    client: Any
    bucket: str
    key: str
    _buffer: bytearray = field(default_factory=bytearray)
    _upload_id: str | None = None
    _parts: list[dict[str, Any]] = field(default_factory=list)

    def write(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) >= PART_BYTES:
            self._send_part()

    def _send_part(self) -> None:
        if self._upload_id is None:
            self._upload_id = self.client.create_multipart_upload(
                Bucket=self.bucket, Key=self.key, ContentType=NDJSON_CONTENT_TYPE,
            )["UploadId"]
        number = len(self._parts) + 1
        answer = self.client.upload_part(Bucket=self.bucket, Key=self.key, UploadId=self._upload_id,
                                         PartNumber=number, Body=bytes(self._buffer))
        self._parts.append({"PartNumber": number, "ETag": answer["ETag"]})
        self._buffer.clear()

    def complete(self) -> None:
        if self._upload_id is None:
            self.client.put_object(Bucket=self.bucket, Key=self.key, Body=bytes(self._buffer),
                                   ContentType=NDJSON_CONTENT_TYPE)
            self._buffer.clear()
            return
        if self._buffer:
            self._send_part()
        self.client.complete_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self._upload_id,
                                              MultipartUpload={"Parts": self._parts})
        self._upload_id = None

    def abort(self) -> None:
        self._buffer.clear()
        if self._upload_id is None:
            return
        # A failed abort leaves an upload that the bucket's lifecycle rule removes after a day.
        with contextlib.suppress(Exception):
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self._upload_id)
        self._upload_id = None


@dataclass(frozen=True)
class S3ExportFiles:
    """The export bucket: the worker's uploads and the API's links and deletes."""

    bucket: str
    client: Any = None

    @property
    def _s3(self) -> Any:
        return self.client or _client("s3")

    def upload(self, key: str) -> S3Upload:
        return S3Upload(self._s3, self.bucket, key)

    def link(self, key: str, seconds: int) -> str:
        return self._s3.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=seconds, HttpMethod="GET",
        )

    def delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):  # DeleteObjects takes 1,000 keys at a time
            batch = [{"Key": k} for k in keys[start:start + 1000]]
            self._s3.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})


@dataclass(frozen=True)
class StepFunctionsRunner:
    """Runs a job as an execution of the export state machine, named after the job: starting it again
    (a retried kick-off) is refused by Step Functions rather than starting a second run."""

    state_machine_arn: str
    client: Any = None

    @property
    def _sfn(self) -> Any:
        return self.client or _client("stepfunctions")

    def start(self, job_id: int, resource_types: list[str] | tuple[str, ...]) -> str:
        import json

        name = f"export-{job_id}"
        try:
            return self._sfn.start_execution(stateMachineArn=self.state_machine_arn, name=name,
                                             input=json.dumps({"jobId": job_id, "types": list(resource_types)}),
                                             )["executionArn"]
        except self._sfn.exceptions.ExecutionAlreadyExists:
            arn = self.state_machine_arn.replace(":stateMachine:", ":execution:")
            return f"{arn}:{name}"

    def stop(self, handle: str) -> None:
        with contextlib.suppress(self._sfn.exceptions.ExecutionDoesNotExist):
            self._sfn.stop_execution(executionArn=handle, cause="cancelled by its caller")


def configured_files() -> S3ExportFiles | None:
    bucket = os.environ.get("EXPORT_BUCKET")
    return S3ExportFiles(bucket) if bucket else None


def configured_runner() -> StepFunctionsRunner | None:
    arn = os.environ.get("EXPORT_STATE_MACHINE_ARN")
    return StepFunctionsRunner(arn) if arn and os.environ.get("EXPORT_BUCKET") else None
