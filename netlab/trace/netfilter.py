"""Installed iptables rules as data, and a packet's walk through one hook of them.

Parses what `iptables-legacy-save [-c]` prints (and the restore payloads the
proxy writes, whose options come in another order) and evaluates a packet the
way the kernel does for the first packet of a connection: jumps, RETURN, policy,
marks, DNAT/SNAT/MASQUERADE, REJECT/DROP. `-m statistic --mode random` forks
the walk, so one call answers "which endpoints could this packet reach and with
what probability"; the caller picks the branch (the simulator by hint, the live
trace by what its captures saw).

Only the matches kube-proxy and flannel use are understood; any other match is
taken as not matching and named in the outcome's notes, so a trace never claims
more than it knows.
"""

from __future__ import annotations

import ipaddress
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from netlab.trace.model import FlowTuple, RuleHit

if TYPE_CHECKING:
    from netlab.trace.nft import NftTable

BUILTIN_CHAINS = {"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"}
TERMINAL = {"ACCEPT", "DROP", "REJECT", "DNAT", "SNAT", "MASQUERADE", "REDIRECT"}
MAX_OUTCOMES = 256
MAX_DEPTH = 64


@dataclass(frozen=True)
class Cond:
    module: str  # "" for the basic -s/-d/-p/-i/-o matches
    key: str
    values: tuple[str, ...]
    negate: bool = False


@dataclass(frozen=True)
class Rule:
    table: str
    chain: str
    position: int
    conds: tuple[Cond, ...]
    target: str  # "" when the rule has no -j (a counting or comment-only rule)
    target_opts: tuple[tuple[str, tuple[str, ...]], ...]
    goto: bool
    text: str  # "-A CHAIN ..." as written
    counters: tuple[int, int] | None = None

    @property
    def comment(self) -> str:
        return next((" ".join(c.values) for c in self.conds
                     if c.module == "comment" and c.key == "comment"), "")

    def opt(self, name: str) -> str | None:
        return next((" ".join(v) for k, v in self.target_opts if k == name), None)

    def hit(self, counter: int | None = None) -> RuleHit:
        return RuleHit(self.table, self.chain, self.position, self.text, self.target,
                       self.comment, counter)


@dataclass
class Chain:
    name: str
    policy: str | None  # None for user chains
    rules: list[Rule] = field(default_factory=list)


@dataclass
class Ruleset:
    """A node's installed rules: iptables tables, and in nftables mode kube-proxy's table.

    `recent` is the kernel state the rules read: xt_recent lists (session affinity
    in iptables mode), list name -> client address -> seconds since last seen.
    """

    tables: dict[str, dict[str, Chain]] = field(default_factory=dict)
    nft: NftTable | None = None
    recent: dict[str, dict[str, float]] = field(default_factory=dict)

    def chain(self, table: str, name: str) -> Chain | None:
        return self.tables.get(table, {}).get(name)

    def rules(self) -> list[Rule]:
        return [r for chains in self.tables.values() for c in chains.values() for r in c.rules]


def parse_save(text: str) -> Ruleset:
    """Rules from iptables-save output (with or without -c) or a restore payload."""
    ruleset = Ruleset()
    table: dict[str, Chain] | None = None
    table_name = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or line == "COMMIT":
            continue
        if line.startswith("*"):
            table_name = line[1:]
            table = ruleset.tables.setdefault(table_name, {})
            continue
        if table is None:
            continue
        if line.startswith(":"):
            name, policy = line[1:].split()[:2]
            chain = table.setdefault(name, Chain(name, None))
            chain.policy = policy if policy != "-" else None
            continue
        counters = None
        if line.startswith("["):
            count, _, line = line.partition("] ")
            packets, _, nbytes = count[1:].partition(":")
            counters = (int(packets), int(nbytes))
        tokens = shlex.split(line)
        if len(tokens) < 2 or tokens[0] not in ("-A", "-I"):
            continue  # -X, -F, -N: not rules
        name = tokens[1]
        chain = table.setdefault(name, Chain(name, "ACCEPT" if name in BUILTIN_CHAINS else None))
        start = 2
        if tokens[0] == "-I" and len(tokens) > 2 and tokens[2].isdigit():
            start = 3
        rule = _parse_rule(table_name, name, len(chain.rules) + 1, tokens[start:], counters)
        rule = replace(rule, text=_canonical(line, tokens))
        if tokens[0] == "-I":
            chain.rules.insert(0, rule)
            chain.rules = [replace(r, position=i + 1) for i, r in enumerate(chain.rules)]
        else:
            chain.rules.append(rule)
    return ruleset


