"""Settings: built-in defaults, then the TOML file, then ``NEWSLETTER_*`` variables.

Built once by :func:`load_settings` and passed down; nothing reads a global. Tests build
their own with :func:`settings_from_mapping`, the way Flask's ``create_app`` takes a
``test_config``.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import tomllib
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import time
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from newsletter.errors import ConfigError

DEFAULT_CONFIG_NAME = "newsletter.toml"
ENV_PREFIX = "NEWSLETTER_"
PACKAGE_DIR = Path(__file__).resolve().parent


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
    list_name: str = "Research Digest"
    list_id: str = "digest.localhost"
    unsubscribe_mailto: str = ""  # e.g. unsubscribe@example.org; empty: no mailto fallback
    delivery: Literal["preview", "smtp"] = "preview"
    max_items: int = 10
    # Keyword points per e-fold of upvotes: score = keywords + weight * log1p(upvotes).
    # 0 leaves upvotes as the tie-break only.
    popularity_weight: float = 0.0
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
}


def _toml_name(f: dataclasses.Field[Any]) -> str:
    return str(f.metadata.get("toml", f.name))


def _env_name(section: str, key: str) -> str:
    # The [newsletter] section needs no second prefix: NEWSLETTER_OUTBOX_DIR, not
    # NEWSLETTER_NEWSLETTER_OUTBOX_DIR.
    if section == "newsletter":
        return f"{ENV_PREFIX}{key.upper()}"
    return f"{ENV_PREFIX}{section.upper()}_{key.upper()}"


def _type_label(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return " or ".join(repr(a) for a in get_args(tp))
    if tp is Path:
        return "a path"
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
    return names.get(tp, getattr(tp, "__name__", str(tp)))


def _coerce(value: Any, tp: Any, *, from_env: bool, where: str, key: str) -> Any:
    """Check (or, for env strings, convert) one value against its annotation."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None or (from_env and value == ""):
            return None
        return _coerce(value, args[0], from_env=from_env, where=where, key=key)
    expected = _type_label(tp)
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"expected {expected}, got {value!r}", path=where, key=key)
        return value
    if tp is bool:
        if from_env and isinstance(value, str):
            low = value.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off", ""):
                return False
        if isinstance(value, bool):
            return value
    elif tp is int:
        if from_env and isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        elif isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if from_env and isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        elif isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is Path and isinstance(value, str) and value:
        return Path(value)
    raise ConfigError(f"expected {expected}, got {value!r}", path=where, key=key)


# NEWSLETTER_* names that are not settings: the config path, the simulated clock
# (newsletter.clock), test switches; the names that *_env settings point to (secret
# key, SMTP password) are allowed as well.
_ENV_NOT_SETTINGS = {f"{ENV_PREFIX}CONFIG", f"{ENV_PREFIX}NOW"}
_ENV_FREE_PREFIXES = (f"{ENV_PREFIX}TEST_",)


