"""The local, Scalekit-compatible authorization server, and the parts tests build on.

- `LocalIssuer` (with `serve_issuer`): clients and secrets in SQLite, the client-credentials
  token endpoint, JWKS and discovery, the management API and key rotation (docs/local-issuer.md).
- `SigningKey` makes keys for RS256/PS256/ES256/EdDSA (and the other JWS algorithms) and signs
  tokens with them; `KeySetServer` publishes keys over loopback HTTP with discovery, and can
  misbehave on purpose (down, HTTP 500, garbage, hang, slow) so that outages can be tested for real.
- With the ``emulator`` extra, `serve_issuer(..., tls=True, grpc=True)` serves HTTPS with a local
  CA (`tls`) and Scalekit's gRPC client-management service (`grpc_service`) on the same port, so
  the official Scalekit SDKs run against it unchanged.
"""

from .clients import ApiError
from .issuer import LocalIssuer
from .serve import RunningIssuer, serve_issuer
from .server import KeySetServer
from .signing import SigningKey, scalekit_claims

__all__ = ["ApiError", "KeySetServer", "LocalIssuer", "RunningIssuer", "SigningKey",
           "scalekit_claims", "serve_issuer"]
