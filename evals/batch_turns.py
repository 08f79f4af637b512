"""Issue 27's batch speed checks, on the batch benchmark's corpus and code (``_run``):

* ``python -m tierflow.evals.batch_turns``: tiered with 1 worker, the local models taking
  turns on the cores and overlapping, side by side in one run (``issue27/turns.json``);
* ``python -m tierflow.evals.batch_turns --all-llm``: everything on the LLM with 1 worker,
  its chunks cut in the LLM server's own tokens (``issue27/all_llm_counted.json``).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tierflow.evals.batch_bench import _run
from tierflow.evals.report import evaluation_settings, models_environment
from tierflow.settings import load_settings

RESULTS = Path(__file__).parent / "results" / "issue27"


def main(argv: list[str]) -> None:
    all_llm = "--all-llm" in argv
    conf = evaluation_settings(load_settings())
    command = "python -m tierflow.evals.batch_turns" + (" --all-llm" if all_llm else "")
    out: dict[str, Any] = {"command": command, "runs": []}
    cases = (
        [("all on the LLM, 1 worker", "llm", True)]
        if all_llm
        else [(f"tiered, 1 worker, take turns {take}", "tiered", take) for take in (True, False)]
    )
    with tempfile.TemporaryDirectory(prefix="tierflow-turns-") as scratch:
        for label, policy, take in cases:
            print(label, time.strftime("%H:%M:%S"), flush=True)
            settings = conf.model_copy(update={"local_models_take_turns": take})
            run = _run(settings, label, policy, 1, "local", Path(scratch))
            run.pop("summaries")
            run["take_turns"] = take
            out["runs"].append(run)
            print(json.dumps(run), flush=True)
    out["environment"] = models_environment(conf)
    name = "all_llm_counted.json" if all_llm else "turns.json"
    (RESULTS / name).write_text(json.dumps(out, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