def _did_you_mean(word: str, choices: Any) -> str:
    """`` (did you mean 'host'?)`` for the closest of ``choices``, or nothing."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _unknown(what: str, word: str, choices: Any) -> str:
    known = ", ".join(sorted(choices))
    hint = _did_you_mean(word, choices)
    return f"unknown {what} {word!r}{hint} (expected one of: {known})"


def _check_env(env: Mapping[str, str], sections: Mapping[str, Any]) -> None:
    """A misspelled ``NEWSLETTER_*`` variable is an error, as a misspelled key is."""
    known = set(_ENV_NOT_SETTINGS)
    for name, cls in _SECTIONS.items():
        for f in dataclasses.fields(cls):
            known.add(_env_name(name, _toml_name(f)))
            value = getattr(sections[name], f.name)
            if f.name.endswith("_env") and isinstance(value, str) and value:
                known.add(value)
    for var in sorted(env):
        if not var.startswith(ENV_PREFIX) or var in known or var.startswith(_ENV_FREE_PREFIXES):
            continue
        # Compared without the shared prefix, which would make every name look close.
        n = len(ENV_PREFIX)
        close = difflib.get_close_matches(var[n:], [k[n:] for k in known], n=1, cutoff=0.6)
        hint = f" (did you mean {ENV_PREFIX + close[0]!r}?)" if close else ""
        raise ConfigError(
            f"unknown variable {var!r}{hint} (a setting's variable is NEWSLETTER_SECTION_KEY, "
            "e.g. NEWSLETTER_SMTP_HOST; see the README's configuration table)",
            path="environment",
        )


def _build_section(
    cls: type[Any], section: str, data: Mapping[str, Any], env: Mapping[str, str], where: str
) -> Any:
    hints = get_type_hints(cls)
    by_toml = {_toml_name(f): f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(by_toml))
    if unknown:
        raise ConfigError(_unknown("key", unknown[0], by_toml), path=where, key=f"[{section}]")
    kwargs: dict[str, Any] = {}
    for toml_key, f in by_toml.items():
        env_key = _env_name(section, toml_key)
        if env_key in env:
            kwargs[f.name] = _coerce(
                env[env_key], hints[f.name], from_env=True, where="environment", key=env_key
            )
        elif toml_key in data:
            kwargs[f.name] = _coerce(
                data[toml_key],
                hints[f.name],
                from_env=False,
                where=where,
                key=f"{section}.{toml_key}",
            )
    return cls(**kwargs)


def _resolve(base: Path, p: Path) -> Path:
    p = p.expanduser()
    return p if p.is_absolute() else (base / p)


def _resolve_sqlite(url: str, base: Path, where: str) -> str:
    """Make a relative SQLite path relative to the config file, not to the cwd."""
    from sqlalchemy.engine import make_url  # here: settings alone need not load SQLAlchemy
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError as e:
        raise ConfigError(
            f"not a valid SQLAlchemy URL: {url!r}", path=where, key="database.url"
        ) from e
    if parsed.get_backend_name() != "sqlite":
        return url
    db = parsed.database
    if not db or db == ":memory:" or db.startswith("file:") or Path(db).is_absolute():
        return url
    return parsed.set(database=str(base / db)).render_as_string(hide_password=False)


def _validate(s: Settings, where: str) -> None:
    n = s.newsletter
    sub = s.subscribe
    folder = Path(sub.folder)
    if (
        not sub.folder
        or folder.is_absolute()
        or ".." in folder.parts
        or folder.parts[0].startswith(".")
    ):
        raise ConfigError(
            f"expected a plain folder name inside subscribers_dir, got {sub.folder!r}",
            path=where,
            key="subscribe.folder",
        )
    for key in ("confirm_hours", "per_address_per_hour", "per_client_per_hour"):
        if getattr(sub, key) < 1:
            raise ConfigError("expected at least 1", path=where, key=f"subscribe.{key}")
    try:
        time.fromisoformat(n.send_time)
    except ValueError as e:
        raise ConfigError(
            f'expected a time like "07:30", got {n.send_time!r}',
            path=where,
            key="newsletter.send_time",
        ) from e
    try:
        ZoneInfo(n.timezone)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise ConfigError(
            f"unknown timezone {n.timezone!r} (expected an IANA name like Europe/Berlin)",
            path=where,
            key="newsletter.timezone",
        ) from e
    if not 0 <= n.max_deactivate_share <= 1:
        raise ConfigError(
            f"expected a share between 0 and 1 (0.2 = 20 %), got {n.max_deactivate_share!r}",
            path=where,
            key="newsletter.max_deactivate_share",
        )
    if not 0 <= n.popularity_weight <= 100:
        raise ConfigError(
            f"expected a number from 0 to 100, got {n.popularity_weight!r}",
            path=where,
            key="newsletter.popularity_weight",
        )
    if not n.base_url.startswith(("http://", "https://")):
        raise ConfigError(
            f"expected an http(s):// URL, got {n.base_url!r}", path=where, key="newsletter.base_url"
        )
    positives = {
        "newsletter.max_items": n.max_items,
        "newsletter.fetch_every_minutes": n.fetch_every_minutes,
        "newsletter.batch_size": n.batch_size,
        "newsletter.compose_workers": n.compose_workers,
        "newsletter.max_email_bytes": n.max_email_bytes,
        "smtp.max_per_connection": s.smtp.max_per_connection,
        "smtp.connections": s.smtp.connections,
        "smtp.max_attempts": s.smtp.max_attempts,
        "fetch.workers": s.fetch.workers,
        "queue.batch_size": s.queue.batch_size,
        "queue.task_time_limit": s.queue.task_time_limit,
        "queue.lease_seconds": s.queue.lease_seconds,
    }
    for key, value in positives.items():
        if value < 1:
            raise ConfigError(f"expected a positive number, got {value!r}", path=where, key=key)
    if s.smtp.ssl and s.smtp.starttls:
        raise ConfigError(
            "ssl and starttls are exclusive: ssl is implicit TLS (port 465), starttls upgrades "
            "a plain connection (port 587)",
            path=where,
            key="smtp.ssl",
        )
    d = s.dkim
    if d.selector or d.domain or d.key_file:
        parts: dict[str, object] = {
            "selector": d.selector,
            "domain": d.domain,
            "key_file": d.key_file,
        }
        for name, part in parts.items():
            if not part:
                raise ConfigError(
                    "DKIM signing needs selector, domain and key_file together",
                    path=where,
                    key=f"dkim.{name}",
                )
    q = s.queue
    if q.enabled:
        if not q.broker_url.startswith(("redis://", "rediss://", "amqp://", "amqps://")):
            msg = f"expected a redis:// or amqp:// URL, got {q.broker_url!r}"
            raise ConfigError(msg, path=where, key="queue.broker_url")
        if q.visibility_timeout <= q.lease_seconds:
            raise ConfigError(
                f"expected more than lease_seconds ({q.lease_seconds}): a task redelivered "
                "before the lease ends would find its digests still held",
                path=where,
                key="queue.visibility_timeout",
            )
        if s.database.url.startswith("sqlite"):
            raise ConfigError(
                "a queue needs a database every worker can reach: set [database] url to "
                "PostgreSQL (SQLite is a file on one machine)",
                path=where,
                key="queue.broker_url",
            )
    if not n.noun.strip():
        raise ConfigError("expected a non-empty noun", path=where, key="newsletter.noun")
    names = [f.name for f in s.feeds]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        entries = [f"[[feeds]] #{i}" for i, name in enumerate(names, start=1) if name == dupes[0]]
        raise ConfigError(
            f"duplicate feed name {dupes[0]!r} in {' and '.join(entries)} (names must be unique)",
            path=where,
            key="feeds.name",
        )


def _feed_type(item: dict[str, Any], where: str, key: str) -> tuple[FeedType, int]:
    """A feed's ``type`` and (Daily Papers only) ``days``, checked."""
    kind, days = item.get("type", "feed"), item.get("days", HF_DEFAULT_DAYS)
    if kind not in FEED_TYPES:
        msg, field_name = f"expected one of {', '.join(FEED_TYPES)}, got {kind!r}", "type"
    elif isinstance(days, bool) or not isinstance(days, int) or not 0 <= days <= HF_MAX_DAYS:
        msg, field_name = f"expected a whole number of days from 0 to {HF_MAX_DAYS}", "days"
    elif "days" in item and kind != "hf-daily-papers":
        msg, field_name = 'days applies to type = "hf-daily-papers" feeds only', "days"
    else:
        return kind, days
    raise ConfigError(msg, path=where, key=f"{key}.{field_name}")


