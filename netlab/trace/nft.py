"""kube-proxy's nftables table (`ip kube-proxy`) as data, and a packet's walk through it.

The twin of netfilter.py for nftables mode. The table is read as `nft -j list
table ip kube-proxy` prints it (rules as JSON statements, sets and verdict maps
with their elements, affinity sets with their live entries), and each rule's
text as `nft -a list table` spells it, so a hop names chains and rules exactly
as kube-proxy's nftables proxier wrote them (`service-SUSTUHLJ-default/web/tcp/http`,
`numgen random mod 2 vmap { ... }`).

Evaluation follows the kernel for the first packet of a connection: matches,
`jump`/`goto`/`return`, verdict-map lookups (a miss goes on to the next rule),
`numgen random mod N` (forks the walk, 1/N each, as the iptables evaluator forks
on `statistic`), mark arithmetic, `dnat`, `masquerade`, `reject`, `drop`. A map
element that decided is reported as its own hit (table `ip kube-proxy`, chain
`@map`), since it is what names the Service. Only what kube-proxy writes is
understood; anything else is taken as not matching and named in the notes.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field, replace
from typing import Any

from netlab.trace.model import RuleHit
from netlab.trace.netfilter import HookContext, Outcome, Packet

TABLE_LABEL = "ip kube-proxy"  # RuleHit.table of every rule and map element of the table
NO_ENDPOINT_MAPS = ("no-endpoint-services", "no-endpoint-nodeports")
MAX_OUTCOMES = 256
MAX_DEPTH = 64
# Which base chains each point of the walk stands for: (nft hook, lowest, highest priority).
# nat OUTPUT and filter OUTPUT split the output hook at priority 0 (filter).
POINTS = {
    ("nat", "PREROUTING"): ("prerouting", -1000, 1000),
    ("filter", "INPUT"): ("input", -1000, 1000),
    ("filter", "FORWARD"): ("forward", -1000, 1000),
    ("nat", "OUTPUT"): ("output", -1000, -1),
    ("filter", "OUTPUT"): ("output", 0, 1000),
    ("nat", "POSTROUTING"): ("postrouting", -1000, 1000),
}
_COUNTER = re.compile(r"\bcounter (packets \d+ bytes \d+ )?")


@dataclass(frozen=True)
class NftRule:
    chain: str
    handle: int
    exprs: tuple[dict[str, Any], ...]
    comment: str = ""
    text: str = ""  # as `nft -a list table` prints it, without the counter statement

    def hit(self) -> RuleHit:
        return RuleHit(TABLE_LABEL, self.chain, self.handle, f"{self.chain}: {self.text}",
                       _target(self.exprs), self.comment)


@dataclass
class NftChain:
    name: str
    hook: str | None = None  # base chains only
    kind: str | None = None  # filter | nat
    priority: int = 0
    policy: str = "accept"
    rules: list[NftRule] = field(default_factory=list)


@dataclass(frozen=True)
class NftElement:
    key: tuple[str, ...]  # one value per concatenated field ("10.96.0.20", "tcp", "80")
    verdict: tuple[str, str] | None = None  # maps: ("goto", "service-...") or ("drop", "")
    comment: str = ""
    expires: float | None = None  # seconds left, for elements of timeout sets

    def text(self) -> str:
        spec = " . ".join(self.key) + (f' comment "{self.comment}"' if self.comment else "")
        if self.verdict is None:
            return spec
        return f"{spec} : {' '.join(v for v in self.verdict if v)}"


@dataclass
class NftTable:
    chains: dict[str, NftChain] = field(default_factory=dict)
    sets: dict[str, list[NftElement]] = field(default_factory=dict)  # sets and maps

    def base_chains(self, table: str, hook: str) -> list[NftChain]:
        """The base chains the walk's `table`/`hook` point stands for, in priority order."""
        point = POINTS.get((table, hook))
        if point is None:
            return []
        name, low, high = point
        return sorted((c for c in self.chains.values()
                       if c.hook == name and low <= c.priority <= high),
                      key=lambda c: c.priority)

    def members(self, name: str) -> list[NftElement]:
        return self.sets.get(name.lstrip("@"), [])


