"""Provider presets: named bundles of settings a user could write by hand (docs/providers.md).

``GuardSettings(provider="okta")`` (``M2M_GUARD_PROVIDER=okta``) sets the options below that are
left at their defaults; an option given explicitly wins over the preset. `scalekit` is the
default and sets nothing. `machine` is how the provider's tokens tell a client-credentials
(machine) token from a user's, for ``machine_tokens_only``; None when they cannot.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = ["DEFAULT_PROVIDER", "PROVIDERS", "Preset", "preset"]

DEFAULT_PROVIDER = "scalekit"


@dataclass(frozen=True)
class Preset:
    """One provider's settings (`options`: field name to value) and its machine-token test
    (`machine`: claim path to the value a machine token has, all of them; `machine_absent`:
    claims a machine token does not have; `machine_same`: two claims that are equal)."""

    name: str
    options: Mapping[str, Any] = field(default_factory=dict)
    machine: Mapping[str, str] | None = None
    machine_absent: tuple[str, ...] = ()
    machine_same: tuple[str, str] | None = None
    machine_text: str = ""


def _frozen(options: dict[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(options)


PROVIDERS: Mapping[str, Preset] = MappingProxyType({
    "scalekit": Preset("scalekit"),
    "auth0": Preset("auth0", _frozen({
        "scope_claims": ("scope", "permissions"),
        "client_id_claims": ("azp", "client_id"),
    }), machine={"gty": "client-credentials"}, machine_text='gty is "client-credentials"'),
    "okta": Preset("okta", _frozen({
        "scope_claims": ("scp",),
        "client_id_claims": ("cid",),
    }), machine_same=("sub", "cid"), machine_text="sub equals cid (no user)"),
    "entra": Preset("entra", _frozen({
        "scope_claims": ("roles", "scp"),
        "client_id_claims": ("azp", "appid"),
    }), machine={"idtyp": "app"}, machine_text='idtyp is "app"'),
    "keycloak": Preset("keycloak", _frozen({
        "scope_claims": ("scope", "realm_access.roles"),
        "client_id_claims": ("azp", "client_id"),
    })),
    "cognito": Preset("cognito", _frozen({
        "scope_claims": ("scope",),
        "client_id_claims": ("client_id",),
        "required_claim_values": (("token_use", ("access",)),),
    }), machine={"token_use": "access"}, machine_absent=("username",),
        machine_text='token_use is "access" and there is no username'),
})


def preset(name: str) -> Preset:
    """The preset called `name`; `ValueError` listing the known ones."""
    try:
        return PROVIDERS[name]
    except KeyError:
        raise ValueError(f"one of {', '.join(PROVIDERS)}") from None
