"""A batch job in its own process, for the kill -9 test: scripted tiers that hang inside the
document marked SLOW. Usage: python -m tests.batch_job_run DATA_DIR INPUT_DIR"""

from __future__ import annotations

import sys
from pathlib import Path

from tierflow.app import App
from tierflow.batch.job import JobRequest, run_job
from tierflow.batch.worker import SummaryOptions
from tierflow.memory.traces.tables import JobDocument
from tierflow.settings import Settings

from tests.batch_support import slow_tiers


class PrintJob:
    def begin(self, job_id: str, total: int, finished: int, resumed: bool) -> None:
        print(f"job {job_id}", flush=True)

    def started(self, document: JobDocument) -> None:
        pass

    def finished(self, document: JobDocument) -> None:
        print(f"finished {Path(document.path).name}", flush=True)

    def synthesis(self) -> None:
        pass


if __name__ == "__main__":
    settings = Settings(data_dir=Path(sys.argv[1]))
    with App(settings, tiers=slow_tiers(settings)) as app:
        run_job(
            JobRequest(inputs=[sys.argv[2]], options=SummaryOptions(chunk_tokens=80)),
            app,
            progress=PrintJob(),
        )
