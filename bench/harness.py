"""What every benchmark script does around its measurement: a scratch directory removed afterwards
(also on Ctrl-C or SIGTERM), and the report written as markdown and JSON to bench/results/."""

from __future__ import annotations

import json
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

API_USER = "medrec_api_bench"


def run_in_scratch(prefix: str, measure: Callable[[Path], dict[str, Any]]) -> dict[str, Any] | None:
    """``measure(scratch_dir)``, or None when interrupted; the directory is removed either way."""

    def on_sigterm(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored (`&`)
    base = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        return measure(base)
    except KeyboardInterrupt:
        print("interrupted; the throwaway database and files were removed", file=sys.stderr)
        return None
    finally:
        shutil.rmtree(base, ignore_errors=True)


def write_report(output_dir: Path, name: str, report: dict[str, Any], markdown: str) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / f"{name}.md").write_text(markdown)
    (output_dir / f"{name}.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(markdown)
    print(f"written: {output_dir / (name + '.md')} and {name}.json", file=sys.stderr)


def app_database(cluster: Any, api_user: str = API_USER) -> tuple[str, str]:
    """Database ``app`` on ``cluster``, migrated, with a least-privilege API login as deployed:
    (owner URL, API URL)."""
    from tools.provisioning import database_with_api_login

    return database_with_api_login(cluster, "app", api_user)
