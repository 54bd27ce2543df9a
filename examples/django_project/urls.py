"""URLs: plain views at the root, the async views under /async/, DRF under /api/.

Each group is also a list of its own (`sync_urlpatterns`, `async_urlpatterns`,
`api_urlpatterns`) so tests can serve any of them at the root.
"""

from django.urls import include, path

from . import api, async_views, views

sync_urlpatterns = [
    path("deployments", views.DeploymentsView.as_view()),
    path("admin/audit", views.admin_audit),
    path("production/deployments", views.production_deployments),
    path("admin/clients", views.platform_clients),
    path("releases", views.releases),
    path("health", views.health),
]

async_urlpatterns = [
    path("deployments", async_views.deployments),
    path("admin/audit", async_views.AdminAuditView.as_view()),
    path("production/deployments", async_views.production_deployments),
    path("admin/clients", async_views.platform_clients),
    path("releases", async_views.releases),
    path("health", async_views.health),
]

api_urlpatterns = [
    path("deployments", api.DeploymentsAPI.as_view()),
    path("admin/audit", api.AdminAuditAPI.as_view()),
    path("production/deployments", api.ProductionDeploymentsAPI.as_view()),
    path("admin/clients", api.PlatformClientsAPI.as_view()),
    path("releases", api.ReleasesAPI.as_view()),
    path("health", api.health),
]

urlpatterns = [
    *sync_urlpatterns,
    path("async/", include(async_urlpatterns)),
    path("api/", include(api_urlpatterns)),
]
