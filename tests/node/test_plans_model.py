"""Plan objects: canonical JSON, the plan id (golden), round trips and validation at the edge."""

from __future__ import annotations

import hashlib

import pytest

from node.plans.errors import PlanInputError
from node.plans.model import (
    Attestation,
    Commit,
    Heartbeat,
    Member,
    Plan,
    PlanInput,
    Requirements,
    Result,
    VerificationPolicy,
    canonical_json,
)

A, B = "sha256:" + "a" * 64, "sha256:" + "b" * 64


def golden_plan() -> Plan:
    return Plan(proposer="k" * 64, proposer_address="127.0.0.1:7470",
                inputs=(PlanInput(A, "base"), PlanInput(B, "expert")),
                recipe={"merge_method": "ties", "base_model": A, "models": [{"model": B, "parameters": {"weight": 1}}]},
                license="MIT", consents_needed={B: ("p" * 64,)}, requirements=Requirements(1024, False),
                verification=VerificationPolicy(2, 0.25, 1e-4), created=1700000000, expires=1700003600,
                nonce="00112233", beacon="e" * 64, deadline_s=600)


def test_canonical_json_is_sorted_and_compact():
    assert canonical_json({"b": 1, "a": [1, {"d": 2, "c": "é"}]}) == '{"a":[1,{"c":"é","d":2}],"b":1}'.encode()


def test_plan_id_golden():
    plan = golden_plan()
    expected = (
        '{"beacon":"' + "e" * 64 + '","consents_needed":{"' + B + '":["' + "p" * 64 + '"]},"created":1700000000,'
        '"deadline_s":600,"expires":1700003600,'
        '"inputs":[{"model_id":"' + A + '","role":"base"},{"model_id":"' + B + '","role":"expert"}],'
        '"kind":"merge","license":"MIT","nonce":"00112233","proposer":"' + "k" * 64 + '",'
        '"proposer_address":"127.0.0.1:7470",'
        '"recipe":{"base_model":"' + A + '","merge_method":"ties","models":[{"model":"' + B + '",'
        '"parameters":{"weight":1}}]},"requirements":{"gpu":false,"memory_bytes":1024},'
        '"verification":{"spot_check":0.25,"tolerance":0.0001,"verifiers":2},"verifier_keys":[]}'
    )
    assert plan.canonical() == expected.encode()
    assert plan.plan_id == "sha256:" + hashlib.sha256(expected.encode()).hexdigest()
    assert plan.plan_id == "sha256:92d61d76e496796f370c7d4ad32d363014ba35a8c466ff65e608e5b8ead9d77c"


def test_plan_round_trip_keeps_id():
    plan = golden_plan()
    again = Plan.from_dict(plan.to_dict())
    assert again == plan and again.plan_id == plan.plan_id


def test_any_change_changes_the_id():
    d = golden_plan().to_dict()
    d["recipe"]["models"][0]["parameters"]["weight"] = 0.5
    assert Plan.from_dict(d).plan_id != golden_plan().plan_id


def test_new_plans_differ_by_nonce():
    kw = {"proposer": "k", "proposer_address": "h:1", "inputs": [PlanInput(A, "base")], "recipe": {}, "license": "MIT"}
    assert Plan.new(**kw, now=5).plan_id != Plan.new(**kw, now=5).plan_id


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d.pop("license"), "license"),
    (lambda d: d["inputs"][0].update(role="donor"), "role"),
    (lambda d: d["inputs"][0].update(model_id="sha256:xyz"), "sha256:<64 hex digits>"),
    (lambda d: d.update(created="yesterday"), "created"),
    (lambda d: d["verification"].update(spot_check=0.0), "spot_check"),
    (lambda d: d.update(inputs=[]), "inputs"),
    (lambda d: d.update(expires=d["created"] + 8 * 86400), "lifetime"),
    (lambda d: d["verification"].update(verifiers=0), "verifiers"),
    (lambda d: d.update(beacon="short"), "beacon"),
    (lambda d: d.update(deadline_s=0), "deadline_s"),
    (lambda d: d.update(kind="fusion"), "kind"),
    (lambda d: d["consents_needed"].update({B: []}), "consents_needed"),
])
def test_malformed_plans_name_the_field(mutate, field):
    d = golden_plan().to_dict()
    mutate(d)
    with pytest.raises(PlanInputError, match=field):
        Plan.from_dict(d)


def test_other_objects_round_trip():
    pid = golden_plan().plan_id
    commit = Commit(pid, Member("e", "h:1"), (Member("v1", "h:2"), Member("v2", "h:3")), 1, ({"b": 1},), "f" * 64,
                    ("x",))
    assert Commit.from_dict(commit.to_dict()) == commit and Commit.from_dict(commit.to_dict()).bids == ({"b": 1},)
    beat = Heartbeat(pid, 1, 3, 9, 1700000001.5)
    assert Heartbeat.from_dict(beat.__dict__) == beat
    att = Attestation(pid, A, ("x.weight", "y.bias"), 0.0, True)
    assert Attestation.from_dict(att.to_dict()) == att
    failed = Result(pid, "", "h:1", "cpu", 1.0, "OSError: disk full")
    assert Result.from_dict({**failed.__dict__}) == failed
    with pytest.raises(PlanInputError):
        Result.from_dict({**failed.__dict__, "error": ""})
