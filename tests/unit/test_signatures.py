"""Signed-commit checks without git: key IDs as projects write them, and what gpg's status
lines say about a commit's signature."""

from __future__ import annotations

import pytest

from daemon.appproject import normalise_key_id
from daemon.errors import ConfigError
from daemon.sources.signatures import allowed, signer

FPR = "0123456789ABCDEF0123456789ABCDEF01234567"


def test_key_ids_are_normalised_and_checked() -> None:
    """Long and short IDs and fingerprints, any case, with or without 0x; anything else is a
    config error naming the field."""
    assert normalise_key_id("0x89abcdef01234567", where="p") == "89ABCDEF01234567"
    assert normalise_key_id(FPR.lower(), where="p") == FPR
    with pytest.raises(ConfigError, match="p: keyID 'not-a-key' is not a GnuPG key ID"):
        normalise_key_id("not-a-key", where="p")


@pytest.mark.parametrize(
    ("status", "fingerprint", "why"),
    [
        (f"[GNUPG:] GOODSIG 89ABCDEF01234567 x\n[GNUPG:] VALIDSIG {FPR} 2026-12-02", FPR, ""),
        (
            "[GNUPG:] ERRSIG 89ABCDEF01234567 22 10 00 1 9\n[GNUPG:] NO_PUBKEY 89ABCDEF01234567",
            "",
            "signed by key 89ABCDEF01234567, which no gpgKeys file holds",
        ),
        ("[GNUPG:] BADSIG 89ABCDEF01234567 x", "", "its signature does not verify (BADSIG)"),
        ("[GNUPG:] EXPKEYSIG 89ABCDEF01234567 x", "", "signed by an expired or revoked key"),
        ("", "", "it is not signed"),
    ],
)
def test_gpg_status_lines_decide(status: str, fingerprint: str, why: str) -> None:
    """Only VALIDSIG names a signer; every other outcome has its reason."""
    assert signer(status) == (fingerprint, why)


def test_a_signer_matches_short_long_or_full_ids() -> None:
    """A project key ID matches the fingerprint's tail, as GnuPG key IDs do."""
    assert allowed(FPR, ["01234567"]) and allowed(FPR, ["89ABCDEF01234567"]) and allowed(FPR, [FPR])
    assert not allowed(FPR, ["76543210"])
