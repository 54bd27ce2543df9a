"""The OpenAPI 3.1 document of the local issuer (served at ``/openapi.json``).

It describes the token endpoint, discovery, the key set and the management API in Scalekit's
shapes, with the same bounds the code enforces (taken from `clients`, so the two cannot drift):
a request the document allows is accepted (or refused only for state: 401, 404, 409), and a
request it does not allow is refused with a 4xx. The test suite holds the issuer to it with
schemathesis.
"""

from __future__ import annotations

import copy
from typing import Any

from . import clients as c
from .keyring import MAX_KEYS

__all__ = ["openapi_document"]

_ID_BODY = "[A-Za-z0-9]{1,64}"
# expiry as a string (proto3 JSON's int64 form): canonical decimal from 60 to 86400
_EXPIRY_STRING = ("^(6[0-9]|[7-9][0-9]|[1-9][0-9]{2,3}|[1-7][0-9]{4}|8[0-5][0-9]{3}"
                  "|86[0-3][0-9]{2}|86400)$")
_BEARER: list[dict[str, list[str]]] = [{"EnvironmentClient": []}]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str, **extra: Any) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": schema}}, **extra}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


def _id_param(name: str, prefix: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True,
            "schema": {"type": "string", "pattern": f"^{prefix}{_ID_BODY}$"}}


_UNAUTHORIZED = _json(_ref("Error"), "No valid token of the environment API client.",
                      headers={"WWW-Authenticate": {"schema": {"type": "string"}}})


def _management(responses: dict[str, Any], *, not_found: bool = True) -> dict[str, Any]:
    result = dict(responses)
    result.setdefault("400", _error("Invalid input: `details` names each field."))
    result["401"] = _UNAUTHORIZED
    if not_found:
        result.setdefault("404", _error("No such organization client or secret."))
    return result


