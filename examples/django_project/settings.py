"""Settings of the example deployment API.

The guard's issuer and audience come from the environment (``M2M_GUARD_ISSUER``,
``M2M_GUARD_AUDIENCE``); ``M2M_GUARD`` below holds what belongs to the project. A key set here
wins over the same ``M2M_GUARD_*`` variable.
"""

import os

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]

INSTALLED_APPS = ["rest_framework"]

MIDDLEWARE = [
    "django.middleware.common.CommonMiddleware",
    "m2m_guard.django.M2MGuardMiddleware",
]

ROOT_URLCONF = "examples.django_project.urls"
WSGI_APPLICATION = "examples.django_project.wsgi.application"
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
APPEND_SLASH = False

M2M_GUARD = {
    "public_paths": ["/health", "/async/health", "/api/health"],
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["m2m_guard.drf.M2MGuardAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["m2m_guard.drf.HasScopes"],
    "EXCEPTION_HANDLER": "m2m_guard.drf.exception_handler",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    # Machine clients only: no django.contrib.auth, no anonymous user object.
    "UNAUTHENTICATED_USER": None,
}
