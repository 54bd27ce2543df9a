"""Secret hashing and id shapes, on their own."""

from __future__ import annotations

from m2m_guard.local_issuer import ids
from m2m_guard.local_issuer.passwords import hash_secret, verify_nothing, verify_secret


def test_hashes_are_salted_and_checked_exactly() -> None:
    first, second = hash_secret("s3cret-value"), hash_secret("s3cret-value")
    assert first != second  # a fresh salt each time
    assert first.startswith("scrypt$16384$8$1$") and "s3cret" not in first
    assert verify_secret("s3cret-value", first) and verify_secret("s3cret-value", second)
    for wrong in ("s3cret-valuE", "s3cret-value ", "", "s3cret-valu"):
        assert not verify_secret(wrong, first)
    assert not verify_nothing("s3cret-value")


def test_unreadable_or_tampered_hashes_never_match() -> None:
    good = hash_secret("value")
    scheme, n, r, p, salt, digest = good.split("$")
    flipped = ("B" if digest[0] == "A" else "A") + digest[1:]
    for stored in ("", "plain", "bcrypt$x", f"scrypt${n}${r}${p}${salt}",
                   f"scrypt$x${r}${p}${salt}${digest}", f"scrypt$3${r}${p}${salt}${digest}",
                   f"scrypt${2**40}${r}${p}${salt}${digest}",
                   f"scrypt${n}${r}${p}${salt}${flipped}",
                   f"md5${n}${r}${p}${salt}${digest}"):
        assert not verify_secret("value", stored), stored


def test_ids_and_secrets_have_scalekit_shapes() -> None:
    for prefix, pattern in (("m2morg", ids.CLIENT_ID), ("org", ids.ORGANIZATION_ID),
                            ("sks", ids.SECRET_ID), ("skc", ids.ENV_CLIENT_ID)):
        value = ids.new_id(prefix)
        assert ids.valid_id(pattern, value)
        assert len(value) == len(prefix) + 1 + 17 and value[len(prefix) + 1:].isdigit()
    assert not ids.valid_id(ids.CLIENT_ID, "m2morg_1\n")
    assert not ids.valid_id(ids.CLIENT_ID, None)
    secret = ids.new_secret("test_")
    assert secret.startswith("test_") and len(secret) == 69 and secret[5:].isalnum()
    assert len({ids.new_secret("") for _ in range(50)}) == 50