def _canonical(line: str, tokens: list[str]) -> str:
    if tokens[0] == "-I":
        rest = tokens[3:] if len(tokens) > 2 and tokens[2].isdigit() else tokens[2:]
        return f"-A {tokens[1]} " + " ".join(f'"{t}"' if " " in t else t for t in rest)
    return line


_BASIC = {"-s": "src", "--source": "src", "-d": "dst", "--destination": "dst",
          "-p": "proto", "--protocol": "proto", "-i": "in", "--in-interface": "in",
          "-o": "out", "--out-interface": "out"}


def _parse_rule(table: str, chain: str, position: int, tokens: list[str],
                counters: tuple[int, int] | None) -> Rule:
    conds: list[Cond] = []
    target, goto = "", False
    target_opts: list[tuple[str, tuple[str, ...]]] = []
    module = ""
    negate = False
    i = 0
    in_target = False
    while i < len(tokens):
        tok = tokens[i]
        if tok == "!":
            negate = True
            i += 1
            continue
        if tok in _BASIC and not in_target:
            conds.append(Cond("", _BASIC[tok], (tokens[i + 1],), negate))
            i += 2
        elif tok == "-m" and not in_target:
            module = tokens[i + 1]
            i += 2
        elif tok in ("-j", "-g"):
            target, goto, in_target = tokens[i + 1], tok == "-g", True
            i += 2
        elif tok == "-c":
            counters = (int(tokens[i + 1]), int(tokens[i + 2]))
            i += 3
        elif tok.startswith("--"):
            values = []
            i += 1
            while i < len(tokens) and tokens[i] != "!" and not (
                    tokens[i].startswith("-") and len(tokens[i]) > 1
                    and not tokens[i][1].isdigit()):
                values.append(tokens[i])
                i += 1
            if in_target:
                target_opts.append((tok[2:], tuple(values)))
            else:
                conds.append(Cond(module, tok[2:], tuple(values), negate))
        else:
            i += 1
        negate = False
    return Rule(table, chain, position, tuple(conds), target, tuple(target_opts), goto, "",
                counters)


# evaluation -------------------------------------------------------------------------
@dataclass(frozen=True)
class Packet:
    """The probe as netfilter sees it at one hook."""

    flow: FlowTuple
    mark: int = 0
    dnat: bool = False
    snat: bool = False
    established: bool = False  # an answer of a tracked connection (the reply path)


@dataclass(frozen=True)
class HookContext:
    """What the kernel knows at the hook besides the packet."""

    is_local: Callable[[str], bool]
    in_iface: str | None = None
    out_iface: str | None = None
    masquerade_address: str | None = None  # primary address of out_iface
    recent: Mapping[str, Mapping[str, float]] = field(default_factory=dict)  # Ruleset.recent


@dataclass
class Outcome:
    verdict: str  # ACCEPT | DROP | REJECT
    packet: Packet
    hits: list[RuleHit]
    probability: float = 1.0
    reject_with: str | None = None
    nat: str | None = None  # DNAT | SNAT | MASQUERADE | REDIRECT
    notes: list[str] = field(default_factory=list)

    @property
    def decisive(self) -> RuleHit | None:
        """The rule that ended the walk (DNAT, REJECT, ...), or the last one matched."""
        return self.hits[-1] if self.hits else None


@dataclass
class _Walk:
    packet: Packet
    probability: float
    hits: list[RuleHit]
    stack: list[list]  # [chain name, next index]
    notes: list[str]


def evaluate(ruleset: Ruleset, table: str, hook: str, packet: Packet,
             ctx: HookContext) -> list[Outcome]:
    """Every way the packet can leave `table`/`hook`, most probable first."""
    chains = ruleset.tables.get(table, {})
    builtin = chains.get(hook)
    if builtin is None:
        return [Outcome("ACCEPT", packet, [])]
    policy = builtin.policy or "ACCEPT"
    outcomes: list[Outcome] = []
    work = [_Walk(packet, 1.0, [], [[hook, 0]], [])]
    while work and len(outcomes) < MAX_OUTCOMES:
        walk = work.pop()
        outcome = _run(chains, walk, policy, ctx, work)
        if outcome is not None:
            outcomes.append(outcome)
    outcomes.sort(key=lambda o: -o.probability)
    return outcomes


