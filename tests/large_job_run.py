"""``tierflow summarize`` as ``evals.large_job`` runs it, on scripted tiers that take a little
time per call (so a test can kill the job mid-way). Usage: python -m tests.large_job_run
INPUT --json --out REPORT --no-synthesis | --resume JOB --json --out REPORT"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from tierflow.agents.protocol import Message
from tierflow.agents.scripted import ScriptedModel
from tierflow.agents.tiers import Tiers
from tierflow.app import App
from tierflow.batch.job import JobRequest, run_job
from tierflow.settings import Settings

from tests.batch_support import REPLIES, gist


def slow_gist(messages: Sequence[Message]) -> str:
    time.sleep(float(os.environ.get("LARGE_JOB_CALL_SECONDS", "0.05")))
    return gist(messages)


if __name__ == "__main__":
    args = sys.argv[1:]
    out = Path(args[args.index("--out") + 1])
    resume = args[args.index("--resume") + 1] if "--resume" in args else None
    settings = Settings(data_dir=Path(os.environ["TIERFLOW_DATA_DIR"]))
    tiers = Tiers(ScriptedModel([slow_gist] * REPLIES), ScriptedModel([gist] * REPLIES, tier="llm"))
    with App(settings, tiers=tiers) as app:
        request = JobRequest(resume=resume) if resume else JobRequest(inputs=[args[0]], synthesis=False)
        report = run_job(request, app)
    out.write_text(report.to_json_text(), encoding="utf-8")
