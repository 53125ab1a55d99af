"""The analytics refresh with two real databases and the real Sling binary."""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from datetime import date

import pytest

from chalicelib.domain import models
from chalicelib.domain.errors import DomainError
from pipeline import refresh
from tests.helpers import card_number
from tests.pipeline_support import Pipeline, RandomActivity, build, query


@pytest.fixture
def pipeline(pg_cluster, tmp_path, request):
    name = request.node.name.replace("[", "_").replace("]", "").replace("-", "_")[-40:].lower()
    return Pipeline(pg_cluster, name, tmp_path)


def test_random_activity_then_refresh_matches_the_reference(pipeline):
    activity = RandomActivity(pipeline, seed=7)
    for round_number in range(4):
        for _ in range(60 if round_number == 0 else 25):
            activity.step()
        result = pipeline.refresh()
        assert result.status == "succeeded" and result.check_passed
        assert pipeline.analytic() == pipeline.reference(), f"mismatch after round {round_number}"
        assert pipeline.deidentified() == pipeline.deidentified_reference(), f"de-identified, round {round_number}"
    assert len(pipeline.reference()) > 20


def test_a_second_refresh_with_no_changes_writes_nothing(pipeline):
    activity = RandomActivity(pipeline, seed=11)
    for _ in range(40):
        activity.step()
    first = pipeline.refresh()
    assert first.rows_inserted > 0
    before, deidentified_before = pipeline.snapshot(), pipeline.deidentified_snapshot()
    second = pipeline.refresh()
    assert (second.rows_inserted, second.rows_updated, second.rows_deleted) == (0, 0, 0)
    assert (second.deidentified_rows_inserted, second.deidentified_rows_updated,
            second.deidentified_rows_deleted) == (0, 0, 0)
    assert sum(second.rows_changed.values()) == 0
    assert pipeline.snapshot() == before  # same rows, same timestamps, not even rewritten (same xmin)
    assert pipeline.deidentified_snapshot() == deidentified_before


def _visit_with_prescriptions(pipeline, count: int) -> tuple[int, int, list[int]]:
    s, c = pipeline.services, pipeline.caller
    pid = s.patients.create(c, build(models.PatientWrite, id_card_num=card_number(), first_name="Anan",
                                     last_name="Srisuk", birth_date=date(1980, 1, 1))).resource.patient_id
    rid = s.medical_records.create(
        c, build(models.MedicalRecordWrite, hospital_name="Siriraj", doctor_full_name="Dr. Malee",
                 treatment_start_date=date(2024, 1, 1)), parent_key=pid,
    ).resource.medical_record_id
    rxs = [
        s.prescriptions.create(c, build(models.PrescriptionWrite, medicine_name=f"Drug {i}", dose="1 tab"),
                               parent_key=rid).resource.prescription_id
        for i in range(count)
    ]
    return pid, rid, rxs


def test_only_changed_rows_are_rewritten(pipeline):
    pid, _rid, rxs = _visit_with_prescriptions(pipeline, 3)
    _visit_with_prescriptions(pipeline, 2)
    pipeline.refresh()
    before = {row[0]: row for row in pipeline.snapshot()}
    s, c = pipeline.services, pipeline.caller
    s.prescriptions.update(c, rxs[1], build(models.PrescriptionPatch, dose="9 tab"), partial=True)
    result = pipeline.refresh()
    assert (result.rows_inserted, result.rows_updated, result.rows_deleted) == (0, 1, 0)
    after = {row[0]: row for row in pipeline.snapshot()}
    assert {key for key in after if after[key] != before.get(key)} == {f"prescription:{rxs[1]}"}
    # a patient change rewrites exactly that patient's rows
    s.patients.update(c, pid, build(models.PatientPatch, last_name="Renamed"), partial=True)
    result = pipeline.refresh()
    assert (result.rows_inserted, result.rows_updated, result.rows_deleted) == (0, 3, 0)
    assert pipeline.analytic() == pipeline.reference()


