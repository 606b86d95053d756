"""The one id rule: `ModelId`/`PlanId` validate on construction, and `digest_hex` is strict."""

from __future__ import annotations

import json

import pytest

from registry.errors import BadIdError, BadModelError
from registry.ids import ModelId, PlanId, digest_hex

HEX = "0123456789abcdef" * 4


def test_model_id_validates_once_and_stays_a_string():
    mid = ModelId.parse("sha256:" + HEX)
    assert mid == "sha256:" + HEX and isinstance(mid, str) and mid.hex == HEX and mid.short == HEX[:16]
    assert ModelId.parse(mid) is mid  # already validated: no second check, same object
    assert json.loads(json.dumps({"id": mid})) == {"id": "sha256:" + HEX}
    assert ModelId.valid(mid) and ModelId.looks_like("sha256:abc") and not ModelId.looks_like("./folder")


@pytest.mark.parametrize("bad", ["", HEX, "sha256:" + HEX.upper(), "sha256:" + HEX[:63], "sha256:" + HEX + "0",
                                 "SHA256:" + HEX, "sha256:" + "g" * 64, " sha256:" + HEX, None, 7])
def test_malformed_ids_are_bad_input_naming_what_was_given(bad):
    assert not ModelId.valid(bad)
    with pytest.raises(BadIdError) as err:
        ModelId.parse(bad)
    assert isinstance(err.value, BadModelError) and "model id" in str(err.value)
    with pytest.raises(BadIdError, match="plan id"):
        PlanId.parse(bad)


def test_long_garbage_is_shortened_in_the_message():
    with pytest.raises(BadIdError) as err:
        ModelId.parse("x" * 10_000)
    assert len(str(err.value)) < 200


def test_digest_hex_accepts_bare_or_prefixed_lowercase_hex_only():
    assert digest_hex(HEX) == HEX and digest_hex("sha256:" + HEX) == HEX
    for bad in (HEX.upper(), HEX[:10], "../../etc/passwd", "sha256:", ""):
        assert digest_hex(bad) is None
