"""Record kube-proxy's nftables table for each node of tests/unit/trace_lab.py (needs root).

Renders the table with the lab's nftables proxier (counters on, as in a lab),
loads it into a scratch network namespace, and saves what `nft -j list table`
and `nft -a list table` print, so the unit tests read the kernel's own JSON
without root. Run it after changing the nftables renderer or the test lab:

    sudo python3 -m tests.unit.trace_data.regenerate_nft
"""

from __future__ import annotations

import json

from netlab.kernel import netns
from netlab.proxy.nftables.kernel import NftKernel
from netlab.proxy.nftables.render import NodeConfig, render
from tests.unit import trace_lab

SCRATCH = "trc-nft-fixture"


def main() -> None:
    for name, address, _, _ in trace_lab.NODES:
        netns.create(SCRATCH)
        try:
            kernel = NftKernel(SCRATCH)
            config = NodeConfig(name, node_ips=(address,), counters=True)
            kernel.apply(render(trace_lab.snapshot(name), config).text)
            items, listing = kernel.list_table()
        finally:
            netns.delete(SCRATCH)
        path = trace_lab.DATA / f"nft-{name}.json"
        path.write_text(json.dumps({"items": items, "listing": listing}, indent=1) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
