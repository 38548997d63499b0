"""PKCE values follow RFC 7636."""

from __future__ import annotations

import pytest

from oauth_flows import pkce


def test_the_challenge_of_the_rfc_example_verifier() -> None:
    # RFC 7636, appendix B.
    assert (
        pkce.challenge_for("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk")
        == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    )


@pytest.mark.parametrize("length", [43, 64, 128])
def test_a_new_pair_has_an_unreserved_verifier_and_its_challenge(length: int) -> None:
    pair = pkce.new_pair(length)
    assert len(pair.verifier) == length
    assert set(pair.verifier) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
    assert pair.challenge == pkce.challenge_for(pair.verifier) and pair.method == "S256"
    assert pkce.new_pair(length).verifier != pair.verifier


def test_a_verifier_outside_the_allowed_length_is_refused() -> None:
    with pytest.raises(ValueError):
        pkce.new_pair(42)


def test_state_is_checked_exactly() -> None:
    state = pkce.new_state()
    assert pkce.state_matches(state, state)
    assert not pkce.state_matches(state, state[:-1] + "x")
    assert not pkce.state_matches("", "")
