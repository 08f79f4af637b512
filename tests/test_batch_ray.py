"""The Ray backend on a real local Ray cluster (ray.init(num_cpus=2)): documents summarized
by Ray actors, traces stored by the driver, a worker that dies replaced and its document
done elsewhere, and a clear error when Ray is not installed."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tierflow.app import App
from tierflow.batch.job import JobRequest, run_job
from tierflow.batch.worker import SummaryOptions
from tierflow.errors import TierflowError

from tests.batch_support import dying_tiers, pid_tiers, scripted_app, scripted_tiers, write_reports

ROOT = Path(__file__).resolve().parents[1]
OPTIONS = SummaryOptions(chunk_tokens=80)


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A local cluster; its actors' dying model marks the file it yields when it dies, and their
    process-naming model writes to ``pids`` beside it."""
    ray = pytest.importorskip("ray")
    flag = tmp_path_factory.mktemp("ray") / "died.flag"
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={
            "env_vars": {
                "PYTHONPATH": str(ROOT),
                "TIERFLOW_TEST_DIE_FLAG": str(flag),
                "TIERFLOW_TEST_PIDS": str(flag.with_name("pids")),
            }
        },
    )
    yield flag
    ray.shutdown()


@pytest.fixture
def reports(tmp_path: Path) -> Path:
    return write_reports(tmp_path / "reports")


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    with scripted_app(tmp_path / "data") as built:
        yield built


def test_a_long_job_on_ray_starts_new_actors_every_so_many_documents(
    ray_cluster: Path, app: App, reports: Path
) -> None:
    request = JobRequest(inputs=[str(reports)], options=OPTIONS, backend="ray", recycle_after=1)
    report = run_job(request, app, make_tiers=pid_tiers)
    assert report.ok and report.totals.succeeded == 3, report.to_markdown()
    # one worker, three documents, each on an actor (a process) of its own
    assert len(set(ray_cluster.with_name("pids").read_text().split())) == 3


def test_ray_actors_summarize_and_the_driver_stores_the_traces(
    ray_cluster: Path, app: App, reports: Path
) -> None:
    request = JobRequest(inputs=[str(reports)], options=OPTIONS, workers=2, backend="ray")
    report = run_job(request, app, make_tiers=scripted_tiers)
    assert report.ok and report.totals.succeeded == 3, report.to_markdown()
    for document in report.documents:
        trace = app.store.get_run(document.run_id)
        assert trace.status == "succeeded" and trace.steps[-1].node == "document_summary"
    assert report.synthesis


def test_a_dead_ray_worker_has_its_document_done_elsewhere(
    ray_cluster: Path, app: App, reports: Path
) -> None:
    (reports / "d_dies.txt").write_text("DIE once, then summarize fine.")
    request = JobRequest(inputs=[str(reports)], options=OPTIONS, workers=2, backend="ray")
    report = run_job(request, app, make_tiers=dying_tiers)
    assert ray_cluster.exists()  # an actor did die
    assert report.ok and report.totals.succeeded == 4, report.to_markdown()


def test_without_ray_the_error_names_the_extra(
    app: App, reports: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    request = JobRequest(inputs=[str(reports)], options=OPTIONS, workers=2, backend="ray")
    with pytest.raises(TierflowError, match="needs Ray") as info:
        run_job(request, app, make_tiers=scripted_tiers)
    assert "tierflow[ray]" in info.value.hint


def test_an_address_given_while_ray_is_up_in_process_is_said_to_be_unused(
    ray_cluster: Path, app: App, reports: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A program that started Ray itself keeps its cluster; an address given to the job as
    well is not used, and the log says so rather than leave it silent."""
    request = JobRequest(
        inputs=[str(reports)], options=OPTIONS, workers=2, backend="ray", ray_address="ray://10.0.0.9:10001"
    )
    with caplog.at_level("WARNING", logger="tierflow"):
        report = run_job(request, app, make_tiers=scripted_tiers)
    assert report.ok
    assert any(
        "already initialized" in r.getMessage() and "10.0.0.9" in r.getMessage() for r in caplog.records
    )
