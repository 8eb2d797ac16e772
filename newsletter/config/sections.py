"""The settings' shape: one frozen dataclass per TOML section, with their defaults."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import time
from pathlib import Path
from typing import Any, Literal

from newsletter.errors import ConfigError

DEFAULT_CONFIG_NAME = "newsletter.toml"
ENV_PREFIX = "NEWSLETTER_"
PACKAGE_DIR = Path(__file__).resolve().parent.parent  # the ``newsletter`` package


def bundled_dir(name: str) -> Path:
    """A directory shipped with the program: inside the wheel, or at the checkout's root."""
    for candidate in (PACKAGE_DIR / "_bundled" / name, PACKAGE_DIR.parent / name):
        if candidate.is_dir():
            return candidate
    raise ConfigError(f"bundled directory {name!r} is missing from this installation")


def _alias(name: str) -> dict[str, str]:
    return {"toml": name}


@dataclass(frozen=True, slots=True)
class DatabaseSettings:
    url: str = "sqlite:///newsletter.db"
    echo: bool = False


@dataclass(frozen=True, slots=True)
class NewsletterSettings:
    subscribers_dir: Path = Path("subscribers")
    templates_dir: Path | None = None  # None: the bundled templates only
    outbox_dir: Path = Path("outbox")
    from_addr: str = field(default="Research Digest <digest@localhost>", metadata=_alias("from"))
    reply_to: str = ""
    base_url: str = "http://127.0.0.1:8000"
    # SMTP delivery refuses a loopback or plain-http base_url (recipients could not open
    # its links) unless this says the operator means it (a test relay, an intranet).
    allow_insecure_base_url: bool = False
    list_name: str = "Research Digest"
    list_id: str = "digest.localhost"
    unsubscribe_mailto: str = ""  # e.g. unsubscribe@example.org; empty: no mailto fallback
    delivery: Literal["preview", "smtp"] = "preview"
    max_items: int = 10
    # Keyword points per e-fold of upvotes: score = keywords + weight * log1p(upvotes).
    # 0 leaves upvotes as the tie-break only.
    popularity_weight: float = 0.0
    # Upvotes arrive over days: a paper listed on Daily Papers in the last this many
    # days (UTC listing days before the digest's) stays a trending candidate until sent.
    trending_days: int = 3
    send_time: str = "07:00"
    timezone: str = "UTC"
    send_empty: bool = False
    fetch_every_minutes: int = 60
    secret_key_env: str = "NEWSLETTER_SECRET_KEY"
    batch_size: int = 500
    compose_workers: int = 1  # processes composing digests in parallel (send and run)
    max_email_bytes: int = 90_000  # Gmail clips at ~102 KB; leave room for headers
    noun: str = "entry"  # what the copy calls an entry ("3 new entries"); feeds may override
    # A sync refuses to deactivate more than this share of the subscribers at once (or
    # all of them) without --allow-mass-deactivation: an empty directory is not "all left".
    max_deactivate_share: float = 0.2

    @property
    def default_send_time(self) -> time:
        return time.fromisoformat(self.send_time)


@dataclass(frozen=True, slots=True)
class FetchSettings:
    timeout_seconds: float = 20.0
    user_agent: str = "newsletter/0.1 (self-hosted research digest; +https://example.invalid)"
    max_bytes: int = 20_000_000
    workers: int = 4


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    host: str = "localhost"
    port: int = 25
    ssl: bool = False  # implicit TLS (port 465)
    starttls: bool = False
    username: str = ""
    password_env: str = ""  # name of the environment variable holding the password
    timeout_seconds: float = 30.0
    verify_tls: bool = True
    max_per_second: float = 0.0  # 0: no throttle
    max_per_connection: int = 100
    connections: int = 1
    max_attempts: int = 5
    retry_base_seconds: float = 2.0
    retry_max_seconds: float = 300.0


@dataclass(frozen=True, slots=True)
class DkimSettings:
    """DKIM signing done by the program; empty ``selector``: none (the relay may sign)."""

    selector: str = ""
    domain: str = ""  # the d= domain: the From address's domain or its parent
    key_file: Path | None = None  # PEM private key (RSA), readable only by the service

    @property
    def enabled(self) -> bool:
        return bool(self.selector)


