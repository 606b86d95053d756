"""CLI commands for merge plans: `plan propose`, `plan status`, `plan ls`, `plan consent`.

    mergenet plan propose ties.yaml --verifiers 2 --spot-check 0.1 --expires 1h
    mergenet plan propose fuse.yaml --tolerance 0.05 --holdout 0.25   # fusion: data goes inline
    mergenet plan status sha256:ab12… --wait --timeout 300
    mergenet plan ls
    mergenet plan consent PLAN_ID MODEL_ID --accept     # nodes whose consent policy is manual

They talk to the local node over gRPC (`--node`, else the node running on this home, else
$MERGENET_NODE / 127.0.0.1:7470). Heavy imports happen inside the handlers.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from node.cli.context import Context, split_csv

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add `plan propose|status|ls|consent` to the parser."""
    plan = sub.add_parser("plan", parents=[common], help="propose merge plans to the network and follow them")
    plan_sub = plan.add_subparsers(dest="plan_command", metavar="SUBCOMMAND", required=True)
    node_help = "HOST:PORT of the local node (default: this home's node, $MERGENET_NODE, 127.0.0.1:7470)"

    p = plan_sub.add_parser("propose", parents=[common], help="propose a merge plan; prints its id")
    p.add_argument("recipe", metavar="RECIPE.yaml", help="mergekit-style recipe; models are sha256: ids or "
                                                         "signed local folders")
    p.add_argument("--node", help=node_help)
    p.add_argument("--verifiers", type=int, default=2, help="nodes that must attest the result (default 2)")
    p.add_argument("--spot-check", type=float, default=0.1, help="share of tensors each verifier recomputes "
                                                                  "(default 0.1)")
    p.add_argument("--tolerance", type=float, default=None,
                   help="weight merge: absolute tolerance of a recomputed tensor, on top of the output dtype's "
                        "rounding (default 1e-4); fusion: how much worse (nats per response character) the merged "
                        "model's held-out loss may be than the target's (default 0.05)")
    p.add_argument("--holdout", type=float, default=None, help="fusion: share of the data held out of training "
                                                               "for the verifiers' measurement (default 0.25)")
    p.add_argument("--expires", default="1h", help="the plan expires after this long: 90s, 30m, 1h, 2d (default 1h)")
    p.add_argument("--deadline", default=None, help="the executor must report this long after it is committed, "
                                                    "else the plan is re-bid (default: 5 min plus 1 s per 5 MB of "
                                                    "input for merges, 2 s per example and epoch for fusion)")
    p.add_argument("--verifier-keys", default="", help="only these key ids may verify (comma-separated; "
                                                       "default: any bidder)")
    p.add_argument("--memory", type=int, default=0, help="executor must have this many free bytes")
    p.add_argument("--gpu", action="store_true", help="executor must have a GPU")
    p.set_defaults(func=cmd_propose)

    s = plan_sub.add_parser("status", parents=[common], help="consent, executor, progress, result, attestations")
    s.add_argument("plan_id", metavar="PLAN_ID", help="plan id or an unambiguous prefix")
    s.add_argument("--node", help=node_help)
    s.add_argument("--wait", action="store_true", help="wait until the plan is published, failed, rejected or "
                                                       "expired; exit 0 only when published")
    s.add_argument("--timeout", type=float, default=600.0, help="give up waiting after this many seconds")
    s.set_defaults(func=cmd_status)

    ls = plan_sub.add_parser("ls", parents=[common], help="plans the local node knows")
    ls.add_argument("--node", help=node_help)
    ls.set_defaults(func=cmd_ls)

    c = plan_sub.add_parser("consent", parents=[common], help="accept or refuse a plan that reads one of your "
                                                              "models (nodes with consent policy manual)")
    c.add_argument("plan_id", metavar="PLAN_ID", help="plan id or an unambiguous prefix")
    c.add_argument("model_id", metavar="MODEL_ID", help="the input's model id or an unambiguous prefix")
    choice = c.add_mutually_exclusive_group(required=True)
    choice.add_argument("--accept", action="store_true")
    choice.add_argument("--reject", action="store_true")
    c.add_argument("--reason", default="")
    c.add_argument("--node", help=node_help)
    c.set_defaults(func=cmd_consent)


def parse_duration(text: str, flag: str = "--expires") -> int:
    from node.plans.errors import PlanInputError

    text = text.strip().lower()
    unit = UNITS.get(text[-1:])
    number = text[:-1] if unit else text
    try:
        value = float(number) * (unit or 1)
    except ValueError:
        raise PlanInputError(f"{flag} {text!r} is not a duration such as 90s, 30m, 1h or 2d") from None
    if value <= 0:
        raise PlanInputError(f"{flag} {text!r} must be positive")
    return int(value)


