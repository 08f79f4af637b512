"""``tierflow adapters list/use/revert``: the SLM's LoRA adapters and which one it loads."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

import typer
from rich.markup import escape
from tierflow.cli.support import JsonOption, emit_json, out, settings

__all__ = ["adapters_app"]

adapters_app = typer.Typer(
    no_args_is_help=True,
    help="The SLM's LoRA adapters (trained by `tierflow learn`) and which one the SLM loads.",
)


@adapters_app.command("list")
def adapters_list(as_json: JsonOption = False) -> None:
    """List the adapters, newest first: base model, examples, the held-out comparison, and
    which one is active."""
    from tierflow.app import adapter_store

    store = adapter_store(settings())
    active = store.active()
    cards = store.list()
    if as_json:
        emit_json({"active": active, "adapters": [asdict(card) for card in cards]})
        return
    if not cards:
        out.print("No adapters yet: `tierflow learn` trains one from the runs' verified decisions.")
        return
    out.print(f"active: [bold]{escape(active or 'none (the base SLM)')}[/]")
    for card in cards:
        mark = "[green]promoted[/]" if card.promoted else "[yellow]not promoted[/]"
        star = "*" if card.name == active else " "
        out.print(
            f"{star} [bold]{escape(card.name)}[/] {mark} on {escape(card.base_model)}, "
            f"{card.examples} examples ({escape(', '.join(card.nodes))})"
        )
        if card.verdict:
            out.print(f"    {escape(card.verdict)}", style="dim")


@adapters_app.command("use")
def adapters_use(
    name: Annotated[str, typer.Argument(help="An adapter's name (tierflow adapters list).")],
    force: Annotated[bool, typer.Option(help="Use an adapter its comparison did not promote.")] = False,
) -> None:
    """Make the SLM load this adapter (from the next run on)."""
    from tierflow.app import adapter_store

    conf = settings()
    card = adapter_store(conf).use(name, force=force)
    note: dict[str, Any] = {}
    if card.base_model != conf.slm_model:
        note["warning"] = (
            f"it was trained on {card.base_model}; the SLM is {conf.slm_model}, so it is skipped "
            "until that SLM is configured"
        )
    out.print(f"The SLM loads [bold]{escape(name)}[/] from the next run on.")
    if note:
        out.print(f"[yellow]{escape(note['warning'])}[/]")
    out.print(
        "[dim]Escalation scores calibrated on the base SLM do not judge the adapted one: refit "
        "them with `tierflow calibrate --from-runs` once runs have gathered labels.[/]"
    )


@adapters_app.command("revert")
def adapters_revert() -> None:
    """Go back to the adapter active before the current one (or to the base SLM)."""
    from tierflow.app import adapter_store

    previous = adapter_store(settings()).revert()
    out.print(
        f"The SLM loads {escape(previous) if previous else 'no adapter (the base SLM)'} from the next run on."
    )
