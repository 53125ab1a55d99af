"""Pipeline configuration, read once from the environment."""

from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

PIPELINE_DIR = Path(__file__).resolve().parent


class PipelineConfigurationError(RuntimeError):
    pass


def find_sling_binary() -> str:
    """SLING_BINARY, else the binary shipped in the sling-linux-amd64 wheel, else `sling` on PATH.

    Never downloads: the `sling` Python wrapper fetches a binary at first use, which fails offline.
    """
    explicit = os.environ.get("SLING_BINARY")
    if explicit:
        return explicit
    spec = importlib.util.find_spec("sling_linux_amd64")
    if spec and spec.origin:
        candidate = Path(spec.origin).parent / "bin" / "sling-linux-amd64"
        if candidate.exists():
            return str(candidate)
    on_path = shutil.which("sling")
    if on_path:
        return on_path
    raise PipelineConfigurationError("no Sling binary: pip install sling==1.4.10.post2 or set SLING_BINARY")


@dataclass(frozen=True)
class PipelineSettings:
    app_db_url: str        # the application database, as a read-only (medical_reader) login
    analytic_db_url: str   # the analytic database, as its owner
    sling_home: Path
    lock_timeout_seconds: float = 600.0
    global_check_interval_seconds: float = 3600.0

    @classmethod
    def from_env(cls) -> PipelineSettings:
        missing = [name for name in ("APP_DB_URL", "ANALYTIC_DB_URL") if not os.environ.get(name)]
        if missing:
            raise PipelineConfigurationError(f"set {', '.join(missing)}")
        return cls(
            app_db_url=os.environ["APP_DB_URL"],
            analytic_db_url=os.environ["ANALYTIC_DB_URL"],
            sling_home=Path(os.environ.get("SLING_HOME_DIR", Path.home() / ".sling")),
            lock_timeout_seconds=float(os.environ.get("REFRESH_LOCK_TIMEOUT_SECONDS", "600")),
            global_check_interval_seconds=float(os.environ.get("REFRESH_GLOBAL_CHECK_SECONDS", "3600")),
        )
