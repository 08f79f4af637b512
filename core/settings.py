"""tierflow's settings: one pydantic-settings object, read once at the entry point.

Sources, highest first: keyword arguments, ``TIERFLOW_*`` environment variables (nested
with ``__``, e.g. ``TIERFLOW_POLICY__ANSWER=llm``), then a TOML config file
(``TIERFLOW_CONFIG`` or ``~/.config/tierflow/config.toml``). Library code receives a
``Settings`` instance and never reads the environment itself.
"""

from __future__ import annotations

import difflib
import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Self, cast

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from pydantic_settings.exceptions import SettingsError
from tierflow import paths
from tierflow.agents.policy import POLICY_PRESETS, TierChoice, TierPolicy
from tierflow.errors import ConfigError, describe_validation_error
from tierflow.secrets import install_log_scrubbing, register, scrub, secret_env_values, url_password
from tierflow.tools.limits import ToolLimits

if TYPE_CHECKING:
    from tierflow.agents.budget import Prices

__all__ = ["Settings", "TierPolicy", "TierChoice", "load_settings", "POLICY_PRESETS"]


@dataclass(frozen=True)
class LLMProvider:
    """Where a common OpenAI-compatible server listens by default, and the structured-output
    form it takes."""

    base_url: str
    response_format: Literal["json_schema", "llamacpp"]


LLM_PROVIDERS: dict[str, LLMProvider] = {
    "openai": LLMProvider("https://api.openai.com/v1", "json_schema"),
    "vllm": LLMProvider("http://127.0.0.1:8000/v1", "json_schema"),
    "ollama": LLMProvider("http://127.0.0.1:11434/v1", "json_schema"),
    "llamacpp": LLMProvider("http://127.0.0.1:8080/v1", "llamacpp"),  # llama.cpp's llama-server
}
"""The providers of the ``llm`` and ``slm`` shorthands (``TIERFLOW_LLM=ollama:llama3.2``)."""


