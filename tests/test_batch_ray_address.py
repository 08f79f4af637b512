"""A Ray cluster address where nothing answers: the job says so at once, with what to check,
instead of waiting in ray.init. In a module of its own: the Ray tests' local cluster, while it
is up, is the one a job joins whatever its address."""

from __future__ import annotations

from pathlib import Path

import pytest
from tierflow.batch.job import JobRequest, run_job
from tierflow.batch.worker import SummaryOptions
from tierflow.errors import TierflowError

from tests.batch_support import scripted_app, scripted_tiers, write_reports

OPTIONS = SummaryOptions(chunk_tokens=80)


def test_a_cluster_address_where_nothing_answers_fails_at_once(tmp_path: Path) -> None:
    """ray.init waits for minutes on an address where nothing listens (over 3 minutes, not
    done, when tried); the job checks the address first and says what to check: the address,
    or the token a cluster with authentication asks for."""
    import socket

    ray = pytest.importorskip("ray")
    if ray.is_initialized():  # a cluster another module left up would take the job
        ray.shutdown()
    reports = write_reports(tmp_path / "reports")

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    request = JobRequest(
        inputs=[str(reports)], options=OPTIONS, workers=2, backend="ray", ray_address=f"127.0.0.1:{port}"
    )
    with (
        scripted_app(tmp_path / "data") as app,
        pytest.raises(TierflowError, match=f"nothing answers at 127.0.0.1:{port}") as info,
    ):
        run_job(request, app, make_tiers=scripted_tiers)
    assert "--ray-address" in info.value.hint and "RAY_AUTH_MODE=token" in info.value.hint
