"""Plain Django views (sync): a function view per scope and a class-based view with the mixin."""

from __future__ import annotations

import json

from django.http import HttpRequest, JsonResponse
from django.views import View

from m2m_guard.django import ScopesRequiredMixin, require_scopes

from .. import rules
from .store import DEPLOYMENTS, queue_deployment


class DeploymentsView(ScopesRequiredMixin, View):
    """GET lists deployments (read:deployments); POST queues one (deploy:applications)."""

    required_scopes = {"GET": ["read:deployments"], "POST": ["deploy:applications"]}

    def get(self, request: HttpRequest) -> JsonResponse:
        return JsonResponse({"deployments": DEPLOYMENTS})

    def post(self, request: HttpRequest) -> JsonResponse:
        try:
            body = json.loads(request.body or b"{}")
        except ValueError:
            return JsonResponse({"error": "invalid_json"}, status=400)
        return JsonResponse(queue_deployment(body, request.m2m_token), status=202)


@require_scopes("admin:platform")
def admin_audit(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"audit": [], "client_id": request.m2m_token.client_id})


@rules.production_deploy
def production_deployments(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"deployments": DEPLOYMENTS, "environment": "production_us"})


@rules.platform_clients
def platform_clients(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"clients": list(rules.PLATFORM_CLIENTS)})


@rules.release_managers
def releases(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"releases": []})


def health(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})