class Settings(BaseSettings):
    """Every setting, from keyword arguments, ``TIERFLOW_*`` variables and a TOML file;
    build it once with ``load_settings()`` at an entry point and pass it down."""

    model_config = SettingsConfigDict(
        env_prefix="TIERFLOW_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    # The small model: in process, or on an OpenAI-compatible server the user runs. ``slm`` is
    # a shorthand (``llamacpp:qwen2.5-coder-0.5b``, ``ollama:qwen2.5:0.5b``) filling the server's
    # address and the model's name (slm_base_url, slm_model).
    slm: str | None = Field(None, description="provider:model of an SLM server; unset: in process")
    slm_model: str = Field(
        "qwen2.5-coder-0.5b",
        description="catalog name, GGUF path or hf:OWNER/REPO/FILE.gguf; with slm_base_url, the "
        "model's name at that server",
    )
    slm_base_url: str | None = Field(None, description="an OpenAI-compatible SLM server; unset: in process")
    slm_api_key: SecretStr | None = None
    slm_timeout: float = Field(60.0, gt=0)
    slm_response_format: Literal["auto", "json_schema", "llamacpp", "none"] = Field(
        "auto", description="how the SLM server takes a JSON schema (as llm_response_format)"
    )
    slm_top_logprobs: int = Field(
        10,
        ge=0,
        le=20,
        description="the most likely tokens an SLM server reports per position, for the escalation "
        "signals (0: ask for none)",
    )
    slm_n_ctx: int = Field(4096, ge=512)
    slm_threads: int | None = Field(None, ge=1, description="default: all cores")
    slm_adapter: str = Field(
        "auto",
        description="the SLM's LoRA adapter: auto (the one `tierflow adapters use` made active, "
        "if trained on this SLM), none, an adapter's name, or a GGUF LoRA file",
    )
    seed: int = 0

    # The large model (any OpenAI-compatible endpoint, or the embedded llama.cpp server).
    # ``llm`` is a shorthand (``openai:gpt-4o-mini``, ``ollama:llama3.2``) filling the three
    # fields below it; OPENAI_BASE_URL and OPENAI_API_KEY stand in for unset base URL and key.
    llm: str | None = Field(None, description="provider:model; providers: " + ", ".join(LLM_PROVIDERS))
    llm_base_url: str | None = Field(None, description="unset: start the embedded server")
    llm_api_key: SecretStr | None = None
    llm_model: str | None = Field(None, description="model name at the endpoint")
    llm_timeout: float = Field(180.0, gt=0)
    llm_max_retries: int = Field(2, ge=0)
    llm_response_format: Literal["auto", "json_schema", "llamacpp", "none"] = Field(
        "auto", description="auto: json_schema, or llama.cpp's form when the server refuses it"
    )
    llm_token_parameter: Literal["auto", "max_tokens", "max_completion_tokens"] = Field(
        "auto", description="auto: by endpoint and model name, switched once when the server refuses it"
    )
    llm_temperature: float | None = Field(
        0.0, ge=0.0, le=2.0, description="'default': never sent; dropped when the server refuses it"
    )
    llm_native_tools: Literal["auto", "on", "off"] = Field(
        "auto", description="the endpoint's tools= parameter; auto: try it, fall back when refused"
    )
    embedded_llm_model: str = Field("qwen2.5-coder-1.5b", description="catalog name or GGUF path")
    embedded_llm_n_ctx: int = Field(4096, ge=512)
    embedded_llm_threads: int | None = Field(None, ge=1)
    local_models_take_turns: bool = Field(
        True,
        description="the in-process SLM and the embedded LLM never compute at once (they share the "
        "cores); false for a machine whose cores are split between them by the two thread settings",
    )
    embedded_llm_startup_timeout: float = Field(120.0, gt=0)

    # Storage.
    database_url: str | None = Field(None, description="default: SQLite in the data directory")
    data_dir: Path | None = None
    results_dir: Path | None = Field(
        None,
        description="where tierflow eval writes: evals/results/ in a checkout, else <data dir>/results",
    )
    models_dir: Path | None = None
    auto_pull: bool = True

    # The task graph.
    workspace: Path | None = Field(None, description="tools' sandbox; default: current directory")
    policy: TierPolicy = Field(default_factory=TierPolicy)
    max_steps: int = Field(6, ge=1, le=50)
    escalation_scorer: Path | None = Field(
        None,
        description="a scorer file fitted for your model pair (tierflow eval routing --train "
        "writes one to the results dir); default: the one shipped with tierflow",
    )
    shadow_rate: float = Field(
        0.02,
        ge=0,
        le=1,
        description="the share of kept SLM outputs of kit steps also sent to the LLM after the "
        "step, to label them for `tierflow calibrate --from-runs` (0 turns it off; never under "
        "local-only, always within the run's budget)",
    )
    shadow_rates: dict[str, float] = Field(
        default_factory=dict,
        description="per node, a shadow share that replaces shadow_rate, e.g. "
        '{"classify": 0.1, "draft_reply": 0}',
    )
    step_priors: bool = Field(
        True,
        description="judge kit choose/extract steps that no calibration covers with the priors "
        "shipped with tierflow (fitted on BFCL tool calls); false: by validation alone",
    )
    # What the console's cost view prices LLM tokens at (US$ per million tokens).
    llm_price_prompt_per_mtok: float = Field(2.5, ge=0)
    llm_price_completion_per_mtok: float = Field(10.0, ge=0)
    # The console (``tierflow ui``): loopback only unless told otherwise.
    ui_host: str = "127.0.0.1"
    ui_port: int = Field(8501, ge=1, le=65535)
    summarize_over_chars: int = Field(1200, ge=100)
    # Every tool call runs under these limits (a tool may set its own with @tool(timeout_s=...)).
    tool_timeout_s: float = Field(10.0, gt=0, le=3600, description="a tool call past it is stopped")
    tool_max_result_chars: int = Field(200_000, ge=100, description="a longer tool result is an error")
    tool_memory_mb: int = Field(1024, ge=16, description="memory a tool call may add")
    # The memory of verified decisions (chromadb; offline embeddings from the models folder).
    memory: bool = Field(True, description="show the SLM similar verified decisions; shortlist many tools")
    learn: bool = Field(True, description="store the decisions runs verify (online learning)")
    memory_dir: Path | None = Field(None, description="default: <data dir>/memory")
    memory_examples: int = Field(3, ge=0, le=10, description="past decisions shown per prompt")
    plan_reuse_similarity: float = Field(
        0.93, ge=0.0, le=1.0, description="reuse the plan of a past task at least this similar (1: never)"
    )

    @field_validator("llm_temperature", mode="before")
    @classmethod
    def _server_default_temperature(cls, value: Any) -> Any:
        """``TIERFLOW_LLM_TEMPERATURE=default`` (or ``none``) sends none: the server's applies."""
        if isinstance(value, str) and value.strip().lower() in {"", "default", "none"}:
            return None
        return value

    @model_validator(mode="after")
    def _resolve_llm_endpoint(self) -> Self:
        """Fill the endpoint from the ``llm`` shorthand, then from the OpenAI SDK's own
        variables (OPENAI_BASE_URL, OPENAI_API_KEY). A field set explicitly always wins, and
        OPENAI_BASE_URL only stands in for OpenAI: ``ollama:...`` keeps Ollama's address."""
        openai_url = os.environ.get("OPENAI_BASE_URL") or None
        openai_key = os.environ.get("OPENAI_API_KEY") or None
        if self.llm:
            name, provider, model = _shorthand(self.llm, "LLM")
            if self.llm_base_url is None:
                self.llm_base_url = (openai_url if name == "openai" else None) or provider.base_url
            self.llm_model = self.llm_model or model
            if self.llm_response_format == "auto":
                self.llm_response_format = provider.response_format
        elif self.llm_base_url is None:
            self.llm_base_url = openai_url  # a remote endpoint, not the embedded server
        if self.llm_api_key is None and openai_key:
            self.llm_api_key = SecretStr(openai_key)
        if self.slm:
            _, provider, model = _shorthand(self.slm, "SLM")
            self.slm_base_url = self.slm_base_url or provider.base_url
            if "slm_model" not in self.model_fields_set:
                self.slm_model = model
            if self.slm_response_format == "auto":
                self.slm_response_format = provider.response_format
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if settings_cls.model_config.get("toml_file"):
            sources.append(TomlConfigSettingsSource(settings_cls))
        return tuple(sources)

    def tool_limits(self) -> ToolLimits:
        return ToolLimits(
            timeout_s=self.tool_timeout_s,
            max_result_chars=self.tool_max_result_chars,
            memory_mb=self.tool_memory_mb,
        )

    # Derived locations ---------------------------------------------------------------
    def resolved_data_dir(self) -> Path:
        return self.data_dir or paths.data_dir()

    def scorers_dir(self) -> Path:
        """Where ``tierflow calibrate`` keeps each graph's step scorers."""
        return self.resolved_data_dir() / "scorers"

    def documents_dir(self) -> Path:
        """Where the users' documents are kept (``tierflow memory add``)."""
        return self.resolved_memory_dir() / "documents"

    def resolved_results_dir(self) -> Path:
        """Evaluation results: the setting, else the checkout's evals/results/, else the
        data directory's results/ (never the installed package)."""
        return self.results_dir or paths.checkout_results_dir() or self.resolved_data_dir() / "results"

    def resolved_memory_dir(self) -> Path:
        return self.memory_dir or self.resolved_data_dir() / "memory"

    def resolved_models_dir(self) -> Path:
        return self.models_dir or paths.cache_dir() / "models"

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.resolved_data_dir() / 'tierflow.db'}"

    def checkpoint_path(self) -> Path:
        return self.resolved_data_dir() / "checkpoints.sqlite"

    def resolved_workspace(self) -> Path:
        return (self.workspace or Path.cwd()).resolve()

    def prices(self) -> Prices:
        """What an LLM token costs, for budgets and the console's cost view."""
        from tierflow.agents.budget import Prices

        return Prices(self.llm_price_prompt_per_mtok, self.llm_price_completion_per_mtok)

    def secrets(self) -> list[str]:
        """Values that must never reach a trace, a checkpoint, a log or the screen: the API
        key, passwords in the endpoint's and the database's URLs, and the values of
        environment variables named like secrets (``tierflow.secrets``)."""
        keys = [key.get_secret_value() for key in (self.llm_api_key, self.slm_api_key) if key]
        urls = (self.llm_base_url, self.slm_base_url, self.database_url)
        passwords = [url_password(url) for url in urls]
        found = [*keys, *(p for p in passwords if p), *secret_env_values()]
        return [value for value in dict.fromkeys(found) if len(value) >= 4]

    def masked(self) -> dict[str, Any]:
        """The effective settings as plain data, secrets masked, for display and traces."""
        data: dict[str, Any] = json.loads(self.model_dump_json())
        data["llm_api_key"] = _mask(self.llm_api_key)
        data["slm_api_key"] = _mask(self.slm_api_key)
        data["slm_base_url"] = scrub(self.slm_base_url) if self.slm_base_url else "(in process)"
        data["llm_base_url"] = (
            scrub(self.llm_base_url) if self.llm_base_url else "(embedded llama.cpp server)"
        )
        data["database_url"] = scrub(self.resolved_database_url())
        data["data_dir"] = str(self.resolved_data_dir())
        data["models_dir"] = str(self.resolved_models_dir())
        data["workspace"] = str(self.resolved_workspace())
        return data