@dataclass(frozen=True, slots=True)
class WebSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    keep_digests_days: int = 30  # sent digests kept for /d/<token> ("View in browser"); 0: off


FeedType = Literal["feed", "hf-daily-papers"]
FEED_TYPES: tuple[FeedType, ...] = ("feed", "hf-daily-papers")
HF_DEFAULT_URL = "https://huggingface.co/api/daily_papers"
HF_DEFAULT_DAYS, HF_MAX_DAYS = 3, 30  # days re-read catch late upvotes and missed days


@dataclass(frozen=True, slots=True)
class SubscribeSettings:
    """Self-service: the subscribe page, double opt-in and where its profiles live."""

    enabled: bool = True  # false: /subscribe says subscribing is closed
    allowed_domains: str = ""  # comma-separated, e.g. "uni.example, lab.example"; "": any
    folder: str = "self-service"  # inside subscribers_dir: the web writes only here
    edit_operator_files: bool = False  # may the web edit files outside that folder?
    confirm_hours: int = 48  # how long a confirmation link works
    per_address_per_hour: int = 3  # confirmation emails to one address
    per_client_per_hour: int = 10  # subscribe attempts from one client address

    @property
    def domains(self) -> tuple[str, ...]:
        return tuple(
            d.strip().lower().lstrip("@") for d in self.allowed_domains.split(",") if d.strip()
        )


@dataclass(frozen=True, slots=True)
class QueueSettings:
    """Celery: where batches are queued for ``newsletter worker`` processes (empty: local)."""

    broker_url: str = ""  # redis://host:6379/0 or amqp://user:pass@host:5672//
    batch_size: int = 100  # digests per task
    queue: str = "newsletter"
    task_soft_time_limit: int = 600  # seconds; the task then stops after its messages in flight
    task_time_limit: int = 900  # seconds; the worker child is killed
    lease_seconds: int = 300  # a worker's hold on its batch's digests
    visibility_timeout: int = 3600  # Redis: an unacked task is redelivered after this; > lease

    @property
    def enabled(self) -> bool:
        return bool(self.broker_url)


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    """What an operator scrapes: ``/metrics`` on the web app, and a node_exporter textfile."""

    textfile: Path | None = None  # written by ``run`` and ``send``; None: no file
    token_env: str = ""  # variable holding a bearer token /metrics requires; "": open


@dataclass(frozen=True, slots=True)
class FeedSettings:
    name: str
    url: str  # http(s) URL, or an absolute local path (relative ones are resolved on load)
    enabled: bool = True
    noun: str = ""  # "post", "paper": how the copy names this feed's entries; "": the default
    type: FeedType = "feed"  # "feed": RSS/Atom; "hf-daily-papers": the Daily Papers JSON API
    days: int = HF_DEFAULT_DAYS  # hf-daily-papers: listing days fetched before today

    @property
    def is_remote(self) -> bool:
        return self.url.startswith(("http://", "https://"))


@dataclass(frozen=True, slots=True)
class Settings:
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    newsletter: NewsletterSettings = field(default_factory=NewsletterSettings)
    fetch: FetchSettings = field(default_factory=FetchSettings)
    smtp: SmtpSettings = field(default_factory=SmtpSettings)
    web: WebSettings = field(default_factory=WebSettings)
    dkim: DkimSettings = field(default_factory=DkimSettings)
    subscribe: SubscribeSettings = field(default_factory=SubscribeSettings)
    queue: QueueSettings = field(default_factory=QueueSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    feeds: tuple[FeedSettings, ...] = ()
    config_path: Path | None = None
    base_dir: Path = field(default_factory=Path.cwd)

    def secret(self, env_name: str, env: Mapping[str, str] | None = None) -> str | None:
        """The value of a secret named by a ``*_env`` key; secrets never sit in the file."""
        if not env_name:
            return None
        return (os.environ if env is None else env).get(env_name) or None


_SECTIONS: dict[str, type[Any]] = {
    "database": DatabaseSettings,
    "newsletter": NewsletterSettings,
    "fetch": FetchSettings,
    "smtp": SmtpSettings,
    "web": WebSettings,
    "dkim": DkimSettings,
    "subscribe": SubscribeSettings,
    "queue": QueueSettings,
    "metrics": MetricsSettings,
}
