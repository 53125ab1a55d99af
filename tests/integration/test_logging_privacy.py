"""SPEC §4: no personal data in logs or error messages.

A full create/read/update/delete run over both surfaces (/v1 and the original routes), failures
included, with values no other test uses; then everything the process logged is searched for them.

Two independent captures, so the test cannot pass by capturing nothing:
- file-descriptor level (``capfd``): the structured logger's JSON lines, exactly as written. Its
  StreamHandler was created at import time and holds whatever ``sys.stdout`` was then (often a
  stream of pytest's outer capture, which ``capfd`` does not see), so for the duration of the run
  it writes straight to file descriptor 1 instead; the handler and its formatter are the
  application's own.
- a handler on the root logger and on the application's logger that keeps every record's
  formatted message and every value in its ``__dict__`` (extras included), at DEBUG level.
Both must show the request lines (route templates and statuses) of the run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from typing import Any

import pytest

from tests.helpers import card_number

FIRST = "Zanzibarius"
LAST = "Quixotewell"
DIAGNOSIS = "Xylophonitis rarissima"
SYMPTOM = "Glimmerfever"
PHONE = "0899911122"
MEDICINE = "Snorkelmycin"
HOSPITAL = "Brobdingnag Infirmary"
DOCTOR = "Dr. Ottoline Vexworthy"
DOSE = "7 drops fortnightly"
BIRTH_DATE = "1911-11-17"
REASON = "Quorblax seizure in the Vexworth ward"  # a break-the-glass reason: health information too
APP_LOGGER = "medical-records"


class Fd1Stream:
    """A text stream that writes to whatever file descriptor 1 is at the time (``capfd`` redirects it)."""

    def write(self, text: str) -> int:
        os.write(1, text.encode())
        return len(text)

    def flush(self) -> None:
        pass


class Collector(logging.Handler):
    """Keeps the formatted line and every attribute value of each record it sees."""

    def __init__(self, formatter: logging.Formatter | None) -> None:
        super().__init__(level=logging.NOTSET)
        self.records: list[logging.LogRecord] = []
        self.texts: list[str] = []
        if formatter is not None:
            self.setFormatter(formatter)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        try:
            self.texts.append(self.format(record))
        except Exception as exc:  # a record the formatter cannot render is itself a finding
            self.texts.append(f"<unformattable record: {exc!r}>")
        self.texts.append(record.getMessage())
        for key, value in vars(record).items():
            self.texts.append(f"{key}={value!r}")
            self.texts.append(str(value))


class LogCapture:
    def __init__(self, capfd: Any, collector: Collector) -> None:
        self._capfd = capfd
        self.collector = collector
        self.stdout = ""
        self.stderr = ""

    def finish(self) -> None:
        out, err = self._capfd.readouterr()
        self.stdout += out
        self.stderr += err

    def everything(self) -> str:
        return "\n".join([self.stdout, self.stderr, *self.collector.texts])

    def json_lines(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.stdout.splitlines():
            line = line.strip()
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    lines.append(json.loads(line))
        return lines


@pytest.fixture
def log_capture(api, capfd):
    app_logger = logging.getLogger(APP_LOGGER)
    root = logging.getLogger()
    stream_handlers = [
        h
        for h in app_logger.handlers
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
    ]
    assert stream_handlers, "the application logger writes to a stream (stdout)"
    collector = Collector(stream_handlers[0].formatter)
    saved_levels = (app_logger.level, root.level)
    capfd.readouterr()  # drop whatever came before the run
    swapped = [(h, h.setStream(Fd1Stream())) for h in stream_handlers]
    app_logger.addHandler(collector)
    root.addHandler(collector)
    app_logger.setLevel(logging.DEBUG)
    root.setLevel(logging.DEBUG)
    capture = LogCapture(capfd, collector)
    try:
        yield capture
    finally:
        app_logger.removeHandler(collector)
        root.removeHandler(collector)
        app_logger.setLevel(saved_levels[0])
        root.setLevel(saved_levels[1])
        for handler, old_stream in swapped:
            handler.setStream(old_stream)


class Run:
    """Calls the API and keeps every failed reply to check later that none echoes the values."""

    def __init__(self, api: Any) -> None:
        self.api = api
        self.failures: list[tuple[str, Any]] = []

    def call(self, expected: int, method: str, path: str, body: Any = None, *, via: Any = None, **kw: Any) -> Any:
        reply = (via or self.api).call(method, path, body, **kw)
        assert reply.status == expected, f"{method} {path}: {reply.status} {reply.text}"
        if reply.status >= 400:
            self.failures.append((f"{method} {path}", reply))
        return reply


def test_full_crud_run_logs_no_personal_data(api, tokens, log_capture):
    card = card_number()
    legacy_card = card_number()
    missing_card = card_number()
    secrets = [FIRST, LAST, DIAGNOSIS, SYMPTOM, PHONE, MEDICINE, HOSPITAL, DOCTOR, DOSE, BIRTH_DATE, card,
               legacy_card, missing_card, REASON]
    patient = {"idCardNum": card, "firstName": FIRST, "lastName": LAST, "birthDate": BIRTH_DATE, "phoneNum": PHONE}
    visit = {
        "hospitalName": HOSPITAL,
        "doctorFullName": DOCTOR,
        "diagnosis": DIAGNOSIS,
        "symptom": SYMPTOM,
        "treatmentStartDate": "2024-03-01",
        "treatmentEndDate": "2024-03-09",
    }
    rx = {"medicineName": MEDICINE, "dose": DOSE}
    run = Run(api)
    call = run.call

    # --- /v1 ---------------------------------------------------------------------------------------
    pid = call(201, "POST", "/v1/patients", patient).json["patientId"]
    call(200, "GET", f"/v1/patients/{pid}")
    assert [p["patientId"] for p in call(200, "GET", f"/v1/patients?lastName={LAST}").json["items"]] == [pid]
    call(200, "GET", f"/v1/patients?idCardNum={card}&lastName={LAST}&birthDate={BIRTH_DATE}")
    rid = call(201, "POST", f"/v1/patients/{pid}/medical-records", visit).json["medicalRecordId"]
    xid = call(201, "POST", f"/v1/medical-records/{rid}/prescriptions", rx).json["prescriptionId"]
    call(200, "GET", f"/v1/patients/{pid}/medical-records")
    call(200, "GET", f"/v1/medical-records/{rid}/prescriptions")
    call(200, "GET", f"/v1/patients/{pid}/summary")
    call(200, "PATCH", f"/v1/patients/{pid}", {"phoneNum": PHONE, "lastName": LAST}, headers={"If-Match": '"1"'})
    call(200, "PUT", f"/v1/medical-records/{rid}", visit)
    call(200, "PATCH", f"/v1/prescriptions/{xid}", {"dose": DOSE})
    call(200, "GET", f"/v1/patients/{pid}/access-log")

    # failures carrying the values
    call(409, "POST", "/v1/patients", patient)  # duplicate card number
    call(400, "POST", "/v1/patients", {**patient, "idCardNum": f"{card}9", "birthDate": LAST, "phoneNum": f"{PHONE}9"})
    call(400, "POST", "/v1/patients", {**patient, "firstName": FIRST * 5, "lastName": [LAST], "idCardNum": FIRST})
    call(400, "POST", "/v1/patients", raw=f'{{"idCardNum": "{card}", "firstName": "{FIRST}", "lastName": ')
    call(400, "POST", "/v1/patients", {**patient, "middleName": LAST})
    call(400, "POST", f"/v1/patients/{pid}/medical-records", {**visit, "treatmentStartDate": DIAGNOSIS})
    call(400, "POST", f"/v1/patients/{pid}/medical-records", {**visit, "symptom": SYMPTOM * 30})
    call(400, "POST", f"/v1/medical-records/{rid}/prescriptions", {**rx, "dose": DOSE * 5})
    call(400, "PATCH", f"/v1/prescriptions/{xid}", {"medicineName": [MEDICINE]})
    call(400, "GET", f"/v1/patients?lastName={LAST * 5}")
    call(400, "GET", f"/v1/patients?idCardNum={FIRST}")
    call(404, "GET", f"/v1/patients/{2**62}")
    call(404, "POST", f"/v1/patients/{2**62}/medical-records", visit)
    call(404, "POST", f"/v1/medical-records/{2**62}/prescriptions", rx)
    call(412, "PATCH", f"/v1/patients/{pid}", {"firstName": FIRST}, headers={"If-Match": '"1"'})
    call(412, "PUT", f"/v1/patients/{pid}", patient, headers={"If-Match": '"1"'})
    call(412, "PUT", f"/v1/medical-records/{rid}", visit, headers={"If-Match": '"1"'})
    call(412, "DELETE", f"/v1/prescriptions/{xid}", headers={"If-Match": '"1"'})
    call(401, "POST", "/v1/patients", patient, via=api.as_token(None))
    call(401, "POST", "/v1/patients", patient, via=api.as_token(FIRST))
    call(403, "POST", "/v1/patients", patient, via=api.as_token(tokens["read"]))
    outsider = api.as_token(tokens["read"])  # a clinician outside this patient's care team
    call(403, "GET", f"/v1/patients/{pid}", via=outsider)
    call(200, "GET", f"/v1/patients/{pid}", via=outsider, headers={"Break-Glass": REASON})
    call(400, "GET", f"/v1/patients/{pid}", via=outsider, headers={"Break-Glass": "Quorblax"})

    # --- the original routes ------------------------------------------------------------------------
    legacy_patient = {**patient, "idCardNum": legacy_card}
    lpid = call(201, "POST", "/patient", legacy_patient).json["patientID"]
    call(200, "GET", f"/patient/{legacy_card}")
    call(200, "GET", "/patient?limit=5")
    legacy_visit = {k: v for k, v in visit.items() if k != "symptom"} | {"symtom": SYMPTOM, "patientID": lpid}
    lrid = call(201, "POST", "/medicalrecord", legacy_visit).json["medicalRecordID"]
    call(201, "POST", "/medicalrecord", {**visit, "patientID": lpid})
    call(200, "GET", f"/medicalrecord/{lpid}")
    call(200, "GET", "/medicalrecord?limit=5")
    lxid = call(201, "POST", "/prescription", {**rx, "medicalRecordID": lrid}).json["prescriptionID"]
    call(200, "GET", f"/prescription/{lrid}")
    call(200, "GET", "/prescription?limit=5")
    call(200, "PUT", f"/patient/{lpid}", {"firstName": FIRST, "phoneNum": PHONE})
    call(200, "PUT", f"/medicalrecord/{lrid}", {"diagnosis": DIAGNOSIS, "symtom": SYMPTOM})
    call(200, "PUT", f"/prescription/{lxid}", {"medicineName": MEDICINE, "dose": DOSE})

    # failures carrying the values
    call(400, "POST", "/patient", legacy_patient)  # duplicate card number
    call(400, "POST", "/patient", {**legacy_patient, "idCardNum": FIRST, "birthDate": LAST, "phoneNum": SYMPTOM})
    call(400, "POST", "/patient", raw=f'{{"firstName": "{FIRST}", "idCardNum": "{legacy_card}"')
    call(404, "GET", f"/patient/{missing_card}")
    call(404, "GET", f"/patient/{LAST}")
    call(400, "PUT", f"/patient/{lpid}", {"idCardNum": card})  # another live patient's card number
    call(400, "PUT", f"/patient/{lpid}", {"lastName": LAST * 5})
    call(404, "PUT", f"/patient/{2**62}", legacy_patient)
    call(404, "POST", "/medicalrecord", {**legacy_visit, "patientID": 2**62})
    call(400, "POST", "/medicalrecord", {**legacy_visit, "symptom": SYMPTOM})  # both spellings
    call(400, "POST", "/medicalrecord", {**legacy_visit, "treatmentEndDate": DIAGNOSIS})
    call(400, "POST", "/prescription", {**rx, "medicalRecordID": 2**62})
    call(400, "POST", "/prescription", {**rx, "medicalRecordID": lrid, "dose": [DOSE]})
    call(400, "PUT", f"/prescription/{lxid}", {"medicineName": MEDICINE * 5})
    call(404, "PUT", f"/medicalrecord/{2**62}", {"diagnosis": DIAGNOSIS})

    # --- deletes, and what follows them ---------------------------------------------------------------
    call(200, "DELETE", f"/prescription/{lxid}")
    call(404, "DELETE", f"/prescription/{lxid}")
    call(200, "DELETE", f"/medicalrecord/{lrid}")
    call(200, "DELETE", f"/patient/{lpid}")
    call(404, "DELETE", f"/patient/{lpid}")
    call(404, "GET", f"/patient/{legacy_card}")
    call(404, "GET", f"/medicalrecord/{lpid}")
    call(204, "DELETE", f"/v1/prescriptions/{xid}")
    call(410, "GET", f"/v1/prescriptions/{xid}")
    call(204, "DELETE", f"/v1/patients/{pid}", headers={"If-Match": '"2"'})
    call(410, "GET", f"/v1/patients/{pid}")
    call(410, "GET", f"/v1/medical-records/{rid}")
    call(410, "PATCH", f"/v1/patients/{pid}", {"lastName": LAST})
    call(200, "GET", f"/v1/patients?lastName={LAST}")

    log_capture.finish()
    logged = log_capture.everything()

    # the captures are not empty: both hold the request lines of this run
    expected_lines = {
        ("POST /v1/patients", 201),
        ("GET /v1/patients/{patientId}", 200),
        ("GET /v1/patients", 200),
        ("POST /v1/patients", 409),
        ("POST /v1/patients", 400),
        ("PATCH /v1/patients/{patientId}", 412),
        ("PUT /v1/medical-records/{medicalRecordId}", 412),
        ("GET /v1/patients/{patientId}", 410),
        ("DELETE /v1/patients/{patientId}", 204),
        ("POST /patient", 201),
        ("POST /patient", 400),
        ("GET /patient/{key}", 200),
        ("GET /patient/{key}", 404),
        ("PUT /patient/{key}", 200),
        ("POST /medicalrecord", 201),
        ("GET /medicalrecord/{key}", 404),
        ("POST /prescription", 400),
        ("DELETE /patient/{key}", 200),
        ("DELETE /patient/{key}", 404),
    }
    from_stdout = {(line.get("route"), line.get("status")) for line in log_capture.json_lines()}
    assert expected_lines <= from_stdout, sorted(expected_lines - from_stdout, key=str)
    from_records = {
        (getattr(r, "route", None), getattr(r, "status", None)) for r in log_capture.collector.records
    }
    assert expected_lines <= from_records, sorted(expected_lines - from_records, key=str)
    assert "GET /v1/patients/{patientId}" in logged and "412" in logged
    assert "authentication failed" in logged

    # ... and none of the personal data
    leaked = sorted(s for s in secrets if s.lower() in logged.lower())
    assert not leaked, f"personal data in the logs: {leaked}"

    # no failed reply echoes what was sent
    assert len(run.failures) > 40
    for what, reply in run.failures:
        echoed = sorted(s for s in secrets if s.lower() in reply.text.lower())
        assert not echoed, f"{what} answered {reply.status} echoing {echoed}: {reply.text}"
        if reply.status in (400, 404, 409, 410, 412) and what.split()[1].startswith("/v1/"):
            assert reply.headers["content-type"].startswith("application/problem+json"), what
            assert set(reply.json) >= {"type", "title", "status", "detail"}, what
