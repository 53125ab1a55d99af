"""The load test's own parts, for a few seconds against the local server `make run` starts: the data
set is registered through the API by each clinician's token, the Locust driver sends the mix (every
request on the clinician's own care team, so any 403 would count as an error), and the sampler sees
the API's PostgreSQL connections. The full load test and soak are `make bench-load` / `make bench-soak`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.load import dataset
from bench.load.mix import KIND_SHARE, MIX
from bench.load.sampler import Sampler
from tests.e2e.conftest import local_api_server

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def api_server(database, tmp_path):
    with local_api_server(tmp_path / "server.log") as (process, port):
        yield process, f"http://127.0.0.1:{port}"


def test_the_mix_is_the_specified_share_of_reads_searches_and_writes():
    assert KIND_SHARE == {"read": 70, "search": 20, "write": 10}
    assert len({name for name, _, _ in MIX}) == len(MIX)


def test_clinicians_load_their_own_patients_without_errors(api_server, pg_cluster, owner_url, tmp_path):
    from chalicelib.api import auth

    process, base_url = api_server
    tokens = {f"harness-clinician-{n}": auth.mint(f"harness-clinician-{n}", ["read", "write"]) for n in range(3)}
    clinicians = dataset.build(base_url, tokens, patients_per_clinician=3, threads=2)
    assert [c["subject"] for c in clinicians] == list(tokens)
    assert all(len(c["patients"]) == 3 and all(p["recordIds"] for p in c["patients"]) for c in clinicians)

    # Each clinician's patients are its own: another clinician is refused (so the mix's zero errors
    # below mean every request was an on-team access).
    other = dataset.ApiClient(base_url)
    status, _ = other.request("GET", f"/v1/patients/{clinicians[0]['patients'][0]['id']}",
                              tokens["harness-clinician-1"])
    assert status == 403

    dataset_file = tmp_path / "dataset.json"
    dataset_file.write_text(json.dumps({"clinicians": clinicians}))
    out = tmp_path / "driver.json"
    postmaster = lambda: int((pg_cluster.pgdata / "postmaster.pid").read_text().split()[0])  # noqa: E731
    sampler = Sampler(owner_url, process.pid, postmaster, interval=0.2).start()
    try:
        subprocess.run([sys.executable, str(ROOT / "bench" / "load" / "driver.py"), "--host", base_url,
                        "--dataset", str(dataset_file), "--out", str(out), "--steps", "3",
                        "--step-seconds", "3", "--warmup-seconds", "1"], cwd=ROOT, check=True, timeout=120)
    finally:
        sampler.stop()
    (step,) = json.loads(out.read_text())["steps"]
    assert step["users"] == 3
    assert step["errors"] == 0 and step["warmup"]["errors"] == 0, step["errors_by_status"]
    assert step["requests"] >= 30 and step["p50_ms"] > 0
    assert set(step["by_route"]) <= {name for name, _, _ in MIX}
    reads = sum(v["requests"] for k, v in step["by_route"].items() if k in {n for n, _, kind in MIX if kind == "read"})
    assert 0.5 < reads / step["requests"] < 0.9
    resources = sampler.summarise(step["start"], step["end"])
    # one connection per server thread: 3 users, the 2 set-up threads and the health probe at most
    assert 1 <= resources["connections_max"] <= 6
    assert resources["cpu_percent_of_one_core"].get("api server", 0) > 0