def parse_table(items: list[dict[str, Any]], listing: str = "") -> NftTable:
    """The table from `nft -j list table` items and (for rule texts) `nft -a list table`."""
    texts = rule_texts(listing)
    table = NftTable()
    for item in items:
        if "chain" in item:
            c = item["chain"]
            table.chains[c["name"]] = NftChain(c["name"], c.get("hook"), c.get("type"),
                                               int(c.get("prio", 0)), c.get("policy", "accept"))
        elif "set" in item or "map" in item:
            s = item.get("set") or item.get("map")
            table.sets[s["name"]] = [_element(e, "map" in item) for e in s.get("elem", [])]
    for item in items:
        if "rule" not in item:
            continue
        r = item["rule"]
        chain = table.chains.setdefault(r["chain"], NftChain(r["chain"]))
        text = texts.get((r["chain"], r["handle"]), f"handle {r['handle']}")
        chain.rules.append(NftRule(r["chain"], r["handle"], tuple(r.get("expr", [])),
                                   r.get("comment", ""), text))
    return table


def rule_texts(listing: str) -> dict[tuple[str, int], str]:
    """(chain, handle) -> the rule as nft prints it, the counter statement left out.

    The lab's proxier adds a `counter` to every rule for traces and `proxy rules`;
    kube-proxy writes none, so the text shown is kube-proxy's rule.
    """
    from netlab.proxy.nftables.rules_view import rule_texts as listed

    return {key: _COUNTER.sub("", text).strip() for key, text in listed(listing).items()}


def counters(items: list[dict[str, Any]]) -> dict[tuple[str, str, int], int]:
    """Packet counters of every rule, keyed as RuleHit is: (table, chain, handle)."""
    out: dict[tuple[str, str, int], int] = {}
    for item in items:
        rule = item.get("rule")
        if not rule:
            continue
        packets = sum(e["counter"].get("packets", 0) for e in rule.get("expr", [])
                      if isinstance(e.get("counter"), dict))
        out[(TABLE_LABEL, rule["chain"], rule["handle"])] = packets
    return out


def affinity_entries(table: NftTable) -> dict[str, frozenset[str]]:
    """Affinity set -> the client addresses it pins now (expired entries never match)."""
    return {name: frozenset(e.key[0] for e in elements if e.expires is None or e.expires > 0)
            for name, elements in table.sets.items() if name.startswith("affinity-")}


def _element(raw: Any, is_map: bool) -> NftElement:
    comment, expires = "", None
    verdict = None
    if is_map and isinstance(raw, list):
        raw, value = raw
        verdict = _verdict_of(value)
    if isinstance(raw, dict) and "elem" in raw:
        comment = raw["elem"].get("comment", "")
        expires = raw["elem"].get("expires")
        raw = raw["elem"]["val"]
    return NftElement(_key(raw), verdict, comment, expires)


def _key(raw: Any) -> tuple[str, ...]:
    if isinstance(raw, dict) and "concat" in raw:
        return tuple(_scalar(v) for v in raw["concat"])
    return (_scalar(raw),)


def _scalar(v: Any) -> str:
    if isinstance(v, dict):
        if "prefix" in v:
            return f"{v['prefix']['addr']}/{v['prefix']['len']}"
        if "range" in v:
            return f"{_scalar(v['range'][0])}-{_scalar(v['range'][1])}"
    return str(v)


def _verdict_of(value: Any) -> tuple[str, str] | None:
    if isinstance(value, dict) and value:
        kind, arg = next(iter(value.items()))
        return kind, arg.get("target", "") if isinstance(arg, dict) else ""
    return None


def _target(exprs: tuple[dict[str, Any], ...]) -> str:
    """The rule's action word (or jump target), as RuleHit.target."""
    for expr in exprs:
        (kind, arg), = expr.items()
        if kind in ("jump", "goto"):
            return arg.get("target", kind)
        if kind in ("vmap", "dnat", "snat", "masquerade", "reject", "drop", "accept", "return",
                    "mangle"):
            return kind
    return ""


