"""ASGI entry point: ``uvicorn examples.django_project.asgi:application --port 8000``."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.django_project.settings")

application = get_asgi_application()
