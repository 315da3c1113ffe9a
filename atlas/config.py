"""One settings object, built in the entry point and passed down.

Values come from ``ATLAS_*`` environment variables and, optionally, a TOML file
named by ``ATLAS_CONFIG`` (environment wins). Nothing here runs at import time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

NCBI_EUTILS_URL = "https://eutils.ncbi.nlm.nih.gov/entrez/eutils/"

DEFAULT_QUERY = (
    '"myalgic encephalomyelitis"[tiab] OR "chronic fatigue syndrome"[tiab] OR "ME/CFS"[tiab] '
    'OR "Fatigue Syndrome, Chronic"[mh] OR "systemic exertion intolerance disease"[tiab]'
)


class Settings(BaseSettings):
    """Everything the pipeline can be told. Secrets are ``SecretStr`` so they never print."""

    model_config = SettingsConfigDict(env_prefix="ATLAS_", extra="forbid", validate_default=True)

    # where things live
    data_dir: Path = Path("data")
    db_path: Path | None = None
    snapshot_path: Path | None = None
    policy_path: Path = Path("policies/v0.1.yaml")

    # NCBI E-utilities
    eutils_url: str = NCBI_EUTILS_URL
    ncbi_tool: str = "mecfs-atlas"
    ncbi_email: str | None = None
    ncbi_api_key: SecretStr | None = None
    requests_per_second: float | None = None  # None: 3, or 10 with an API key
    query: str = DEFAULT_QUERY
    overlap_days: int = Field(default=3, ge=0)
    first_run_days: int = Field(default=30, ge=1)
    batch_size: int = Field(default=200, ge=1, le=10_000)
    http_timeout: float = Field(default=30.0, gt=0)
    max_retries: int = Field(default=6, ge=0)
    retry_wait_base: float = Field(default=1.0, ge=0)  # seconds; backoff doubles from here (with jitter)
    fetch_fulltext: bool = True

    # LLM (generator/llm.py); no base_url means the offline extractive backend
    llm_base_url: str | None = None
    llm_api_key: SecretStr | None = None
    llm_model: str = "gpt-4o-mini"
    llm_timeout: float = Field(default=60.0, gt=0)
    llm_concurrency: int = Field(default=4, ge=1, le=256)
    llm_requests_per_minute: int | None = None
    llm_tokens_per_minute: int | None = None
    llm_max_retries: int = Field(default=5, ge=0)
    # USD per million tokens, per model: {"gpt-4o-mini": {"input": 0.15, "output": 0.6}}
    llm_prices: dict[str, dict[str, float]] = Field(default_factory=dict)
    llm_extractor: bool = False
    llm_max_cost_per_run: float | None = Field(default=None, ge=0)  # USD; the nightly run stops generating there
    # tokens a reply may use at most (max_completion_tokens): bounds each call's cost, which a cap reserves in full
    llm_max_output_tokens: int = Field(default=1500, ge=64, le=100_000)

    @field_validator("eutils_url")
    @classmethod
    def _trailing_slash(cls, value: str) -> str:
        return value if value.endswith("/") else value + "/"

    @property
    def database(self) -> Path:
        return self.db_path or self.data_dir / "atlas.duckdb"

    @property
    def snapshot(self) -> Path:
        return self.snapshot_path or self.data_dir / "atlas.snapshot.duckdb"

    @property
    def rate_limit(self) -> float:
        if self.requests_per_second:
            return self.requests_per_second
        return 10.0 if self.ncbi_api_key else 3.0

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
        config_file = os.environ.get("ATLAS_CONFIG")
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)


def settings_for_database(db_path: str | Path | None, overrides: dict[str, Any] | None = None) -> Settings:
    """Settings for work on one database file, which publishes its snapshot, exports and pages beside it.

    Without this, ``--db /elsewhere/atlas.duckdb`` would publish into ``./data``;
    ``overrides`` may still name another ``data_dir``.
    """
    chosen = dict(overrides or {})
    if db_path:
        chosen.setdefault("data_dir", str(Path(db_path).parent))
        chosen["db_path"] = str(db_path)
    return load_settings(**chosen)


def load_settings(**overrides: Any) -> Settings:
    """Build settings from the environment (and ATLAS_CONFIG), with explicit overrides on top."""
    if os.environ.get("ATLAS_CONFIG") and not Path(os.environ["ATLAS_CONFIG"]).is_file():
        from atlas.errors import ConfigError

        raise ConfigError(f"ATLAS_CONFIG points to {os.environ['ATLAS_CONFIG']!r}, which is not a file")
    return Settings(**overrides)
