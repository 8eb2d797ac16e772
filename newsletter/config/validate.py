"""Checks across keys that types alone cannot express (ranges, zones, URLs, feeds)."""

from __future__ import annotations

import ipaddress
from datetime import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from newsletter.config.sections import (
    FEED_TYPES,
    HF_DEFAULT_DAYS,
    HF_MAX_DAYS,
    FeedType,
    Settings,
)
from newsletter.errors import ConfigError


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
    if not 0 <= n.trending_days <= HF_MAX_DAYS:
        raise ConfigError(
            f"expected a whole number of days from 0 to {HF_MAX_DAYS}, got {n.trending_days!r}",
            path=where,
            key="newsletter.trending_days",
        )
    keep = s.web.keep_digests_days
    if isinstance(keep, bool) or not isinstance(keep, int) or not 0 <= keep <= 3650:
        raise ConfigError(
            f"expected a whole number of days from 0 (keep none) to 3650, got {keep!r}",
            path=where,
            key="web.keep_digests_days",
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


def _insecure_reason(base_url: str) -> str | None:
    """Why recipients could not safely open ``base_url``'s links, or None."""
    host = (urlsplit(base_url).hostname or "").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return "a loopback address"
    try:
        if ipaddress.ip_address(host).is_loopback:
            return "a loopback address"
    except ValueError:
        pass
    if not base_url.lower().startswith("https://"):
        return "not HTTPS"
    return None


def check_base_url_for_smtp(settings: Settings) -> None:
    """Refuse real mail whose links point at this machine or go over plain http.

    ``base_url`` defaults to the development server, and ``newsletter init`` writes that
    default: switching ``delivery`` to ``"smtp"`` alone would mail every subscriber
    unsubscribe links they cannot open. Preview mode is not checked.
    """
    n = settings.newsletter
    if n.delivery != "smtp" or n.allow_insecure_base_url:
        return
    reason = _insecure_reason(n.base_url)
    if reason is None:
        return
    where = str(settings.config_path) if settings.config_path else None
    raise ConfigError(
        f"SMTP delivery would mail links to {n.base_url} ({reason}): set base_url to the "
        "public https:// address of `newsletter serve`, or allow_insecure_base_url = true "
        "in [newsletter] to send anyway",
        path=where,
        key="newsletter.base_url",
    )