# evaluation -------------------------------------------------------------------------
@dataclass
class _Walk:
    packet: Packet
    probability: float
    hits: list[RuleHit]
    stack: list[list[Any]]  # [chain name, next rule index]
    notes: list[str]
    rule_exprs: list[dict[str, Any]] | None = None  # statements left of a forked rule


class _Verdict(Exception):
    """A terminal statement: carries the outcome."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.verdict)
        self.outcome = outcome


def evaluate_chain(table: NftTable, base: NftChain, packet: Packet,
                   ctx: HookContext) -> list[Outcome]:
    """Every way the packet can leave base chain `base`, most probable first."""
    outcomes: list[Outcome] = []
    work = [_Walk(packet, 1.0, [], [[base.name, 0]], [])]
    while work and len(outcomes) < MAX_OUTCOMES:
        walk = work.pop()
        outcomes.append(_run(table, base, walk, ctx, work))
    outcomes.sort(key=lambda o: -o.probability)
    return outcomes


def _run(table: NftTable, base: NftChain, walk: _Walk, ctx: HookContext,
         work: list[_Walk]) -> Outcome:
    try:
        if walk.rule_exprs is not None:  # a branch forked inside a rule: finish that rule
            exprs, walk.rule_exprs = walk.rule_exprs, None
            _statements(table, exprs, walk, ctx, work)
        while True:
            if not walk.stack:
                return Outcome(base.policy.upper(), walk.packet, walk.hits, walk.probability,
                               notes=walk.notes)
            frame = walk.stack[-1]
            chain = table.chains.get(frame[0])
            if chain is None or frame[1] >= len(chain.rules):
                walk.stack.pop()
                continue
            rule = chain.rules[frame[1]]
            frame[1] += 1
            if not all(_matches(table, e["match"], walk.packet, ctx, walk.notes, rule)
                       for e in rule.exprs if "match" in e):
                continue
            walk.hits.append(rule.hit())
            _statements(table, [e for e in rule.exprs if "match" not in e], walk, ctx, work)
    except _Verdict as verdict:
        return verdict.outcome


def _statements(table: NftTable, exprs: list[dict[str, Any]], walk: _Walk, ctx: HookContext,
                work: list[_Walk]) -> None:
    """Run a matched rule's statements; raises _Verdict on a terminal one."""
    for expr in exprs:
        (kind, arg), = expr.items()
        if kind == "counter":
            continue
        if kind == "mangle":
            walk.packet = replace(walk.packet, mark=_mark(arg, walk.packet.mark))
        elif kind == "set":
            _set_statement(arg, walk)
        elif kind == "vmap":
            verdict = _vmap(table, arg, walk, ctx, work)
            if verdict is None:
                return  # no element: the rule is done, the next one runs
            _verdict(verdict, walk)
            return
        elif kind in ("jump", "goto", "return", "accept", "drop", "reject"):
            _verdict((kind, (arg or {}).get("target", "") if isinstance(arg, dict) else ""),
                     walk, arg if kind == "reject" else None)
            return
        elif kind in ("dnat", "snat", "masquerade"):
            raise _Verdict(_nat(kind, arg, walk, ctx))
        else:
            walk.notes.append(f"nft statement {kind} not modelled: taken as doing nothing")


def _verdict(verdict: tuple[str, str], walk: _Walk, reject: Any = None) -> None:
    kind, target = verdict
    if kind in ("jump", "goto"):
        if len(walk.stack) >= MAX_DEPTH:
            walk.notes.append(f"chain depth over {MAX_DEPTH} at {target}: stopped")
            raise _Verdict(Outcome("DROP", walk.packet, walk.hits, walk.probability,
                                   notes=walk.notes))
        if kind == "goto":
            walk.stack[-1] = [target, 0]
        else:
            walk.stack.append([target, 0])
        return
    if kind == "return":
        walk.stack.pop()
        return
    if kind == "continue":
        return
    verdicts = {"accept": "ACCEPT", "drop": "DROP", "reject": "REJECT"}
    if kind not in verdicts:
        walk.notes.append(f"nft verdict {kind} not modelled: taken as accept")
    reject_with = None
    if kind == "reject":
        reject_with = "icmp " + (reject.get("expr", "port-unreachable") if isinstance(
            reject, dict) else "port-unreachable")
    raise _Verdict(Outcome(verdicts.get(kind, "ACCEPT"), walk.packet, walk.hits,
                           walk.probability, reject_with, notes=walk.notes))