def is_fusion_file(recipe_path: Path) -> bool:
    """Whether a recipe file is a fusion recipe (`target` + `sources`), not a weight merge."""
    import yaml

    from node.plans.model import FUSION, kind_of

    try:
        return kind_of(yaml.safe_load(Path(recipe_path).read_text(encoding="utf-8"))) == FUSION
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False  # the weight-merge loader reports the problem


def fusion_plan_recipe(recipe_path: Path, ctx: Context, holdout: float | None) -> dict[str, Any]:
    """A fusion recipe as a plan recipe: models as ids, the data file inline (see node.plans.fusion)."""
    from merge.fusion import load_recipe
    from merge.fusion.data import load_examples
    from node.plans import fusion

    recipe = load_recipe(recipe_path)
    load_examples(Path(recipe.data))  # a bad data file is the proposer's to fix, with its line number
    resolved = recipe.with_models(_ids_of(recipe.model_refs(), recipe_path, ctx)).to_dict()
    data = Path(recipe.data).read_bytes()
    return fusion.inline_recipe(resolved, data, fusion.DEFAULT_HOLDOUT if holdout is None else holdout)


def _ids_of(refs: list[str], recipe_path: Path, ctx: Context) -> dict[str, str]:
    """Model id of each signed local folder among `refs` (ids are left out: they stay as they are)."""
    from node.plans.errors import PlanInputError
    from registry.ids import ModelId
    from registry.local import LocalRegistry

    mapping = {}
    registry = LocalRegistry(ctx.home)
    try:
        for ref in refs:
            if ModelId.looks_like(ref):
                continue
            folder = Path(ref).expanduser()
            if not folder.is_dir():
                folder = recipe_path.parent / ref
            if not (folder / "mergenet.json").is_file():
                raise PlanInputError(f"recipe model {ref!r} is neither a sha256: id nor a signed model folder; "
                                     "run `mergenet submit` on it first")
            mapping[ref] = registry.verify(folder).id
    finally:
        registry.close()
    return mapping


def resolve_models(recipe_path: Path, ctx: Context) -> dict[str, Any]:
    """The recipe as a dict whose models are ids: signed local folders are replaced by their id."""
    from merge.recipe import load_recipe

    recipe = load_recipe(recipe_path)
    return recipe.with_models(_ids_of(recipe.model_refs(), recipe_path, ctx)).to_dict()


def client(ctx: Context, flag: str | None) -> Any:
    from node.plans.client import PlansClient

    addr = ctx.node_addr(flag)
    return PlansClient(addr, ctx.node_credential(addr))


def cmd_propose(args: argparse.Namespace, ctx: Context) -> int:
    from node.plans.fusion import DEFAULT_LOSS_TOLERANCE
    from node.plans.model import Requirements, VerificationPolicy

    fusion = is_fusion_file(Path(args.recipe))
    if fusion:
        recipe = fusion_plan_recipe(Path(args.recipe), ctx, args.holdout)
        tolerance = DEFAULT_LOSS_TOLERANCE if args.tolerance is None else args.tolerance
    else:
        recipe = resolve_models(Path(args.recipe), ctx)
        tolerance = 1e-4 if args.tolerance is None else args.tolerance
    plans = client(ctx, args.node)
    plan_id = plans.propose(recipe, VerificationPolicy(args.verifiers, args.spot_check, tolerance),
                            Requirements(args.memory, args.gpu), ttl_s=parse_duration(args.expires, "--expires"),
                            deadline_s=parse_duration(args.deadline, "--deadline") if args.deadline else 0,
                            verifier_keys=split_csv(args.verifier_keys))
    needed, known = 1 + args.verifiers, _nodes_known(plans.addr)
    ctx.note(bidders_hint(needed, known, args.verifiers))
    ctx.emit({"plan_id": plan_id, "bidders_needed": needed, "nodes_known": known}, plan_id)
    return 0


def _nodes_known(addr: str) -> int | None:
    """The proposing node and the peers it knows; None when it cannot say."""
    from node.errors import PeerError
    from node.network.client import network_info

    try:
        return 1 + network_info(addr).peer_count
    except PeerError:
        return None


def bidders_hint(needed: int, known: int | None, verifiers: int) -> str:
    """What the plan waits for: an executor and `verifiers` verifiers, each a different node."""
    text = f"the plan needs {needed} bidding nodes (1 executor + {verifiers} verifiers)"
    if known is None:
        return text
    text += f"; {known} node{'s' if known != 1 else ''} known (this one and its peers)"
    if known < needed:
        text += (f": it waits for {needed - known} more to join, else expires; --verifiers {max(known - 1, 0)} "
                 "fits the nodes known now")
    return text


def exit_code(doc: dict[str, Any]) -> int:
    """published 0; a failed attestation 3 (verification failure); any other end 1."""
    if doc["state"] == "published":
        return 0
    if doc["state"] == "failed" and any(not a["passed"] for a in doc["attestations"]):
        return 3
    return 1