def test_moves_leave_no_stale_rows(pipeline):
    s, c = pipeline.services, pipeline.caller
    _, rid_a, [rx] = _visit_with_prescriptions(pipeline, 1)
    pid_b, rid_b, _ = _visit_with_prescriptions(pipeline, 1)
    pipeline.refresh()
    s.prescriptions.update(c, rx, build(models.PrescriptionPatch, medical_record_id=rid_b), partial=True)
    pipeline.refresh()
    keys = {r[0]: r for r in pipeline.analytic()}
    assert f"medical_record:{rid_a}" in keys  # visit A has no prescription left: it gets its own row
    assert keys[f"prescription:{rx}"][9] == rid_b
    assert pipeline.analytic() == pipeline.reference()
    s.medical_records.update(c, rid_a, build(models.MedicalRecordPatch, patient_id=pid_b), partial=True)
    pipeline.refresh()
    assert {r[0]: r for r in pipeline.analytic()}[f"medical_record:{rid_a}"][1] == pid_b
    assert pipeline.analytic() == pipeline.reference()
    assert pipeline.deidentified() == pipeline.deidentified_reference()


@pytest.mark.parametrize("point", ["after_replication", "before_merge", "before_deidentified_merge", "inside_merge"])
def test_a_crash_leaves_the_last_good_state_and_the_next_run_converges(pipeline, monkeypatch, point):
    activity = RandomActivity(pipeline, seed=5)
    for _ in range(40):
        activity.step()
    pipeline.refresh()
    good, deidentified_good = pipeline.snapshot(), pipeline.deidentified_snapshot()
    for _ in range(20):
        activity.step()

    def crash(name: str) -> None:
        if name == point:
            raise RuntimeError(f"injected crash at {name}")

    monkeypatch.setattr(refresh, "crash_point", crash)
    with pytest.raises(RuntimeError, match="injected crash"):
        pipeline.refresh()
    assert pipeline.snapshot() == good
    assert pipeline.deidentified_snapshot() == deidentified_good
    assert pipeline.runs()[-1][0] == "failed"

    monkeypatch.setattr(refresh, "crash_point", lambda name: None)
    assert pipeline.refresh().status == "succeeded"
    assert pipeline.analytic() == pipeline.reference()
    assert pipeline.deidentified() == pipeline.deidentified_reference()


def test_two_refreshes_started_together_do_not_interleave(pipeline):
    activity = RandomActivity(pipeline, seed=9)
    for _ in range(40):
        activity.step()
    results: list[refresh.RefreshResult] = []
    barrier = threading.Barrier(2)

    def run() -> None:
        barrier.wait()
        results.append(pipeline.refresh())

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.status for r in results) == ["succeeded", "succeeded"]
    runs = pipeline.runs()
    assert [r[0] for r in runs] == ["succeeded", "succeeded"]
    (*_, end_a), (*_, start_b, _) = runs
    assert end_a <= start_b  # the second took the lock only after the first had finished
    assert pipeline.analytic() == pipeline.reference()


def test_a_refresh_that_cannot_get_the_lock_records_skipped(pipeline):
    busy = dataclasses.replace(pipeline.settings, lock_timeout_seconds=0.5)
    with refresh.single_flight(pipeline.settings):
        result = refresh.run_refresh("incremental", busy)
    assert result.status == "skipped"
    assert pipeline.runs()[-1][0] == "skipped"


def test_hard_deletes_outside_the_api_are_removed(pipeline):
    activity = RandomActivity(pipeline, seed=13)
    for _ in range(60):
        activity.step()
    pipeline.refresh()
    rows = query(pipeline.app_owner, "SELECT x.prescription_id, x.medical_record_id FROM medical_app.prescription x "
                                     "WHERE x.deleted_timestamp IS NULL ORDER BY 1 LIMIT 1")
    rx, record = rows[0]
    query(pipeline.app_owner, "DELETE FROM medical_app.prescription WHERE prescription_id = %s", (rx,))
    result = pipeline.refresh()
    assert result.rows_hard_deleted["prescription"] == 1
    assert f"prescription:{rx}" not in {r[0] for r in pipeline.analytic()}
    assert pipeline.analytic() == pipeline.reference()
    # a whole visit, with its prescriptions, deleted by hand
    query(pipeline.app_owner, "DELETE FROM medical_app.prescription WHERE medical_record_id = %s", (record,))
    query(pipeline.app_owner, "DELETE FROM medical_app.medical_record WHERE medical_record_id = %s", (record,))
    result = pipeline.refresh()
    assert result.rows_hard_deleted["medical_record"] == 1
    assert record not in {r[9] for r in pipeline.analytic()}
    assert pipeline.analytic() == pipeline.reference()
    assert pipeline.deidentified() == pipeline.deidentified_reference()