def _nat(kind: str, arg: Any, walk: _Walk, ctx: HookContext) -> Outcome:
    pkt, flow = walk.packet, walk.packet.flow
    arg = arg or {}
    if kind == "dnat":
        port = int(arg["port"]) if "port" in arg else flow.dport
        pkt = replace(pkt, flow=flow.with_dst(str(arg["addr"]), port), dnat=True)
        return Outcome("ACCEPT", pkt, walk.hits, walk.probability, nat="DNAT",
                       notes=walk.notes)
    if kind == "snat":
        port = int(arg["port"]) if "port" in arg else flow.sport
        pkt = replace(pkt, flow=flow.with_src(str(arg["addr"]), port), snat=True)
        return Outcome("ACCEPT", pkt, walk.hits, walk.probability, nat="SNAT", notes=walk.notes)
    pkt = replace(pkt, flow=flow.with_src(ctx.masquerade_address or flow.src), snat=True)
    return Outcome("ACCEPT", pkt, walk.hits, walk.probability, nat="MASQUERADE",
                   notes=walk.notes)


def _set_statement(arg: dict[str, Any], walk: _Walk) -> None:
    """`update @affinity-X { ip saddr }`: the connection pins its client to this endpoint."""
    name = str(arg.get("set", "")).lstrip("@")
    if name.startswith("affinity-"):
        note = (f"session affinity: this connection pins {walk.packet.flow.src} to "
                f"{_endpoint_of(name)} ({arg.get('op', 'update')} @{name})")
        if note not in walk.notes:
            walk.notes.append(note)


def _endpoint_of(affinity_set: str) -> str:
    """`affinity-HASH-ns/svc/tcp/http__10.244.2.2/8080` -> `10.244.2.2:8080`."""
    ip, _, port = affinity_set.rpartition("__")[2].rpartition("/")
    return f"{ip}:{port}"


def _vmap(table: NftTable, arg: dict[str, Any], walk: _Walk, ctx: HookContext,
          work: list[_Walk]) -> tuple[str, str] | None:
    """The verdict a map lookup gives (recording the element as a hit), or None."""
    key = arg["key"]
    data = arg["data"]
    if isinstance(key, dict) and "numgen" in key:
        return _numgen(key["numgen"], data, walk, work)
    value = tuple(_value(k, walk.packet, ctx) for k in (
        key["concat"] if isinstance(key, dict) and "concat" in key else [key]))
    if isinstance(data, str):
        name = data.lstrip("@")
        for element in table.members(name):
            if element.verdict and _key_matches(element.key, value):
                walk.hits.append(RuleHit(TABLE_LABEL, f"@{name}", 0,
                                         f"@{name}: {element.text()}",
                                         element.verdict[1] or element.verdict[0],
                                         element.comment))
                return element.verdict
        return None
    for raw_key, raw_verdict in _inline(data):
        if _key_matches(_key(raw_key), value):
            return _verdict_of(raw_verdict)
    return None


def _numgen(gen: dict[str, Any], data: Any, walk: _Walk,
            work: list[_Walk]) -> tuple[str, str] | None:
    """`numgen random mod N vmap {...}`: one branch per value, 1/N each."""
    if gen.get("mode") != "random":
        walk.notes.append(f"numgen mode {gen.get('mode')} not modelled: first element taken")
    mod = int(gen.get("mod", 1)) or 1
    offset = int(gen.get("offset", 0))
    branches = []
    for raw_key, raw_verdict in _inline(data):
        value = int(_key(raw_key)[0])
        if offset <= value < offset + mod:
            branches.append(_verdict_of(raw_verdict))
    if not branches:
        return None
    p = 1.0 / mod
    for verdict in branches[1:]:
        if verdict is None:
            continue
        fork = _Walk(walk.packet, walk.probability * p, list(walk.hits),
                     [list(f) for f in walk.stack], list(walk.notes))
        if verdict[0] in ("jump", "goto"):
            _verdict(verdict, fork)  # a verdict ends the rule: nothing of it is left to run
            fork.rule_exprs = []
        else:  # a terminal verdict: raised when the fork runs
            fork.rule_exprs = [{verdict[0]: {"target": verdict[1]} if verdict[1] else None}]
        work.append(fork)
    walk.probability *= p
    return branches[0]


