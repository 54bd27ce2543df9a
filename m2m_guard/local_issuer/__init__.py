"""Local issuer parts for development and tests: signing keys, token minting, a key-set server.

`SigningKey` makes keys for RS256/PS256/ES256/EdDSA (and the other JWS algorithms) and signs
tokens with them; `KeySetServer` publishes keys over loopback HTTP with discovery, and can
misbehave on purpose (down, HTTP 500, garbage, hang, slow) so that outages can be tested for real.
"""

from .server import KeySetServer
from .signing import SigningKey, scalekit_claims

__all__ = ["KeySetServer", "SigningKey", "scalekit_claims"]
