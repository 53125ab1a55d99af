"""A clinician as a Locust user: its own token, its own care team, the mix of bench/load/mix.py.

Run by bench/load/driver.py (Locust as a library, headless); also usable on its own:
    LOAD_DATASET=bench/results/load_dataset.json locust -f bench/load/locustfile.py --headless -u 8 -t 30s \
        --host http://127.0.0.1:8000
"""

from __future__ import annotations

import itertools
import json
import os
import random
import sys
from pathlib import Path
from typing import ClassVar

from locust import FastHttpUser, constant, task

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.load.mix import headers, next_request


def load_dataset() -> list[dict]:
    return json.loads(Path(os.environ["LOAD_DATASET"]).read_text())["clinicians"]


class Clinician(FastHttpUser):
    """Each new user takes the next clinician of the data set (user n is clinician n)."""

    wait_time = constant(0)  # closed loop: concurrency is the number of users
    connection_timeout = 10.0
    network_timeout = 30.0  # API Gateway's own limit is 29 s
    clinicians: ClassVar[list[dict]] = []
    _numbers: ClassVar[itertools.count] = itertools.count()

    def on_start(self) -> None:
        if not Clinician.clinicians:
            Clinician.clinicians = load_dataset()
        number = next(Clinician._numbers)
        self.clinician = Clinician.clinicians[number % len(Clinician.clinicians)]
        self.rng = random.Random(number)

    @task
    def one_request(self) -> None:
        request = next_request(self.rng, self.clinician)
        self.client.request(request.method, request.path, name=request.name, data=request.body,
                            headers=headers(self.clinician["token"], request.body is not None))
