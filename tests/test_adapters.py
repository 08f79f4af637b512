"""The SLM's LoRA adapters: the store, the promotion verdict, which adapter the SLM loads,
and ``tierflow adapters``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from tierflow.agents.adapters import AdapterCard, AdapterStore, Comparison
from tierflow.app import slm_adapter, slm_name
from tierflow.errors import ConfigError, TaskInputError
from tierflow.settings import Settings

from tests.test_cli import no_traceback, tierflow

GGUF = b"GGUF" + b"\0" * 60


def card(
    name: str, *, promoted: bool = True, base: str = "qwen2.5-coder-0.5b", size: int = 64
) -> AdapterCard:
    return AdapterCard(
        name=name,
        base_model=base,
        base_file_size=len(GGUF),
        created_at=f"2026-12-04T08:00:0{len(name) % 10}",
        nodes=["choose_tool"],
        examples=120,
        promoted=promoted,
        verdict="" if promoted else "10/40 held-out decisions right with the adapter",
    )


def stored(store: AdapterStore, tmp_path: Path, *cards: AdapterCard) -> None:
    for one in cards:
        file = tmp_path / f"{one.name}.gguf"
        file.write_bytes(GGUF)
        store.add(one, file)


def test_a_promotion_needs_the_stated_gain_on_enough_held_out_items() -> None:
    refused, why = Comparison(items=40, base_right=20, adapter_right=21, margin=0.05, min_items=20).verdict()
    assert not refused and "21/40" in why and "20/40" in why and "short of the +5.0%" in why
    few, why = Comparison(items=8, base_right=2, adapter_right=8, margin=0.05, min_items=20).verdict()
    assert not few and "fewer than the 20" in why
    promoted, why = Comparison(items=40, base_right=20, adapter_right=24, margin=0.05, min_items=20).verdict()
    assert promoted and "+10.0%" in why


def test_use_refuses_an_adapter_the_evidence_did_not_promote_and_revert_goes_back(tmp_path: Path) -> None:
    store = AdapterStore(tmp_path / "adapters")
    assert store.active() is None and store.list() == []
    stored(store, tmp_path, card("first"), card("second"), card("weak", promoted=False))
    assert {c.name for c in store.list()} == {"first", "second", "weak"}
    with pytest.raises(TaskInputError, match="was not promoted: 10/40"):
        store.use("weak")
    assert store.active() is None  # the refusal changed nothing
    store.use("first")
    store.use("second")
    assert store.active() == "second"
    assert store.revert() == "first" and store.active() == "first"
    assert store.revert() is None and store.active() is None
    store.use("weak", force=True)
    assert store.active() == "weak"
    with pytest.raises(TaskInputError, match="not an adapter name"):
        store.card("../../etc")
    with pytest.raises(TaskInputError, match="exists"):
        stored(store, tmp_path, card("first"))


def test_the_slm_loads_the_active_adapter_only_when_trained_on_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    base = tmp_path / "base.gguf"
    base.write_bytes(GGUF)
    conf = Settings(data_dir=tmp_path / "data")
    store = AdapterStore(tmp_path / "data" / "adapters")
    assert slm_adapter(conf, base) is None and slm_name(conf) == "qwen2.5-coder-0.5b"
    stored(store, tmp_path, card("mine"), card("other", base="qwen2.5-coder-1.5b"))
    store.use("mine")
    name, file = slm_adapter(conf, base) or ("", Path())
    assert name == "mine" and file == store.file("mine") and file.read_bytes() == GGUF
    assert slm_name(conf, (name, file)) == "qwen2.5-coder-0.5b+mine"  # what the trace records
    assert slm_adapter(conf.model_copy(update={"slm_adapter": "none"}), base) is None
    store.use("other")
    with caplog.at_level(logging.WARNING, logger="tierflow"):
        assert slm_adapter(conf, base) is None  # another SLM's adapter: the base serves
    assert "trained on qwen2.5-coder-1.5b" in caplog.text
    with pytest.raises(ConfigError, match="trained on qwen2.5-coder-1.5b"):
        slm_adapter(conf.model_copy(update={"slm_adapter": "other"}), base)  # asked for by name
    store.use("mine")
    bigger = tmp_path / "bigger.gguf"
    bigger.write_bytes(GGUF * 2)
    assert slm_adapter(conf, bigger) is None  # same name, another file: not the base it learned on


def test_the_adapters_command_lists_uses_and_reverts(tmp_path: Path) -> None:
    env = {"TIERFLOW_DATA_DIR": str(tmp_path / "data")}
    store = AdapterStore(tmp_path / "data" / "adapters")
    empty = tierflow("adapters", "list", env=env)
    assert empty.returncode == 0 and "tierflow learn" in empty.stdout
    stored(store, tmp_path, card("good"), card("weak", promoted=False))
    refused = tierflow("adapters", "use", "weak", env=env)
    assert refused.returncode == 2 and "not promoted" in refused.stderr and "--force" in refused.stderr
    no_traceback(refused)
    used = tierflow("adapters", "use", "good", env=env)
    assert used.returncode == 0 and "calibrate --from-runs" in used.stdout
    listed = json.loads(tierflow("adapters", "list", "--json", env=env).stdout)
    assert listed["active"] == "good" and {a["name"] for a in listed["adapters"]} == {"good", "weak"}
    reverted = tierflow("adapters", "revert", env=env)
    assert reverted.returncode == 0 and "base SLM" in reverted.stdout
    unknown = tierflow("adapters", "use", "nope", env=env)
    assert unknown.returncode == 2 and "good" in unknown.stderr


def test_a_missing_active_adapter_falls_back_to_the_base_slm_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    conf = Settings(data_dir=tmp_path / "data")
    store = AdapterStore(tmp_path / "data" / "adapters")
    stored(store, tmp_path, card("gone"))
    store.use("gone")
    import shutil

    shutil.rmtree(tmp_path / "data" / "adapters" / "gone")  # removed by hand
    with caplog.at_level(logging.WARNING, logger="tierflow"):
        assert slm_adapter(conf) is None
    assert "no adapter named 'gone'" in caplog.text
    with pytest.raises(TaskInputError):
        slm_adapter(conf.model_copy(update={"slm_adapter": "gone"}))  # asked for by name: an error
