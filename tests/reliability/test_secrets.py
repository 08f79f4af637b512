"""A planted API key, an endpoint password and a key typed into a task never reach a trace,
a checkpoint, the memory, a log or any CLI output; every store is grepped for them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.reliability.faulty_server import Fault, faulty_server
from tests.test_cli import no_traceback, tierflow

KEY = "sk-planted-Key-0123456789abcdefXYZ"
PASSWORD = "pw-planted-0451"
TYPED = "sk-typed-into-task-9876543210zyxwvu"
TOKEN = "tok-planted-env-5555-aaaa"
PLANTED = (KEY, PASSWORD, TYPED, TOKEN)


def leaks(text: str | bytes) -> list[str]:
    data = text.encode() if isinstance(text, str) else text
    return [secret for secret in PLANTED if secret.encode() in data]


def test_no_store_or_output_holds_a_planted_secret(isolated_env: Path, tally: Any) -> None:
    refused = Fault(
        status=401,
        body={"error": {"message": f"Incorrect API key provided: {KEY}", "type": "invalid_request_error"}},
    )
    with faulty_server(refused) as server:
        env = {
            "TIERFLOW_LLM_API_KEY": KEY,
            "TIERFLOW_LLM_BASE_URL": server.base_url.replace("://", f"://user:{PASSWORD}@"),
            "TIERFLOW_LLM_MODEL": "faulty",
            "TIERFLOW_LLM_MAX_RETRIES": "0",
            "MY_SERVICE_TOKEN": TOKEN,
        }
        task = f"Use the key {TYPED} to log in, with password {PASSWORD}"
        outputs = [
            tierflow("run", task, "--policy", "llm", env=env),
            tierflow("run", task, "--policy", "llm", "--json", env=env),
            tierflow("config", env=env),
            tierflow("config", "--json", env=env),
        ]
        run_id = json.loads(outputs[1].stdout)["run_id"]
        outputs += [
            tierflow("runs", "show", run_id, env=env),
            tierflow("runs", "show", run_id, "--json", env=env),
            tierflow("runs", "list", "--json", env=env),
        ]
        assert server.requests, "the LLM was never called: the test proves nothing"
        assert "Authorization" in server.requests[0]["headers"]  # credentials were sent
    stores = [path for path in isolated_env.rglob("*") if path.is_file()]
    found = sum(len(leaks(r.stdout + r.stderr)) for r in outputs)
    found += sum(len(leaks(path.read_bytes())) for path in stores)
    tally(inputs_tried=len(PLANTED), secrets_found=found, faults_injected=2, runs_survived=2)
    for result in outputs:
        no_traceback(result)
        assert not leaks(result.stdout + result.stderr), (result.args, result.stdout, result.stderr)
    assert json.loads(outputs[1].stdout)["status"] == "failed"
    assert "refused the API key" in outputs[0].stderr  # the error is still said, without the key
    assert "[REDACTED]" in outputs[5].stdout  # the task was stored, scrubbed
    assert any(path.name == "checkpoints.sqlite" for path in stores), stores
    assert any(path.suffix in (".db", ".sqlite") and "checkpoint" not in path.name for path in stores)
    for path in stores:
        assert not leaks(path.read_bytes()), path