def test_full_mode_rebuilds_from_scratch(pipeline):
    activity = RandomActivity(pipeline, seed=17)
    for _ in range(50):
        activity.step()
    pipeline.refresh()
    query(pipeline.analytic_url, "UPDATE analytic.medical_record_denormalized SET dose = 'drifted'")
    query(pipeline.analytic_url, "UPDATE analytic.medical_record_deidentified SET dose = 'drifted'")
    indexes_sql = ("SELECT indexdef FROM pg_indexes WHERE schemaname = 'analytic' "
                   "AND tablename = 'medical_record_denormalized' ORDER BY indexname")
    indexes = query(pipeline.analytic_url, indexes_sql)
    result = pipeline.refresh("full")
    assert query(pipeline.analytic_url, indexes_sql) == indexes  # dropped for the load, built again
    assert result.status == "succeeded" and result.rows_inserted == len(pipeline.reference())
    assert result.deidentified_rebuilt and result.deidentified_rows_inserted == len(pipeline.reference())
    assert pipeline.analytic() == pipeline.reference()
    assert pipeline.deidentified() == pipeline.deidentified_reference()
    again = pipeline.refresh()
    assert again.rows_updated == 0 and again.deidentified_rows_updated == 0


def test_sling_failure_fails_the_run_with_a_clear_message(pipeline):
    RandomActivity(pipeline, seed=29).step()
    assert pipeline.refresh().status == "succeeded"  # landing tables filled: the next run uses Sling
    broken = dataclasses.replace(pipeline.settings, app_db_url="postgresql://nobody:secret-pw@127.0.0.1:1/nowhere")
    with pytest.raises(refresh.RefreshFailed) as raised:
        refresh.run_refresh("incremental", broken)
    message = str(raised.value)
    assert "Sling replication failed" in message and "secret-pw" not in message
    status, *_ = pipeline.runs()[-1]
    assert status == "failed"


def test_a_failed_bulk_load_fails_the_run_and_leaves_the_landing_tables_as_they_were(pipeline):
    activity = RandomActivity(pipeline, seed=31)
    for _ in range(20):
        activity.step()
    pipeline.refresh()
    landing = query(pipeline.analytic_url, "SELECT count(*), max(change_seq) FROM stg.prescription")
    broken = dataclasses.replace(pipeline.settings, app_db_url="postgresql://nobody:secret-pw@127.0.0.1:1/nowhere")
    with pytest.raises(refresh.RefreshFailed) as raised:
        refresh.run_refresh("full", broken)
    message = str(raised.value)
    assert "loading the landing tables failed" in message and "secret-pw" not in message
    assert pipeline.runs()[-1][0] == "failed"
    assert query(pipeline.analytic_url, "SELECT count(*), max(change_seq) FROM stg.prescription") == landing
    assert pipeline.analytic() == pipeline.reference()


def test_the_first_run_bulk_loads_and_later_runs_replicate_only_changes(pipeline):
    activity = RandomActivity(pipeline, seed=37)
    for _ in range(60):
        activity.step()
    source_counts = {t: query(pipeline.app_owner, f"SELECT count(*) FROM medical_app.{t}")[0][0]  # noqa: S608
                     for t in ("patient", "medical_record", "prescription")}
    first = pipeline.refresh()
    assert first.rows_extracted == source_counts  # every source row, soft-deleted ones included
    assert first.rows_changed == source_counts
    indexes_sql = "SELECT indexdef FROM pg_indexes WHERE schemaname = 'stg' ORDER BY indexname"
    assert len(query(pipeline.analytic_url, indexes_sql)) == 11  # dropped for the load, all built again
    assert pipeline.analytic() == pipeline.reference()
    # Sling's incremental run starts from the newest landed updated_timestamp: a change made right after
    # the load is picked up, and the rows inside the look-back are re-read but not counted as changes.
    query(pipeline.app_owner, """
        UPDATE medical_app.prescription SET dose = 'after the bulk load' WHERE prescription_id = (
            SELECT max(x.prescription_id) FROM medical_app.prescription x
            JOIN medical_app.medical_record r USING (medical_record_id) JOIN medical_app.patient p USING (patient_id)
            WHERE x.deleted_timestamp IS NULL AND r.deleted_timestamp IS NULL AND p.deleted_timestamp IS NULL)""")
    second = pipeline.refresh()
    assert second.rows_changed["prescription"] == 1 and second.rows_updated == 1
    assert sum(second.rows_changed.values()) == 1
    assert pipeline.analytic() == pipeline.reference()
    assert pipeline.deidentified() == pipeline.deidentified_reference()