def _inline(data: Any) -> list[tuple[Any, Any]]:
    if isinstance(data, dict) and "set" in data:
        return [(k, v) for k, v in data["set"]]
    return []


def _key_matches(element: tuple[str, ...], value: tuple[str, ...]) -> bool:
    return len(element) == len(value) and all(_one_matches(e, v)
                                              for e, v in zip(element, value, strict=True))


def _one_matches(element: str, value: str) -> bool:
    if element == value:
        return True
    if "/" in element and _is_ip(value):
        return ipaddress.ip_address(value) in ipaddress.ip_network(element, strict=False)
    if "-" in element and value.isdigit():
        low, _, high = element.partition("-")
        return low.isdigit() and high.isdigit() and int(low) <= int(value) <= int(high)
    return False


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _value(expr: Any, pkt: Packet, ctx: HookContext) -> str:
    """The packet's value of one key expression, as a string."""
    flow = pkt.flow
    if isinstance(expr, dict):
        if "payload" in expr:
            field_ = expr["payload"].get("field")
            protocol = expr["payload"].get("protocol")
            if protocol == "ip":
                return {"saddr": flow.src, "daddr": flow.dst}.get(field_, "?")
            if field_ == "dport":
                return str(flow.dport)
            if field_ == "sport":
                return str(flow.sport)
        if "meta" in expr:
            key = expr["meta"].get("key")
            if key == "l4proto":
                return flow.proto
            if key == "mark":
                return str(pkt.mark)
        if "&" in expr:
            left, mask = expr["&"]
            return str(int(_value(left, pkt, ctx)) & int(mask))
        if "ct" in expr and expr["ct"].get("key") == "state":
            return "established" if pkt.established else "new"
        if "fib" in expr:
            flags = expr["fib"].get("flags", [])
            ip = flow.src if "saddr" in flags else flow.dst
            if ctx.is_local(ip):
                return "local"
            return "multicast" if ipaddress.ip_address(ip).is_multicast else "unicast"
    return "?"


def _matches(table: NftTable, m: dict[str, Any], pkt: Packet, ctx: HookContext,
             notes: list[str], rule: NftRule) -> bool:
    value = _value(m["left"], pkt, ctx)
    if value == "?":
        notes.append(f"nft match {m['left']} not modelled ({rule.chain}, handle {rule.handle}): "
                     "taken as not matching")
        return False
    right = m["right"]
    op = m.get("op", "==")
    if isinstance(right, str) and right.startswith("@"):
        found = any(_key_matches(e.key, (value,)) for e in table.members(right)
                    if e.expires is None or e.expires > 0)
        if found and right.startswith("@affinity-"):
            note = f"session affinity: {value} is pinned to {_endpoint_of(right)} ({right})"
            if note not in notes:
                notes.append(note)
    elif isinstance(right, dict) and "set" in right:
        found = any(_one_matches(_scalar(e), value) for e in right["set"])
    elif isinstance(right, list):
        found = value in [str(r) for r in right]
    else:
        found = _one_matches(_scalar(right), value)
    return not found if op == "!=" else found


def _mark(arg: dict[str, Any], mark: int) -> int:
    value = arg.get("value")
    if isinstance(value, int):
        return value
    if isinstance(value, dict):
        (op, (_, operand)), = value.items()
        operand = int(operand)
        return {"|": mark | operand, "^": mark ^ operand, "&": mark & operand}.get(op, mark)
    return mark
