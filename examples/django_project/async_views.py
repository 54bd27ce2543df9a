"""The same API as async Django views (served by the async middleware path under ASGI)."""

from __future__ import annotations

import json

from django.http import HttpRequest, JsonResponse
from django.views import View

from m2m_guard.django import ScopesRequiredMixin, current_token, require_scopes

from .. import rules
from .store import DEPLOYMENTS, queue_deployment


@require_scopes("read:deployments")
async def list_deployments(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"deployments": DEPLOYMENTS})


@require_scopes("deploy:applications")
async def deploy(request: HttpRequest) -> JsonResponse:
    token = current_token()
    assert token is not None  # require_scopes guarantees it
    try:
        body = json.loads(request.body or b"{}")
    except ValueError:
        return JsonResponse({"error": "invalid_json"}, status=400)
    return JsonResponse(queue_deployment(body, token), status=202)


async def deployments(request: HttpRequest) -> JsonResponse:
    """One URL, two methods: dispatch to the decorated view for the method."""
    if request.method == "POST":
        return await deploy(request)
    return await list_deployments(request)


class AdminAuditView(ScopesRequiredMixin, View):
    required_scopes = ["admin:platform"]

    async def get(self, request: HttpRequest) -> JsonResponse:
        return JsonResponse({"audit": [], "client_id": request.m2m_token.client_id})


@rules.production_deploy
async def production_deployments(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"deployments": DEPLOYMENTS, "environment": "production_us"})


@rules.platform_clients
async def platform_clients(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"clients": list(rules.PLATFORM_CLIENTS)})


@rules.release_managers
async def releases(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"releases": []})


async def health(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})
