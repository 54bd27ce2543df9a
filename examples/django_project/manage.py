#!/usr/bin/env python
"""Django's command-line utility for the example deployment API.

    M2M_GUARD_ISSUER=https://yourenv.scalekit.dev M2M_GUARD_AUDIENCE=deployment-api \
        python examples/django_project/manage.py runserver 8000
"""

import os
import sys
from pathlib import Path

if __name__ == "__main__":
    # Run from anywhere: the project is imported as examples.django_project from the repo root.
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.django_project.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
