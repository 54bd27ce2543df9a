"""Django for the test process: configured once, on first use, with the example project's
settings (no `DJANGO_SETTINGS_MODULE`, no database). Each test picks its guard configuration and
URLs with `override_settings`, so nothing here depends on the environment."""

from __future__ import annotations

from typing import Any

import django
from django.conf import settings

from examples.django_project import settings as example

SETTINGS: dict[str, Any] = {
    "SECRET_KEY": "tests-only",
    "DEBUG": False,
    "ALLOWED_HOSTS": ["testserver", "127.0.0.1", "localhost"],
    "INSTALLED_APPS": list(example.INSTALLED_APPS),
    "MIDDLEWARE": list(example.MIDDLEWARE),
    "ROOT_URLCONF": "examples.django_project.urls",
    "DATABASES": {},
    "USE_TZ": True,
    "APPEND_SLASH": False,
    "REST_FRAMEWORK": dict(example.REST_FRAMEWORK),
    "LOGGING_CONFIG": None,  # leave the test process's logging alone
}


def setup_django() -> None:
    """Configure Django once for this process (idempotent)."""
    if not settings.configured:
        settings.configure(**SETTINGS)
        django.setup()


class URLs:
    """A URLconf object for `override_settings(ROOT_URLCONF=URLs(patterns))`."""

    def __init__(self, patterns: list[Any]) -> None:
        self.urlpatterns = patterns