def _run(chains: dict[str, Chain], walk: _Walk, policy: str, ctx: HookContext,
         work: list[_Walk]) -> Outcome | None:
    while True:
        if not walk.stack:
            return Outcome(policy, walk.packet, walk.hits, walk.probability, notes=walk.notes)
        frame = walk.stack[-1]
        chain = chains.get(frame[0])
        if chain is None or frame[1] >= len(chain.rules):
            walk.stack.pop()
            continue
        rule = chain.rules[frame[1]]
        frame[1] += 1
        matched = _matches(rule, walk.packet, ctx, walk.notes)
        if matched is False:
            continue
        if isinstance(matched, float) and matched < 1.0:
            work.append(_Walk(walk.packet, walk.probability * (1 - matched), list(walk.hits),
                              [list(f) for f in walk.stack], list(walk.notes)))
            walk.probability *= matched
        walk.hits.append(rule.hit())
        target = rule.target
        if not target:
            continue
        if target in chains and chains[target].policy is None:
            if len(walk.stack) >= MAX_DEPTH:
                walk.notes.append(f"chain depth over {MAX_DEPTH} at {target}: stopped")
                return Outcome("DROP", walk.packet, walk.hits, walk.probability,
                               notes=walk.notes)
            if rule.goto:
                walk.stack[-1] = [target, 0]
            else:
                walk.stack.append([target, 0])
            continue
        if target == "RETURN":
            walk.stack.pop()
            if len(walk.stack) == 0:
                return Outcome(policy, walk.packet, walk.hits, walk.probability,
                               notes=walk.notes)
            continue
        if target == "MARK":
            walk.packet = replace(walk.packet, mark=_mark(rule, walk.packet.mark))
            continue
        if target in TERMINAL:
            return _terminal(rule, walk, ctx)
        if target not in ("LOG", "NFLOG", "TRACE", "NOTRACK", "CT", "CHECKSUM", "CONNMARK"):
            walk.notes.append(f"target {target} not modelled: taken as non-terminating")


def _terminal(rule: Rule, walk: _Walk, ctx: HookContext) -> Outcome:
    pkt = walk.packet
    flow = pkt.flow
    verdict, nat = "ACCEPT", None
    if rule.target in ("DROP", "REJECT"):
        verdict = rule.target
    elif rule.target == "DNAT":
        ip, port = _address(rule.opt("to-destination") or "", flow.dport)
        pkt = replace(pkt, flow=flow.with_dst(ip, port), dnat=True)
        nat = "DNAT"
    elif rule.target == "SNAT":
        ip, port = _address(rule.opt("to-source") or "", flow.sport)
        pkt = replace(pkt, flow=flow.with_src(ip, port), snat=True)
        nat = "SNAT"
    elif rule.target == "MASQUERADE":
        pkt = replace(pkt, flow=flow.with_src(ctx.masquerade_address or flow.src), snat=True)
        nat = "MASQUERADE"
    elif rule.target == "REDIRECT":
        port = int((rule.opt("to-ports") or str(flow.dport)).split("-")[0])
        pkt = replace(pkt, flow=flow.with_dst("127.0.0.1", port), dnat=True)
        nat = "REDIRECT"
    reject = (rule.opt("reject-with") or "icmp-port-unreachable") if verdict == "REJECT" \
        else None
    return Outcome(verdict, pkt, walk.hits, walk.probability, reject, nat, walk.notes)


def _address(spec: str, default_port: int) -> tuple[str, int]:
    """`10.1.2.3:8080`, `10.1.2.3`, or a range (its first address and port)."""
    ip, _, port = spec.partition(":")
    ip = ip.split("-")[0]
    return ip, int(port.split("-")[0]) if port else default_port


def _mark(rule: Rule, mark: int) -> int:
    for key, values in rule.target_opts:
        value, _, mask = values[0].partition("/")
        v = int(value, 0)
        m = int(mask, 0) if mask else 0xFFFFFFFF
        if key == "set-xmark":
            return (mark & ~m) ^ v
        if key == "set-mark":
            return (mark & ~m) | v
        if key == "or-mark":
            return mark | v
        if key == "xor-mark":
            return mark ^ v
        if key == "and-mark":
            return mark & v
    return mark


def _matches(rule: Rule, pkt: Packet, ctx: HookContext, notes: list[str]) -> bool | float:
    """True, False, or the probability of a random match."""
    probability = 1.0
    for cond in rule.conds:
        result = _cond(cond, pkt, ctx, notes, rule)
        if isinstance(result, float):
            probability *= result
            continue
        if result == cond.negate:
            return False
    return probability if probability < 1.0 else True


def _in_net(ip: str, cidr: str) -> bool:
    return ipaddress.ip_address(ip) in ipaddress.ip_network(cidr, strict=False)