def _schemas() -> dict[str, Any]:
    text = "^[^\\x00-\\x1f\\x7f]*$"
    fields: dict[str, Any] = {
        "name": {"type": "string", "minLength": 1, "maxLength": c.MAX_NAME,
                 "allOf": [{"pattern": "\\S"}, {"pattern": text}]},
        "description": {"type": "string", "maxLength": c.MAX_DESCRIPTION,
                        "pattern": "^[^\\x00-\\x08\\x0b-\\x1f\\x7f]*$"},
        "scopes": {"type": "array", "maxItems": c.MAX_SCOPES, "items": {
            "type": "string", "minLength": 1, "maxLength": c.MAX_SCOPE_LENGTH,
            "pattern": "^[\\x21\\x23-\\x5b\\x5d-\\x7e]+$"}},
        "audience": {"type": "array", "maxItems": c.MAX_AUDIENCES, "items": {
            "type": "string", "minLength": 1, "maxLength": c.MAX_AUDIENCE_LENGTH,
            "pattern": "^[\\x21-\\x7e]+$"}},
        "custom_claims": {
            "type": "array", "maxItems": c.MAX_CUSTOM_CLAIMS,
            "description": "Claims added to every token; keys must be unique.",
            "items": {"type": "object", "additionalProperties": False,
                      "required": ["key", "value"], "properties": {
                          "key": {"type": "string", "minLength": 1, "maxLength": c.MAX_CLAIM_KEY,
                                  "pattern": "^[A-Za-z_][A-Za-z0-9_.:-]*$"},
                          "value": {"type": "string", "maxLength": c.MAX_CLAIM_VALUE}}}},
        "expiry": {"description": "Token lifetime in seconds (an integer, or its decimal "
                                  "string as proto3 JSON writes 64-bit integers).",
                   "oneOf": [{"type": "integer", "minimum": c.MIN_EXPIRY,
                              "maximum": c.MAX_EXPIRY},
                             {"type": "string", "pattern": _EXPIRY_STRING}]},
    }
    time = {"type": "string", "format": "date-time"}
    return {
        "Error": {"type": "object", "required": ["code", "message", "details"], "properties": {
            "code": {"type": "string"}, "message": {"type": "string"},
            "details": {"type": "array", "items": {
                "type": "object", "required": ["field", "description"], "properties": {
                    "field": {"type": "string"}, "description": {"type": "string"}}}}}},
        "OAuthError": {"type": "object", "required": ["error", "error_description"],
                       "properties": {"error": {"type": "string", "enum": [
                           "invalid_request", "invalid_client", "invalid_scope",
                           "unsupported_grant_type", "temporarily_unavailable",
                           "invalid_dpop_proof"]},
                           "error_description": {"type": "string"}}},
        "ClientCreate": {"type": "object", "additionalProperties": False,
                         "required": ["name"], "properties": fields},
        "ClientUpdate": {"type": "object", "additionalProperties": False, "minProperties": 1,
                         "properties": fields},
        "Secret": {"type": "object",
                   "required": ["id", "create_time", "update_time", "secret_suffix", "status"],
                   "properties": {"id": {"type": "string", "pattern": f"^sks_{_ID_BODY}$"},
                                  "create_time": time, "update_time": time,
                                  "last_used_time": time,
                                  "secret_suffix": {"type": "string"},
                                  "status": {"type": "string", "enum": ["ACTIVE"]}}},
        "Client": {"type": "object", "required": [
            "client_id", "secrets", "name", "description", "organization_id", "create_time",
            "update_time", "scopes", "audience", "custom_claims", "expiry"], "properties": {
            "client_id": {"type": "string", "pattern": f"^m2morg_{_ID_BODY}$"},
            "secrets": {"type": "array", "items": _ref("Secret")},
            "name": {"type": "string"}, "description": {"type": "string"},
            "organization_id": {"type": "string"}, "create_time": time, "update_time": time,
            "scopes": {"type": "array", "items": {"type": "string"}},
            "audience": {"type": "array", "items": {"type": "string"}},
            "custom_claims": copy.deepcopy(fields["custom_claims"]),
            "expiry": {"type": "integer"}}},
        "Key": {"type": "object", "required": ["kid", "alg", "status", "create_time",
                                                "signs_from", "remove_after"], "properties": {
            "kid": {"type": "string"}, "alg": {"type": "string"},
            "status": {"type": "string", "enum": ["pending", "active", "retiring"]},
            "create_time": time, "signs_from": time,
            "remove_after": {"oneOf": [time, {"type": "null"}]}}},
        "KeyList": {"type": "object", "required": ["keys"], "properties": {
            "keys": {"type": "array", "maxItems": MAX_KEYS, "items": _ref("Key")}}},
        "Jwks": {"type": "object", "required": ["keys"], "properties": {
            "keys": {"type": "array", "maxItems": MAX_KEYS, "items": {
                "type": "object", "required": ["kty", "kid"]}}}},
        "Discovery": {"type": "object", "required": ["issuer", "jwks_uri", "token_endpoint"],
                      "properties": {"issuer": {"type": "string"},
                                     "jwks_uri": {"type": "string"},
                                     "token_endpoint": {"type": "string"},
                                     "dpop_signing_alg_values_supported": {
                                         "type": "array", "items": {"type": "string"}}}},
    }


