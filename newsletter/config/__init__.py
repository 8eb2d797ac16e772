"""Settings: built-in defaults, then the TOML file, then ``NEWSLETTER_*`` variables.

Built once by :func:`load_settings` and passed down; nothing reads a global. Tests build
their own with :func:`settings_from_mapping`, the way Flask's ``create_app`` takes a
``test_config``.
"""

from __future__ import annotations

from newsletter.config.load import load_settings, settings_from_mapping
from newsletter.config.sections import (
    DEFAULT_CONFIG_NAME,
    ENV_PREFIX,
    FEED_TYPES,
    HF_DEFAULT_DAYS,
    HF_DEFAULT_URL,
    HF_MAX_DAYS,
    PACKAGE_DIR,
    DatabaseSettings,
    DkimSettings,
    FeedSettings,
    FeedType,
    FetchSettings,
    MetricsSettings,
    NewsletterSettings,
    QueueSettings,
    Settings,
    SmtpSettings,
    SubscribeSettings,
    WebSettings,
    bundled_dir,
)
from newsletter.config.validate import check_base_url_for_smtp
from newsletter.errors import ConfigError  # raised by the loaders; importable from here too

__all__ = [
    "DEFAULT_CONFIG_NAME",
    "ENV_PREFIX",
    "FEED_TYPES",
    "HF_DEFAULT_DAYS",
    "HF_DEFAULT_URL",
    "HF_MAX_DAYS",
    "PACKAGE_DIR",
    "ConfigError",
    "DatabaseSettings",
    "DkimSettings",
    "FeedSettings",
    "FeedType",
    "FetchSettings",
    "MetricsSettings",
    "NewsletterSettings",
    "QueueSettings",
    "Settings",
    "SmtpSettings",
    "SubscribeSettings",
    "WebSettings",
    "bundled_dir",
    "check_base_url_for_smtp",
    "load_settings",
    "settings_from_mapping",
]
