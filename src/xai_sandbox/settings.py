"""Settings from the environment (prefix ``XAI_SANDBOX_``), with safe defaults for a laptop.

``XAI_SANDBOX_DATA_DIR`` holds the SQLite database and the signing key unless
``XAI_SANDBOX_DATABASE_URL`` and ``XAI_SANDBOX_SIGNING_KEY`` say otherwise.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "cache_dir"]


class Settings(BaseSettings):
    """Where data lives and how long it is kept."""

    # A setting may also come from a file named after it in XAI_SANDBOX_SECRETS_DIR
    # (e.g. /run/secrets/xai_sandbox_database_url), so that secrets stay out of the
    # environment; the environment wins where both name one.
    model_config = SettingsConfigDict(env_prefix="XAI_SANDBOX_", extra="ignore",
                                      secrets_dir=os.environ.get("XAI_SANDBOX_SECRETS_DIR"))

    data_dir: Path = Field(default_factory=lambda: Path.home() / ".local" / "share" /
                           "xai-sandbox")
    database_url: str | None = None
    signing_key: Path | None = None
    log_origin: str = "xai-sandbox.local/audit-log"
    # Retention periods in days; a record is kept for the longest that applies.
    retention_ai_act_days: int = 183       # AI Act Art. 19 / 26(6): at least 6 months
    retention_reg_b_days: int = 761        # Regulation B 1002.12(b): 25 months
    retention_pipl_days: int = 1096        # PIPL Art. 55-56: 3 years

    # Who deploys and who provides the system (report field 3).
    deployer_name: str = "Example Bank AG (demo deployer)"
    # The deployer's name as the Chinese subject view shows it (default: deployer_name).
    deployer_name_zh: str | None = "示例银行股份公司（演示部署方）"
    deployer_contact: str = "dpo@bank.example"
    provider_name: str = "XAI-Sandbox"
    provider_contact: str = "compliance@xai-sandbox.example"

    # The service.
    review_sla_working_days: int = Field(default=7, ge=1, le=90)
    job_workers: int = Field(default=1, ge=0, le=32)
    # Alerts: receivers as "shape=url" items, comma-separated (shapes: generic, wecom,
    # slack, teams); an anchor alert after this many consecutive risky decisions.
    webhooks: str = ""
    alert_streak: int = Field(default=5, ge=1, le=1000)
    # Requests that compute (decisions, ad hoc explanations) at once in one process.
    compute_concurrency: int = Field(default=2, ge=1, le=64)
    job_lease_seconds: float = Field(default=30.0, gt=0)
    # On shutdown (SIGTERM), how long jobs in flight may run on before they are put back
    # in the queue for another worker.
    job_drain_seconds: float = Field(default=20.0, ge=0, le=600)
    # How long the service may remember a valid API key (a revocation takes effect
    # within this time); 0 checks the database on every request.
    key_cache_seconds: float = Field(default=2.0, ge=0, le=60)
    max_body_bytes: int = Field(default=256 * 1024, ge=1024)
    # A model upload (multipart: model file, schema, training sample) has its own limit;
    # it is streamed to disk, never held whole in memory.
    max_upload_bytes: int = Field(default=512 * 1024 * 1024, ge=1024)
    # Uploaded model files, stored by their SHA-256 (default: <data_dir>/models).
    model_dir: Path | None = None
    # Explanation reads per subject and per key, per minute (stops model probing).
    rate_limit_subject_per_minute: int = Field(default=60, ge=1)
    rate_limit_key_per_minute: int = Field(default=600, ge=1)
    # Where the buckets live: "auto" (the database on PostgreSQL, where several API
    # processes share it; this process on SQLite), "database" or "process".
    rate_limit_store: Literal["auto", "database", "process"] = "auto"
    # The web console: how long a sign-in lasts, and whether its cookie is marked Secure
    # (browsers send Secure cookies over HTTPS and to loopback only; turn it off only to
    # try the console over plain HTTP on another host).
    console_session_hours: float = Field(default=8.0, gt=0, le=24 * 7)
    console_secure_cookie: bool = True

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'xai-sandbox.db'}"

    def resolved_signing_key(self) -> Path:
        return self.signing_key or self.data_dir / "keys" / "signing-key.pem"

    def resolved_model_dir(self) -> Path:
        return self.model_dir or self.data_dir / "models"

    def retention_days(self) -> dict[str, int]:
        return {"eu_ai_act_art19": self.retention_ai_act_days,
                "us_reg_b_1002_12": self.retention_reg_b_days,
                "cn_pipl_art56": self.retention_pipl_days}


def cache_dir() -> Path:
    """Where trained models and computed artefacts are cached: ``$XAI_SANDBOX_CACHE`` or
    ``~/.cache/xai-sandbox``, created with owner-only permissions on first use."""
    root = Path(os.environ.get("XAI_SANDBOX_CACHE") or Path.home() / ".cache" / "xai-sandbox")
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    return root
