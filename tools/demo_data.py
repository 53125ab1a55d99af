"""Demo data for the local stack, and the dev callers whose tokens see it (SPEC §4 kinds of caller)."""

from __future__ import annotations

from chalicelib.api.auth import SCOPES
from tools.provisioning import connect

# The subjects of the dev tokens; the demo data puts DEV_CLINICIAN on some patients' care teams.
DEV_ADMIN = "dev-user"
DEV_CLINICIAN = "dev-clinician"
DEMO_CARE_TEAM_SIZE = 10
DEV_TOKEN_TTL_SECONDS = 12 * 3600
READ_SCOPE, WRITE_SCOPE = SCOPES[0], SCOPES[1]
# What each kind of caller gets unless told otherwise: (subject, scopes); a patient's subject names its id.
TOKEN_KINDS = {
    "admin": (DEV_ADMIN, SCOPES),
    "clinician": (DEV_CLINICIAN, (READ_SCOPE, WRITE_SCOPE)),
    "patient": ("patient-{patient_id}", (READ_SCOPE,)),
}
MINTING_HINT = "make token KIND=clinician  |  make token KIND=patient PATIENT_ID=1"


def admin_token() -> str:
    from chalicelib.api import auth

    subject, scopes = TOKEN_KINDS["admin"]
    return auth.mint(subject, list(scopes), DEV_TOKEN_TTL_SECONDS)


def load_demo_data(owner_url: str, patients: int) -> str | None:
    """The original system's 8 sample patients plus ``patients`` generated ones, into an empty database
    only; returns what was loaded (None when the database already had patients)."""
    from pipeline.generate import generate, load_fixture

    conn = connect(owner_url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT EXISTS (SELECT 1 FROM medical_app.patient)")
            if cur.fetchone()[0]:
                return None
        conn.commit()
        load_fixture(conn)
        if patients:
            generate(conn, patients=patients, records_per_patient=2.5, prescriptions_per_record=2.0, seed=42,
                     progress=patients >= 20_000)
        with conn.cursor() as cur:  # so that the clinician's dev token has patients to see
            cur.execute(
                "INSERT INTO medical_app.care_team_member (patient_id, member_sub, role, granted_by) "
                "SELECT patient_id, %s, 'attending', %s FROM medical_app.patient ORDER BY patient_id LIMIT %s",
                (DEV_CLINICIAN, DEV_ADMIN, DEMO_CARE_TEAM_SIZE),
            )
        conn.commit()
    finally:
        conn.close()
    return (f"loaded demo data: 8 fixture patients + {patients} generated; "
            f"{DEV_CLINICIAN} is on the care team of the first {DEMO_CARE_TEAM_SIZE}")