def openapi_document() -> dict[str, Any]:
    """A fresh copy of the document (servers: relative to wherever the issuer is served)."""
    org = _id_param("organization_id", "org_")
    client = _id_param("client_id", "m2morg_")
    secret = _id_param("secret_id", "sks_")
    client_links = {
        "GetClient": {"operationId": "getClient", "parameters": {
            "organization_id": "$request.path.organization_id",
            "client_id": "$response.body#/client/client_id"}},
        "UpdateClient": {"operationId": "updateClient", "parameters": {
            "organization_id": "$request.path.organization_id",
            "client_id": "$response.body#/client/client_id"}},
        "DeleteClient": {"operationId": "deleteClient", "parameters": {
            "organization_id": "$request.path.organization_id",
            "client_id": "$response.body#/client/client_id"}},
        "AddSecret": {"operationId": "addSecret", "parameters": {
            "organization_id": "$request.path.organization_id",
            "client_id": "$response.body#/client/client_id"}},
    }
    secret_links = {"DeleteSecret": {"operationId": "deleteSecret", "parameters": {
        "organization_id": "$request.path.organization_id",
        "client_id": "$request.path.client_id", "secret_id": "$response.body#/secret/id"}}}
    client_body = {"type": "object", "required": ["client"],
                   "properties": {"client": _ref("Client")}}
    token_form = {"type": "object", "required": ["grant_type"], "properties": {
        "grant_type": {"type": "string", "enum": ["client_credentials"]},
        "client_id": {"type": "string"},
        "client_secret": {"type": "string"}, "scope": {"type": "string"}}}
    token_answer = {"type": "object", "required": ["access_token", "token_type", "expires_in",
                                                    "scope"], "properties": {
        "access_token": {"type": "string"},
        "token_type": {"type": "string", "enum": ["Bearer", "DPoP"]},
        "expires_in": {"type": "integer"}, "scope": {"type": "string"}}}
    oauth_refusal = {"400": _json(_ref("OAuthError"), "A malformed token request, or a bad or "
                                                      "used DPoP proof (invalid_dpop_proof)."),
                     "401": _json(_ref("OAuthError"), "Unknown client or wrong secret.",
                                  headers={"WWW-Authenticate": {"schema": {"type": "string"}}})}
    cache = {"Cache-Control": {"schema": {"type": "string"}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "m2m_guard local issuer", "version": "1",
                 "description": "A local, Scalekit-compatible authorization server: the "
                                "client-credentials token endpoint, discovery, the key set, and "
                                "the management API of M2M clients and signing keys."},
        "paths": {
            "/.well-known/openid-configuration": {"get": {
                "operationId": "openidConfiguration", "security": [],
                "responses": {"200": _json(_ref("Discovery"), "Discovery document.",
                                           headers=cache)}}},
            "/.well-known/oauth-authorization-server": {"get": {
                "operationId": "authorizationServerMetadata", "security": [],
                "responses": {"200": _json(_ref("Discovery"), "RFC 8414 metadata.",
                                           headers=cache)}}},
            "/keys": {"get": {
                "operationId": "keySet", "security": [],
                "parameters": [{"name": "If-None-Match", "in": "header", "required": False,
                                "schema": {"type": "string"}}],
                "responses": {"200": _json(_ref("Jwks"), "The published public keys.",
                                           headers={**cache,
                                                    "ETag": {"schema": {"type": "string"}}}),
                              "304": {"description": "The key set matches If-None-Match."}}}},
            "/oauth/token": {"post": {
                "operationId": "token",
                "security": [{"ClientBasic": []}, {}],
                "description": "Client credentials (RFC 6749 §4.4): HTTP Basic "
                               "(form-urlencoded id and secret, §2.3.1) or client_id and "
                               "client_secret in the form, not both. Another Authorization "
                               "scheme (an SDK's Bearer token) is ignored. With a DPoP proof "
                               "(RFC 9449 §5: htm POST, htu this endpoint's URL) the token is "
                               "bound to the proof's key (cnf.jkt) and token_type is DPoP.",
                "parameters": [{"name": "DPoP", "in": "header", "required": False,
                                "description": "A DPoP proof JWT (typ dpop+jwt), used once.",
                                "schema": {"type": "string"}}],
                "requestBody": {"required": True, "content": {
                    "application/x-www-form-urlencoded": {"schema": token_form}}},
                "responses": {"200": _json(token_answer, "An access token."),
                              **oauth_refusal}}},
            "/api/v1/organizations/{organization_id}/clients": {
                "parameters": [org],
                "get": {"operationId": "listClients", "security": _BEARER, "parameters": [
                    {"name": "page_size", "in": "query", "required": False,
                     "schema": {"type": "integer", "minimum": 1, "maximum": c.MAX_PAGE_SIZE}},
                    {"name": "page_token", "in": "query", "required": False,
                     "schema": {"type": "string", "maxLength": c.MAX_PAGE_TOKEN,
                                "pattern": "^(after_[1-9][0-9]{0,17})?$"}}],
                    "responses": _management({"200": _json({
                        "type": "object",
                        "required": ["clients", "next_page_token", "total_size"],
                        "properties": {"clients": {"type": "array", "items": _ref("Client")},
                                       "next_page_token": {"type": "string"},
                                       "total_size": {"type": "integer"}}},
                        "One page, oldest first.")}, not_found=False)},
                "post": {"operationId": "createClient", "security": _BEARER,
                         "requestBody": {"required": True, "content": {
                             "application/json": {"schema": _ref("ClientCreate")}}},
                         "responses": _management({"201": _json({
                             "type": "object", "required": ["client", "plain_secret"],
                             "properties": {"client": _ref("Client"),
                                            "plain_secret": {"type": "string"}}},
                             "Created; the plain secret is shown this once.",
                             links=client_links)}, not_found=False)}},
            "/api/v1/organizations/{organization_id}/clients/{client_id}": {
                "parameters": [org, client],
                "get": {"operationId": "getClient", "security": _BEARER,
                        "responses": _management({"200": _json(client_body, "The client.")})},
                "patch": {"operationId": "updateClient", "security": _BEARER,
                          "requestBody": {"required": True, "content": {
                              "application/json": {"schema": _ref("ClientUpdate")}}},
                          "responses": _management({"200": _json(client_body, "Updated.")})},
                "delete": {"operationId": "deleteClient", "security": _BEARER,
                           "responses": _management({"200": _json(
                               {"type": "object", "maxProperties": 0}, "Deleted.")})}},
            "/api/v1/organizations/{organization_id}/clients/{client_id}/secrets": {
                "parameters": [org, client],
                "post": {"operationId": "addSecret", "security": _BEARER,
                         "responses": _management({
                             "201": _json({"type": "object",
                                           "required": ["secret", "plain_secret"],
                                           "properties": {"secret": _ref("Secret"),
                                                          "plain_secret": {"type": "string"}}},
                                          "Added; the plain secret is shown this once.",
                                          links=secret_links),
                             "400": _error(f"The client has {c.MAX_SECRETS} secrets already.")})}},
            "/api/v1/organizations/{organization_id}/clients/{client_id}/secrets/{secret_id}": {
                "parameters": [org, client, secret],
                "delete": {"operationId": "deleteSecret", "security": _BEARER,
                           "responses": _management({
                               "200": _json({"type": "object", "maxProperties": 0}, "Deleted."),
                               "400": _error("A malformed id, or the client's only secret.")})}},
            "/api/v1/keys": {"get": {
                "operationId": "listKeys", "security": _BEARER,
                "responses": _management({"200": _json(_ref("KeyList"), "Every kept key.")},
                                         not_found=False)}},
            "/api/v1/keys:rotate": {"post": {
                "operationId": "rotateKeys", "security": _BEARER,
                "description": f"Add a signing key. Refused (409) while a key is pending, and "
                               f"when {MAX_KEYS} keys are kept, unless force is true (the "
                               "first retiring key to go is then removed).",
                "requestBody": {"required": False, "content": {"application/json": {
                    "schema": {"type": "object", "additionalProperties": False, "properties": {
                        "publish_delay": {"type": ["number", "null"], "minimum": 0,
                                          "maximum": 86400,
                                          "description": "Seconds the new key is published "
                                                         "before it signs; null or absent: "
                                                         "the issuer's default."},
                        "force": {"type": "boolean"}}}}}},
                "responses": _management({
                    "201": _json({"type": "object", "required": ["kid", "keys"], "properties": {
                        "kid": {"type": "string"},
                        "keys": {"type": "array", "items": _ref("Key")}}}, "Rotated."),
                    "409": _error("A key is pending, or the key set is full.")},
                    not_found=False)}},
        },
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "EnvironmentClient": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                                      "description": "A token of the environment API client "
                                                     "(skc_…) from /oauth/token."},
                "ClientBasic": {"type": "http", "scheme": "basic"}},
        },
    }
