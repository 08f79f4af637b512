"""A batch job in its own process, for the kill -9 test: scripted tiers that hang inside the
document marked SLOW. Usage: python -m tests.batch_job_run DATA_DIR INPUT_DIR"""

from __future__ import annotations

import sys
from pathlib import Path

from tierflow.app import App
from tierflow.batch.job import JobRequest, run_job
from tierflow.batch.worker import SummaryOptions
from tierflow.records import Progress
from tierflow.settings import Settings

from tests.batch_support import slow_tiers


def print_job(report: Progress) -> None:
    if report.note.startswith("job "):
        print(report.note, flush=True)
    if report.outcome:
        print(f"finished {report.item}", flush=True)


if __name__ == "__main__":
    settings = Settings(data_dir=Path(sys.argv[1]))
    with App(settings, tiers=slow_tiers(settings)) as app:
        run_job(
            JobRequest(inputs=[sys.argv[2]], options=SummaryOptions(chunk_tokens=80)),
            app,
            on_progress=print_job,
        )