def _build_feeds(raw: Any, base: Path, where: str) -> tuple[FeedSettings, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError("expected an array of tables [[feeds]]", path=where, key="feeds")
    feeds: list[FeedSettings] = []
    allowed = {"name", "url", "enabled", "noun", "type", "days"}
    for i, item in enumerate(raw, start=1):
        key = f"feeds[{i}]"
        if not isinstance(item, dict):
            raise ConfigError("expected a table with name and url", path=where, key=key)
        unknown = sorted(set(item) - allowed)
        if unknown:
            raise ConfigError(_unknown("key", unknown[0], allowed), path=where, key=key)
        kind, days = _feed_type(item, where, key)
        if kind == "hf-daily-papers":
            item = {"url": HF_DEFAULT_URL, **item}
        for req in ("name", "url"):
            if not isinstance(item.get(req), str) or not item[req].strip():
                raise ConfigError("expected a non-empty string", path=where, key=f"{key}.{req}")
        enabled = item.get("enabled", True)
        if not isinstance(enabled, bool):
            raise ConfigError(
                f"expected true or false, got {enabled!r}", path=where, key=f"{key}.enabled"
            )
        noun = item.get("noun", "")
        if not isinstance(noun, str):
            raise ConfigError(f"expected a string, got {noun!r}", path=where, key=f"{key}.noun")
        url = item["url"].strip()
        if "://" in url and not url.startswith(("http://", "https://", "file://")):
            raise ConfigError(
                f"expected an http(s):// URL or a file path, got {url!r}",
                path=where,
                key=f"{key}.url",
            )
        if url.startswith("file://"):
            url = url[len("file://") :]
        if not url.startswith(("http://", "https://")):
            url = str(_resolve(base, Path(url)))
        feeds.append(
            FeedSettings(
                name=item["name"].strip(),
                url=url,
                enabled=enabled,
                noun=noun.strip(),
                type=kind,
                days=days,
            )
        )
    return tuple(feeds)


def settings_from_mapping(
    data: Mapping[str, Any],
    *,
    base_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
    config_path: Path | None = None,
) -> Settings:
    """Build settings from an already-parsed TOML mapping (tests pass their own)."""
    base = (base_dir or Path.cwd()).resolve()
    env = {} if env is None else env
    where = str(config_path) if config_path else "<config>"
    unknown = sorted(set(data) - set(_SECTIONS) - {"feeds"})
    if unknown:
        raise ConfigError(_unknown("section", unknown[0], [*_SECTIONS, "feeds"]), path=where)
    sections: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        raw = data.get(name, {})
        if not isinstance(raw, dict):
            raise ConfigError("expected a table", path=where, key=f"[{name}]")
        sections[name] = _build_section(cls, name, raw, env, where)
    _check_env(env, sections)
    nl: NewsletterSettings = sections["newsletter"]
    sections["newsletter"] = dataclasses.replace(
        nl,
        subscribers_dir=_resolve(base, nl.subscribers_dir),
        templates_dir=_resolve(base, nl.templates_dir) if nl.templates_dir else None,
        outbox_dir=_resolve(base, nl.outbox_dir),
    )
    dk: DkimSettings = sections["dkim"]
    if dk.key_file is not None:
        sections["dkim"] = dataclasses.replace(dk, key_file=_resolve(base, dk.key_file))
    db: DatabaseSettings = sections["database"]
    sections["database"] = dataclasses.replace(db, url=_resolve_sqlite(db.url, base, where))
    settings = Settings(
        **sections,
        feeds=_build_feeds(data.get("feeds"), base, where),
        config_path=config_path,
        base_dir=base,
    )
    _validate(settings, where)
    return settings


def load_settings(
    path: str | Path | None = None, *, env: Mapping[str, str] | None = None
) -> Settings:
    """Load settings once for a process: defaults, then the file, then the environment.

    ``path`` (``--config``) or ``NEWSLETTER_CONFIG`` names the file; a named file must
    exist. Without either, ``./newsletter.toml`` is used if present, else defaults only.
    """
    env = dict(os.environ) if env is None else dict(env)
    explicit = path or env.get(f"{ENV_PREFIX}CONFIG")
    cfg_path = Path(explicit).expanduser() if explicit else Path(DEFAULT_CONFIG_NAME)
    if not cfg_path.exists():
        if explicit:
            raise ConfigError("config file not found", path=str(cfg_path))
        return settings_from_mapping({}, base_dir=Path.cwd(), env=env)
    cfg_path = cfg_path.resolve()
    try:
        data = tomllib.loads(cfg_path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"invalid TOML: {e}", path=str(cfg_path)) from e
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read: {e}", path=str(cfg_path)) from e
    return settings_from_mapping(data, base_dir=cfg_path.parent, env=env, config_path=cfg_path)
