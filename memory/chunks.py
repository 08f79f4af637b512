"""How documents become the memory's chunks: cut by the batch job's token-aware splitter to
what the embedding model reads whole."""

from __future__ import annotations

from tierflow.agents.fitting import split_to_fit
from tierflow.memory.embeddings import OfflineEmbeddings

__all__ = ["CHUNK_TOKENS", "EmbeddingTokens", "chunks_of"]

CHUNK_TOKENS = 200
"""Embedding-model tokens per chunk, at most: MiniLM reads 256 and cuts the rest off."""


class EmbeddingTokens:
    """Counts tokens as the embedding model does, without its 256-token cut."""

    def __init__(self, embeddings: OfflineEmbeddings) -> None:
        from tokenizers import Tokenizer

        path = embeddings.directory / embeddings.EXTRACTED_FOLDER_NAME / "tokenizer.json"
        self._tokenizer = Tokenizer.from_file(str(path))
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer.encode(text).ids)


def chunks_of(counter: EmbeddingTokens, text: str) -> list[tuple[int, str]]:
    """``text`` cut into chunks of at most ``CHUNK_TOKENS``: (character offset, chunk)."""
    found, cursor = [], 0
    for piece in split_to_fit(counter, text, CHUNK_TOKENS):
        first = piece.split(maxsplit=1)[0] if piece.split() else piece
        at = text.find(first, cursor)
        start = at if at >= 0 else cursor
        found.append((start, piece))
        cursor = start + len(first)
    return found