_NOT_FIELDS = frozenset(
    {"TIERFLOW_CONFIG", "TIERFLOW_UI_TOKEN", "TIERFLOW_OTEL_CONTENT", "TIERFLOW_SCREENSHOTS"}
)
"""Variables tierflow reads that are not settings fields."""


def unknown_env(environ: Mapping[str, str] | None = None) -> list[str]:
    """``TIERFLOW_*`` variables that set nothing (misspelled?), each with a suggestion."""
    source = os.environ if environ is None else environ
    known = {f"TIERFLOW_{name.upper()}" for name in Settings.model_fields} | _NOT_FIELDS
    policy_fields = {f"TIERFLOW_POLICY__{name.upper()}" for name in TierPolicy.model_fields}
    problems = []
    for name in sorted(source):
        upper = name.upper()
        if not upper.startswith("TIERFLOW_") or upper in known:
            continue
        if upper.startswith("TIERFLOW_POLICY__"):  # a policy field, or an override of any node
            continue
        close = difflib.get_close_matches(upper, sorted(known | policy_fields), n=1, cutoff=0.75)
        problems.append(f"{name} is not a setting" + (f" (did you mean {close[0]}?)" if close else ""))
    return problems


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings at an entry point (CLI, UI, job).

    ``config_file``: a TOML file; default ``$TIERFLOW_CONFIG`` or the user config file when
    it exists. A named file that does not exist is an error.
    """
    from pydantic import ValidationError

    env_file = os.environ.get("TIERFLOW_CONFIG")
    chosen = config_file or (Path(env_file) if env_file else None)
    if chosen is not None and not chosen.is_file():
        raise ConfigError(
            f"config file {chosen} does not exist",
            hint="Create it, or unset TIERFLOW_CONFIG / drop --config.",
        )
    if chosen is None and paths.config_file().is_file():
        chosen = paths.config_file()
    settings_cls: type[Settings] = Settings
    if chosen is not None:
        config = SettingsConfigDict(**{**Settings.model_config, "toml_file": chosen})
        settings_cls = cast(type[Settings], type("Settings", (Settings,), {"model_config": config}))
    try:
        loaded = settings_cls(**overrides)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"config file {chosen} is not valid TOML: {exc}",
            hint="Fix the file (a TOML table of settings, UTF-8), or point --config / TIERFLOW_CONFIG "
            "at another one.",
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {chosen}: {exc.strerror or exc}") from None
    except SettingsError as exc:  # a complex value (TIERFLOW_POLICY) that is not JSON
        cause = exc.__cause__
        raise ConfigError(
            f"invalid settings: {exc}" + (f" ({cause})" if cause else ""),
            hint="Complex settings such as TIERFLOW_POLICY take JSON, e.g. "
            'TIERFLOW_POLICY=\'{"default": "tiered"}\', or set one field: TIERFLOW_POLICY__DEFAULT=slm.',
        ) from None
    except ValidationError as exc:
        problems = describe_validation_error(exc, "settings")
        where = f" (config file {chosen})" if chosen else ""
        raise ConfigError(
            f"invalid settings{where}: {problems}",
            hint="Fix the TIERFLOW_* environment variable or config entry named above; "
            "`tierflow config` shows the effective values.",
        ) from None
    register(loaded.secrets())
    install_log_scrubbing()
    return loaded


def _shorthand(value: str, tier: Literal["LLM", "SLM"]) -> tuple[str, LLMProvider, str]:
    """``provider:model`` split and checked; the model may hold colons (``ollama:llama3.2:3b``)."""
    name, _, model = value.partition(":")
    name, model = name.strip().lower(), model.strip()
    example = "ollama:llama3.2" if tier == "LLM" else "llamacpp:qwen2.5-coder-0.5b"
    hint = (
        f"TIERFLOW_{tier} takes provider:model with provider one of "
        + ", ".join(LLM_PROVIDERS)
        + f" (e.g. TIERFLOW_{tier}={example}); for another endpoint set TIERFLOW_{tier}_BASE_URL "
        f"and TIERFLOW_{tier}_MODEL instead."
    )
    if not model:
        raise ConfigError(f"TIERFLOW_{tier}={value!r} is not provider:model", hint=hint)
    if name not in LLM_PROVIDERS:
        raise ConfigError(f"unknown {tier} provider {name!r} in TIERFLOW_{tier}={value!r}", hint=hint)
    return name, LLM_PROVIDERS[name], model


def _mask(secret: SecretStr | None) -> str | None:
    if secret is None:
        return None
    return "**** (set)" if secret.get_secret_value() else None