def _port_in(port: int, spec: str) -> bool:
    for part in spec.split(","):
        low, _, high = part.partition(":")
        if int(low) <= port <= int(high or low):
            return True
    return False


def _addrtype(ip: str, types: str, ctx: HookContext) -> bool:
    addr = ipaddress.ip_address(ip)
    for kind in types.split(","):
        if kind == "LOCAL" and ctx.is_local(ip):
            return True
        if kind == "MULTICAST" and addr.is_multicast:
            return True
        if kind == "UNICAST" and not (ctx.is_local(ip) or addr.is_multicast):
            return True
    return False


def _cond(cond: Cond, pkt: Packet, ctx: HookContext, notes: list[str],
          rule: Rule) -> bool | float:
    flow = pkt.flow
    value = cond.values[0] if cond.values else ""
    module, key = cond.module, cond.key
    if not module:
        if key == "src":
            return _in_net(flow.src, value)
        if key == "dst":
            return _in_net(flow.dst, value)
        if key == "proto":
            return value in ("all", "0") or value == flow.proto
        iface = ctx.in_iface if key == "in" else ctx.out_iface
        if iface is None:
            return False
        return iface.startswith(value[:-1]) if value.endswith("+") else iface == value
    if module == "comment":
        return not cond.negate  # never decides
    if module in ("tcp", "udp", "sctp", "multiport"):
        if flow.proto != module and module != "multiport":
            return False
        if key in ("dport", "destination-port", "dports", "destination-ports"):
            return _port_in(flow.dport, value)
        if key in ("sport", "source-port", "sports", "source-ports"):
            return _port_in(flow.sport, value)
        if key == "ports":
            return _port_in(flow.dport, value) or _port_in(flow.sport, value)
    if module == "addrtype":
        if key == "dst-type":
            return _addrtype(flow.dst, value, ctx)
        if key == "src-type":
            return _addrtype(flow.src, value, ctx)
        if key.startswith("limit-iface"):
            return not cond.negate
    if module == "mark" and key == "mark":
        mark, _, mask = value.partition("/")
        return pkt.mark & int(mask or "0xffffffff", 0) == int(mark, 0)
    if module in ("conntrack", "state") and key in ("ctstate", "state"):
        states = {"ESTABLISHED" if pkt.established else "NEW"}
        states |= ({"DNAT"} if pkt.dnat else set()) | ({"SNAT"} if pkt.snat else set())
        return bool(states & set(value.split(",")))
    if module == "statistic":
        if key == "mode":
            if value != "random":
                notes.append(f"statistic mode {value} not modelled (rule {rule.position} of "
                             f"{rule.chain}): taken as not matching")
                return cond.negate
            return not cond.negate
        if key == "probability":
            p = float(value)
            return 1.0 - p if cond.negate else p
        return not cond.negate
    if module == "recent":
        return _recent(key, rule, flow.src, ctx, notes) if key in ("rcheck", "update", "set") \
            else not cond.negate
    if module == "icmp" and key == "icmp-type":
        return flow.proto == "icmp" and value in ("8", "echo-request", "any")
    notes.append(f"match -m {module} --{key} not modelled ({rule.chain} rule "
                 f"{rule.position}): taken as not matching")
    return cond.negate


def _recent(key: str, rule: Rule, src: str, ctx: HookContext, notes: list[str]) -> bool:
    """xt_recent, as kube-proxy uses it for sessionAffinity: ClientIP.

    `--rcheck --seconds T` in the service chain matches when the client's address
    is in the endpoint's list and was seen within T seconds: that endpoint is
    taken with certainty, the random rules are never reached. `--set` on the
    endpoint's DNAT rule always matches and (re)pins the client.
    """
    opts = {c.key: c.values[0] if c.values else "" for c in rule.conds if c.module == "recent"}
    name = opts.get("name", "DEFAULT")
    if key == "set":
        target = rule.opt("to-destination") or rule.chain
        note = f"session affinity: this connection pins {src} to {target} (recent --set {name})"
        if note not in notes:
            notes.append(note)
        return True
    age = ctx.recent.get(name, {}).get(src)
    seconds = float(opts["seconds"]) if opts.get("seconds") else None
    if age is None or (seconds is not None and age > seconds):
        return False
    note = (f"session affinity: {src} is pinned by recent list {name} (seen {age:.0f}s ago"
            + (f", timeout {seconds:.0f}s)" if seconds is not None else ")"))
    if note not in notes:
        notes.append(note)
    return True
