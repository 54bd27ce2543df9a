"""The rules beyond scopes that every example deployment API applies (the same rule objects in
Starlette, FastAPI, Flask, plain WSGI, Django and Django REST framework):

- GET /production/deployments  needs deploy:applications and a token of the production_us
  environment (the Scalekit client's ``custom_claims.environment``);
- GET /admin/clients           only for the two platform clients, whatever their scopes;
- GET /releases                admin:platform, or a client whose ``custom_claims.service`` is
  ``release``.
"""

from __future__ import annotations

from m2m_guard import (
    AccessToken,
    all_of,
    any_of,
    require,
    require_claims,
    require_clients,
    require_scopes,
)

#: The platform's own clients (the first is the local issuer's and the test kit's default).
PLATFORM_CLIENTS = ("m2morg_68315758685323697", "m2morg_77210528056826613")

production_deploy = all_of(
    require_scopes("deploy:applications"),
    require_claims({"custom_claims.environment": "production_us"}),
)
platform_clients = require_clients(*PLATFORM_CLIENTS)


def _is_release_service(token: AccessToken) -> bool:
    return token.custom_claims.get("service") == "release"


release_managers = any_of(
    require_scopes("admin:platform"),
    require(_is_release_service, name="release-service"),
)
