"""Counting attestations the way a puller should: as opinions, by who gave them.

    tally = count_attestations(bundles, model_id, is_trusted=registry.is_trusted)
    tally.trusted          # key ids of trusted verifiers that attested PASS
    tally.others           # how many other keys attested PASS (strangers: Sybils are cheap)
    tally.failed           # keys (any) that attested FAIL

Anyone can make keys and attest, so a count of attestations means nothing until it is a count
of keys the puller trusts (`mergenet trust add`). Bundles that do not verify, or speak of
another model, are not counted at all; one key counts once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from registry.errors import RegistryError
from registry.ids import digest_hex
from registry.statements import ATTESTATION_V1, verify_statement


@dataclass(frozen=True)
class AttestationTally:
    trusted: tuple[str, ...]
    others: int
    failed: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"trusted": list(self.trusted), "others": self.others, "failed": list(self.failed)}


def count_attestations(bundles: Iterable[Mapping[str, Any]], model_id: str,
                       is_trusted: Callable[[str], bool]) -> AttestationTally:
    want = digest_hex(model_id)
    passed: dict[str, bool] = {}
    failed: set[str] = set()
    for bundle in bundles:
        try:
            vs = verify_statement(dict(bundle), predicate_type=ATTESTATION_V1)
        except (RegistryError, TypeError, ValueError):
            continue
        if vs.subject_digest != want:
            continue
        if vs.predicate.get("passed") is True:
            passed[vs.key_id] = True
        else:
            failed.add(vs.key_id)
    trusted = tuple(sorted(k for k in passed if is_trusted(k) and k not in failed))
    others = sum(1 for k in passed if k not in trusted and k not in failed)
    return AttestationTally(trusted, others, tuple(sorted(failed)))
