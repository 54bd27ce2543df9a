"""The same API with Django REST framework: `M2MGuardAuthentication` and `HasScopes` (set as
defaults in settings.REST_FRAMEWORK), scopes declared on the views."""

from __future__ import annotations

from typing import Any

from rest_framework.decorators import api_view, permission_classes
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from .. import rules
from .store import DEPLOYMENTS, queue_deployment


class DeploymentsAPI(APIView):
    required_scopes = {"GET": ["read:deployments"], "POST": ["deploy:applications"]}

    def get(self, request: Request) -> Response:
        return Response({"deployments": DEPLOYMENTS})

    def post(self, request: Request) -> Response:
        body: Any = request.data
        return Response(queue_deployment(body, request.auth), status=202)


class AdminAuditAPI(APIView):
    required_scopes = ["admin:platform"]

    def get(self, request: Request) -> Response:
        return Response({"audit": [], "client_id": str(request.user)})


class ProductionDeploymentsAPI(APIView):
    permission_classes = [IsAuthenticated]  # a verified token; the rule says the rest

    @rules.production_deploy
    def get(self, request: Request) -> Response:
        return Response({"deployments": DEPLOYMENTS, "environment": "production_us"})


class PlatformClientsAPI(APIView):
    permission_classes = [IsAuthenticated]

    @rules.platform_clients
    def get(self, request: Request) -> Response:
        return Response({"clients": list(rules.PLATFORM_CLIENTS)})


class ReleasesAPI(APIView):
    permission_classes = [IsAuthenticated]

    @rules.release_managers
    def get(self, request: Request) -> Response:
        return Response({"releases": []})


@api_view(["GET"])
@permission_classes([AllowAny])
def health(request: Request) -> Response:
    return Response({"status": "ok"})
