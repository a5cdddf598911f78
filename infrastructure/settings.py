"""Every setting of gnlc, read from the environment (`GNLC_*`) in this one place."""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from infrastructure.eventstore.data_keys import master_key


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GNLC_", extra="ignore")

    database_url: str = Field(
        default="sqlite:///./var/gnlc.sqlite",
        description="sqlite:///PATH (embedded) or postgresql://USER@HOST:PORT/DB[?schema=NAME]",
    )
    timezone: str = Field(default="Europe/Berlin", description="the secretariat's time zone")
    lock_timeout_seconds: int = Field(
        default=30, ge=1, description="how long a writer waits for the store's write lock"
    )
    rate_limit: float = Field(
        default=20.0, ge=0, description="HTTP requests a second per token on average; 0: off"
    )
    rate_burst: int = Field(
        default=200, ge=0, description="HTTP requests a token may send at once; 0: no limit"
    )
    http_workers: int = Field(
        default=1, ge=1, le=64, description="server processes of `gnlc serve` (each with its own "
        "event loop; the per-token rate is shared out among them)"
    )
    address_rate_limit: float = Field(
        default=1.0, ge=0, description="failed authentications a second per client address on "
        "average; beyond them the address's unknown tokens are refused (429) before any lookup; "
        "0: off"
    )
    address_rate_burst: int = Field(
        default=100, ge=0, description="failed authentications a client address may have at "
        "once; 0: no limit"
    )
    streams_per_token: int = Field(
        default=4, ge=0, description="live event streams (SSE) a token may hold open at once, "
        "per server process; 0: no limit"
    )
    past_replays: int = Field(
        default=2, ge=1, description="replays of the log to a past point (`as_of`, `known_at`) "
        "running at once, per process; beyond them a request gets 503 with Retry-After"
    )
    stream_heartbeat_seconds: float = Field(
        default=15.0, gt=0, description="seconds without events after which the SSE stream "
        "sends a heartbeat comment"
    )

    master_key: SecretStr | None = Field(
        default=None, description="32 bytes in base64 (`gnlc privacy new-master-key` makes "
        "one): every data key of personal values is stored wrapped by it; without it they are "
        "stored as they are"
    )

    @field_validator("master_key")
    @classmethod
    def _master_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            master_key(value.get_secret_value())  # refuses anything but 32 bytes in base64
        return value or None

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value


def settings_environment(settings: Settings) -> dict[str, str]:
    """The settings as `GNLC_*` variables: what a child process reads back as the same settings."""
    values = settings.model_dump()
    if settings.master_key is not None:
        values["master_key"] = settings.master_key.get_secret_value()
    return {f"GNLC_{name.upper()}": str(value)
            for name, value in values.items() if value is not None}
