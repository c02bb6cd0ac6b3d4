"""A pod's resolv.conf and the names a stub resolver tries for a query (pure).

The DNS step resolves a Service name the way the pod's libc would: a name
with fewer dots than `ndots` is tried with each search domain first, then as
is; the first answer with addresses wins. So a pod whose search path lacks
`<ns>.svc.cluster.local` fails on the short name while the FQDN works, which
is the symptom the Debug Services page describes.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_NDOTS = 1  # glibc's default when resolv.conf says nothing


@dataclass(frozen=True)
class ResolvConf:
    nameservers: tuple[str, ...]
    search: tuple[str, ...]
    ndots: int

    def line(self) -> str:
        return (f"nameserver {' '.join(self.nameservers) or '<none>'}; "
                f"search {' '.join(self.search) or '<none>'}; ndots:{self.ndots}")


def parse(text: str) -> ResolvConf:
    """The parts of resolv.conf that decide a lookup (the last search/domain line wins)."""
    nameservers: list[str] = []
    search: tuple[str, ...] = ()
    ndots = DEFAULT_NDOTS
    for raw in text.splitlines():
        words = raw.split("#", 1)[0].split(";", 1)[0].split()
        if not words:
            continue
        if words[0] == "nameserver" and len(words) > 1:
            nameservers.append(words[1])
        elif words[0] in ("search", "domain"):
            search = tuple(words[1:])
        elif words[0] == "options":
            for option in words[1:]:
                if option.startswith("ndots:") and option[6:].isdigit():
                    ndots = min(int(option[6:]), 15)
    return ResolvConf(tuple(nameservers), search, ndots)


def candidates(name: str, conf: ResolvConf) -> list[str]:
    """Absolute names a stub resolver asks for `name`, in order."""
    if name.endswith("."):
        return [name]
    searched = [f"{name}.{domain}." for domain in conf.search]
    plain = [f"{name}."]
    return searched + plain if name.count(".") < conf.ndots else plain + searched
