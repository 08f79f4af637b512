from pathlib import Path

import pytest
from tierflow.errors import ConfigError
from tierflow.settings import TierPolicy, load_settings


def test_defaults_and_derived_locations(isolated_env: Path) -> None:
    settings = load_settings()
    assert settings.slm_model == "qwen2.5-coder-0.5b"
    assert settings.embedded_llm_model == "qwen2.5-coder-1.5b"
    assert settings.llm_base_url is None
    assert settings.resolved_database_url() == f"sqlite:///{isolated_env / 'tierflow.db'}"
    assert settings.policy == TierPolicy.preset("tiered")
    assert (
        settings.policy.for_node("plan", "llm") == "llm"
        and settings.policy.for_node("select_tool") == "tiered"
    )


def test_environment_including_nested_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIERFLOW_SLM_MODEL", "/models/mine.gguf")
    monkeypatch.setenv("TIERFLOW_POLICY__ANSWER", "llm")
    monkeypatch.setenv("TIERFLOW_LLM_TIMEOUT", "5")
    settings = load_settings()
    assert settings.slm_model == "/models/mine.gguf"
    assert settings.policy.nodes == {"answer": "llm"}  # flat keys are node overrides
    assert (
        settings.policy.for_node("answer") == "llm" and settings.policy.for_node("extract_args") == "tiered"
    )
    assert settings.llm_timeout == 5


def test_config_file_below_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "tierflow.toml"
    config.write_text('max_steps = 3\nllm_model = "from-file"\n[policy]\nplan = "tiered"\n')
    monkeypatch.setenv("TIERFLOW_LLM_MODEL", "from-env")
    settings = load_settings(config)
    assert settings.max_steps == 3 and settings.policy.for_node("plan", "llm") == "tiered"
    assert settings.llm_model == "from-env"
    monkeypatch.setenv("TIERFLOW_CONFIG", str(config))
    assert load_settings().max_steps == 3


def test_bad_values_and_missing_files_are_clear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIERFLOW_POLICY__PLAN", "gpt")
    with pytest.raises(ConfigError, match="policy.nodes.plan") as info:
        load_settings()
    assert "TIERFLOW_" in info.value.hint
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.toml")


def test_secrets_are_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIERFLOW_LLM_API_KEY", "sk-live-abcdef123456")
    monkeypatch.setenv("TIERFLOW_DATABASE_URL", "postgresql://bob:hunter2@db/tierflow")
    settings = load_settings()
    shown = str(settings.masked())
    assert "abcdef123456" not in shown and "hunter2" not in shown
    assert {"sk-live-abcdef123456", "hunter2"} <= set(settings.secrets())  # scrubbed wherever seen


def test_policy_presets_and_overrides_for_any_node() -> None:
    nodes = ["plan", "classify", "draft_reply", "anything"]
    assert {TierPolicy.preset("slm").for_node(node, "llm") for node in nodes} == {"slm"}
    assert {TierPolicy.preset("llm").for_node(node) for node in nodes} == {"llm"}
    tiered = TierPolicy.preset("tiered")
    assert tiered.for_node("classify") == "tiered" and tiered.for_node("plan", "llm") == "llm"
    assert TierPolicy.preset("slm").tiers_used() == {"slm"}
    assert TierPolicy().tiers_used() == {"slm", "llm"}
    assert TierPolicy.preset("tiered") == TierPolicy()
    custom = TierPolicy.preset("slm").with_overrides({"draft_reply": "llm"})
    assert custom.for_node("draft_reply") == "llm" and custom.for_node("classify") == "slm"
    assert custom.label() == "custom" and TierPolicy.preset("llm").label() == "llm"
    with pytest.raises(ConfigError, match="unknown policy"):
        TierPolicy.preset("cheap")
    with pytest.raises(ValueError, match="nodes.act"):
        TierPolicy.model_validate({"act": "gpt"})


def test_variables_tierflow_reads_besides_its_settings_are_not_called_misspelled() -> None:
    from tierflow.settings import unknown_env

    environ = {"TIERFLOW_OTEL_CONTENT": "true", "TIERFLOW_UI_TOKEN": "x", "TIERFLOW_SLM_MODLE": "y"}
    [problem] = unknown_env(environ)
    assert "TIERFLOW_SLM_MODLE" in problem and "TIERFLOW_SLM_MODEL" in problem