def test_a_table_that_disagrees_with_the_landing_tables_fails_the_run_loudly(pipeline):
    activity = RandomActivity(pipeline, seed=23)
    for _ in range(30):
        activity.step()
    assert pipeline.refresh().check_scope == "global"  # the first run checks the whole table
    assert pipeline.refresh().check_scope == "affected"  # later ones check what they touched, until due
    query(pipeline.analytic_url, "INSERT INTO analytic.medical_record_denormalized (row_key, patient_id, "
                                 "medical_record_id, row_hash) VALUES ('bogus:1', 1, 1, gen_random_uuid())")
    due_now = dataclasses.replace(pipeline.settings, global_check_interval_seconds=0)
    with pytest.raises(refresh.RefreshFailed, match="reconciliation failed"):
        refresh.run_refresh("incremental", due_now)
    status, *_ = pipeline.runs()[-1]
    assert status == "failed"


@pytest.mark.parametrize("seed", [43, 47, 53])
def test_prescription_only_changes_mixed_with_moves_and_deletes_stay_exact(pipeline, seed):
    """A prescription changed in content only is recomputed alone (its own row); in the same run as moves,
    deletes and visit or patient changes touching the same visits, the table still equals the reference."""
    activity = RandomActivity(pipeline, seed=seed)
    for _ in range(80):
        activity.step()
    pipeline.refresh()
    rng = activity.rng
    for round_number in range(6):
        for _ in range(12):
            if rng.random() < 0.6 and activity.prescriptions:  # content-only changes, the common case
                with contextlib.suppress(DomainError):  # a deleted prescription or parent: refused, as by the API
                    activity.s.prescriptions.update(activity.caller, rng.choice(activity.prescriptions),
                                                    build(models.PrescriptionPatch, dose=f"{rng.randint(1, 9)} ml"),
                                                    partial=True)
            else:
                activity.step()
        result = pipeline.refresh()
        assert result.status == "succeeded" and result.check_passed, f"round {round_number}"
        assert pipeline.analytic() == pipeline.reference(), f"mismatch after round {round_number}"
        assert pipeline.deidentified() == pipeline.deidentified_reference(), f"de-identified, round {round_number}"


def test_a_dose_change_rewrites_only_its_own_row(pipeline):
    activity = RandomActivity(pipeline, seed=59)
    for _ in range(40):
        activity.step()
    pipeline.refresh()
    before = {row[0]: row for row in pipeline.snapshot()}
    changed = query(pipeline.app_owner, """
        UPDATE medical_app.prescription SET dose = 'only this row' WHERE prescription_id = (
            SELECT max(x.prescription_id) FROM medical_app.prescription x
            JOIN medical_app.medical_record r USING (medical_record_id) JOIN medical_app.patient p USING (patient_id)
            WHERE x.deleted_timestamp IS NULL AND r.deleted_timestamp IS NULL AND p.deleted_timestamp IS NULL)
        RETURNING 'prescription:' || prescription_id""")[0][0]
    result = pipeline.refresh()
    assert (result.rows_inserted, result.rows_updated, result.rows_deleted) == (0, 1, 0)
    after = {row[0]: row for row in pipeline.snapshot()}
    assert {key for key in after if after[key] != before[key]} == {changed}  # xmin too: nothing else rewritten
    assert pipeline.analytic() == pipeline.reference()
