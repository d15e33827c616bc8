#!/usr/bin/env python3
# bench/score_zone.py: deterministic DNS data for the reputation-scoring benchmark stream.
"""Write dnsmasq lines that give the clients of a request stream a reputation.

Reads a stream of gen_requests.py and, for each distinct client address in order of first
appearance, draws a kind from the seed: a server (its host name resolves to it and back:
forward-confirmed reverse DNS, and a HELO that resolves), a dynamic-looking host (the same,
with a name like dsl-203-0-113-5.pool.bench.example), or a host without reverse DNS. Some
addresses are listed in the block lists bl1 and bl2 or in the allow list wl (all under
bench.example); most sender domains get an MX. The nameserver must answer NXDOMAIN for
the reverse names it has no record of (local=/in-addr.arpa/ and local=/ip6.arpa/).
"""

import argparse
import ipaddress
import random
import sys

ZONE = "bench.example"
LISTS = (("bl1", 0.10, "127.0.0.2"), ("bl2", 0.05, "127.0.0.2"), ("wl", 0.05, "127.0.10.1"))
# Shares of server, dynamic host and no reverse DNS.
KINDS = (("server", 0.5), ("dynamic", 0.2), ("none", 0.3))
MX_SHARE = 0.8


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--requests", required=True, metavar="FILE", help="the request stream")
    return p.parse_args(argv)


def clients_and_domains(path):
    """Distinct (address, client name) pairs and sender domains, in order of appearance."""
    clients, domains, seen, seen_domains = [], [], set(), set()
    with open(path, encoding="utf-8") as stream:
        block = {}
        for line in stream:
            line = line.rstrip("\n")
            if line:
                name, _, value = line.partition("=")
                block[name] = value
                continue
            address = block.get("client_address", "")
            if address and address not in seen:
                seen.add(address)
                clients.append((address, block.get("client_name", "unknown")))
            domain = block.get("sender", "").rpartition("@")[2]
            if domain and domain not in seen_domains:
                seen_domains.add(domain)
                domains.append(domain)
            block = {}
    return clients, domains


def list_name(address, zone):
    ip = ipaddress.ip_address(address)
    if ip.version == 4:
        return ".".join(reversed(address.split("."))) + f".{zone}"
    return ".".join(reversed(ip.exploded.replace(":", ""))) + f".{zone}"


def draw(rng, shares):
    x, total = rng.random(), 0.0
    for kind, share in shares:
        total += share
        if x < total:
            return kind
    return shares[-1][0]


def main(argv):
    args = parse_args(argv)
    rng = random.Random(args.seed)
    clients, domains = clients_and_domains(args.requests)
    out = []
    for n, (address, name) in enumerate(clients):
        kind = draw(rng, KINDS)
        if kind == "dynamic":
            tag = address.replace(".", "-").replace(":", "-")
            name = f"dsl-{tag}.pool.{ZONE}"
        elif kind == "server" and name == "unknown":
            name = f"mta-{n}.hosts.{ZONE}"
        if kind != "none":
            # One record gives the address record and the PTR.
            out.append(f"host-record={name},{address}\n")
        for zone, share, code in LISTS:
            if rng.random() < share:
                out.append(f"host-record={list_name(address, zone + '.' + ZONE)},{code}\n")
    for domain in domains:
        if rng.random() < MX_SHARE:
            out.append(f"mx-host={domain},mx.{ZONE},10\n")
    sys.stdout.writelines(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