def cmd_status(args: argparse.Namespace, ctx: Context) -> int:
    plans = client(ctx, args.node)
    doc = plans.wait(args.plan_id, args.timeout, on_update=ChangePrinter(ctx.note)) if args.wait \
        else plans.status(args.plan_id)
    ctx.emit(doc, status_text(doc))
    return exit_code(doc) if args.wait else 0


class ChangePrinter:
    """`plan status --wait`'s on_update: one line (on stderr) each time the plan visibly moves."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say
        self._last: dict[str, Any] = {}

    def __call__(self, doc: dict[str, Any]) -> None:
        now = {"state": doc["state"], "consents": sum(c["accept"] is not None for c in doc["consents"]),
               "bids": len(doc["bids"]), "executor": (doc["executor"] or {}).get("address"),
               "attested": len(doc["attestations"]), "result": (doc["result"] or {}).get("model_id")}
        changed = [k for k, v in now.items() if self._last.get(k) != v and (self._last or v)]
        self._last = now
        if not changed:
            return
        parts = [f"{doc['state']}" + (f" ({doc['reason']})" if doc.get("reason") else "")]
        parts += [f"{now['consents']}/{len(doc['consents'])} consents"] if doc["consents"] else []
        parts += [f"{now['bids']} bids"]
        parts += [f"executor {now['executor']}"] if now["executor"] else []
        parts += [f"attested {now['attested']}/{doc['attestations_needed']}"] if now["executor"] else []
        parts += [f"result {now['result']}"] if now["result"] else []
        self.say(time.strftime("%H:%M:%S ") + ", ".join(parts))


def cmd_ls(args: argparse.Namespace, ctx: Context) -> int:
    docs = client(ctx, args.node).list()
    lines = [f"{d['plan_id'][:23]}  {d['state']:<10} {d['method'] or '?':<18} "
             f"{(d['result'] or {}).get('model_id', '')[:23]}" for d in docs]
    ctx.emit(docs, "\n".join(lines) if lines else "no plans")
    return 0


def cmd_consent(args: argparse.Namespace, ctx: Context) -> int:
    from registry.index import pick_one

    plans = client(ctx, args.node)
    doc = plans.status(args.plan_id, executor_progress=False)  # the node resolves a plan id prefix
    plan_id = doc["plan_id"]
    model_id = pick_one(args.model_id, [i["model_id"] for i in doc["inputs"]], f"among the inputs of plan {plan_id}")
    plans.decide(plan_id, model_id, args.accept, args.reason)
    verdict = "accepted" if args.accept else "refused"
    ctx.emit({"plan_id": plan_id, "model_id": model_id, "accept": args.accept}, f"{verdict} {plan_id}")
    return 0


def _short(key: str | None) -> str:
    return (key or "")[:12] + "…" if key else "-"


def status_text(d: dict[str, Any]) -> str:
    lines = [f"plan      {d['plan_id']}", f"state     {d['state']}" + (f" ({d['reason']})" if d["reason"] else ""),
             f"method    {d['method']}   license {d['license']}",
             f"proposer  {_short(d['proposer']['key_id'])} at {d['proposer']['address']}"]
    lines += [f"input     {i['role']:<6} {i['model_id']}" for i in d["inputs"]]
    if d.get("data_sha256"):
        lines.append(f"data      sha256:{d['data_sha256']} (inline in the plan)")
    for c in d["consents"]:
        verdict = {True: "accepted", False: f"refused ({c['reason']})", None: "waiting"}[c["accept"]]
        lines.append(f"consent   {c['model_id'][:23]} by {_short(c['publisher'])}: {verdict}")
    lines.append(f"bids      {len(d['bids'])}: " + ", ".join(f"{_short(b['key_id'])} {b['device']} score {b['score']}"
                                                         for b in d["bids"]))
    if d["executor"]:
        lines.append(f"executor  {_short(d['executor']['key_id'])} at {d['executor']['address']}")
        lines.append("verifiers " + ", ".join(f"{_short(v['key_id'])} at {v['address']}" for v in d["verifiers"]))
    if d["progress"]["total"]:
        unit = "steps" if (d["method"] or "").startswith("fusion") else "tensors"
        lines.append(f"progress  {d['progress']['done']}/{d['progress']['total']} {unit}")
    if d["result"]:
        r = d["result"]
        lines.append(f"result    {r['model_id'] or 'none: ' + r['error']} ({r['device']}, {r['seconds']}s)")
    lines.append(f"attested  {sum(a['passed'] for a in d['attestations'])}/{d['attestations_needed']}")
    lines += [f"  {_short(a['verifier'])} {'pass' if a['passed'] else 'FAIL'}: {a['detail']}"
              + "".join(f"\n    {name} {value:.4f}" for name, value in sorted(a.get("scores", {}).items()))
              for a in d["attestations"]]
    return "\n".join(lines)
