"""Loading: defaults, then the TOML file, then ``NEWSLETTER_*`` variables, coerced and named."""

from __future__ import annotations

import dataclasses
import difflib
import os
import tomllib
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from newsletter.config.sections import (
    _SECTIONS,
    DEFAULT_CONFIG_NAME,
    ENV_PREFIX,
    HF_DEFAULT_URL,
    DatabaseSettings,
    DkimSettings,
    FeedSettings,
    MetricsSettings,
    NewsletterSettings,
    Settings,
)
from newsletter.config.validate import _feed_type, _validate
from newsletter.errors import ConfigError


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
# (newsletter.clock), the log format (``--log-format``), test switches; the names that
# *_env settings point to (secret key, SMTP password) are allowed as well.
_ENV_NOT_SETTINGS = {f"{ENV_PREFIX}CONFIG", f"{ENV_PREFIX}NOW", f"{ENV_PREFIX}LOG_FORMAT"}
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
    mt: MetricsSettings = sections["metrics"]
    if mt.textfile is not None:
        sections["metrics"] = dataclasses.replace(mt, textfile=_resolve(base, mt.textfile))
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
