"""How documents become the memory's chunks: cut by the batch job's token-aware splitter to
what the embedding model reads whole, and embedded under their document's title."""

from __future__ import annotations

from tierflow.graphs.fitting import split_to_fit
from tierflow.memory.embeddings import OfflineEmbeddings

__all__ = ["CHUNK_TOKENS", "EmbeddingTokens", "chunks_of", "title_of", "with_title"]

CHUNK_TOKENS = 200
"""Embedding-model tokens per chunk, at most: MiniLM reads 256 and cuts the rest off."""
TITLE_CHARACTERS = 100
"""The document's title put before each chunk it embeds: its first line, cut to this."""


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


def title_of(text: str) -> str:
    """A document's title: its first line with words, without Markdown's heading marks."""
    for line in text.splitlines():
        title = " ".join(line.strip().lstrip("#").split())
        if any(c.isalnum() for c in title):
            return title[:TITLE_CHARACTERS]
    return ""


def with_title(title: str, chunk: str) -> str:
    """What is embedded for a chunk: the chunk under its document's title, so a chunk deep in
    a document still says what the document is about (the first chunk already does)."""
    if not title or " ".join(chunk.split()).startswith(title):
        return chunk
    return f"{title}\n{chunk}"
