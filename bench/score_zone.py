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

--postfix-names FILE writes the stream again with the client_name and reverse_client_name
that smtpd would send for this DNS data (the host name for servers and dynamic hosts, whose
names resolve back; "unknown" for hosts without reverse DNS), so that a policy that takes
smtpd's findings sees the same clients as one that asks the DNS itself.

--zone-file FILE appends the same data to a master file of the zone "example" (the one
bench/spf_zone.py --zone-file writes) and --reverse-zones DIR writes the PTR records as the
zones 10.in-addr.arpa and 8.b.d.0.1.0.0.2.ip6.arpa (2001:db8::/32), for nsd.
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
    p.add_argument("--postfix-names", metavar="FILE",
                   help="write the stream with the client names smtpd would send")
    p.add_argument("--zone-file", metavar="FILE", help="append to this master file (nsd)")
    p.add_argument("--reverse-zones", metavar="DIR", help="write the reverse zones here (nsd)")
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


def write_postfix_names(source, target, names):
    """Copies the stream, with client_name and reverse_client_name from `names`."""
    with open(source, encoding="utf-8") as stream, open(target, "w", encoding="utf-8") as out:
        block = []
        for line in stream:
            if line != "\n":
                block.append(line)
                continue
            address = next((l[15:-1] for l in block if l.startswith("client_address=")), "")
            name = names.get(address, "unknown")
            for l in block:
                if l.startswith("client_name="):
                    l = f"client_name={name}\n"
                elif l.startswith("reverse_client_name="):
                    l = f"reverse_client_name={name}\n"
                out.write(l)
            out.write("\n")
            block = []


REVERSE_ZONES = ("10.in-addr.arpa", "8.b.d.0.1.0.0.2.ip6.arpa")


def master_lines(lines):
    """The dnsmasq lines as records of the zone "example"."""
    out = []
    for line in lines:
        kind, _, rest = line.rstrip("\n").partition("=")
        fields = rest.split(",")
        if kind == "host-record":
            name, address = fields
            rtype = "AAAA" if ":" in address else "A"
            out.append(f"{name}. IN {rtype} {address}\n")
        elif kind == "mx-host":
            domain, host, preference = fields
            out.append(f"{domain}. IN MX {preference} {host}.\n")
    return out


def write_reverse_zones(directory, names):
    """The PTR record of every named client, in the reverse zone that holds it."""
    zones = {zone: [] for zone in REVERSE_ZONES}
    for address, name in names.items():
        pointer = ipaddress.ip_address(address).reverse_pointer
        zone = next(z for z in REVERSE_ZONES if pointer.endswith("." + z))
        zones[zone].append(f"{pointer}. IN PTR {name}.\n")
    for zone, records in zones.items():
        with open(f"{directory}/{zone}.zone", "w", encoding="utf-8") as f:
            f.write(f"$ORIGIN {zone}.\n$TTL 300\n")
            f.write(f"@ IN SOA ns.{ZONE}. hostmaster.{ZONE}. 1 1200 120 604800 300\n")
            f.write(f"@ IN NS ns.{ZONE}.\n")
            f.writelines(records)


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
    out, names = [], {}
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
            names[address] = name
        for zone, share, code in LISTS:
            if rng.random() < share:
                out.append(f"host-record={list_name(address, zone + '.' + ZONE)},{code}\n")
    for domain in domains:
        if rng.random() < MX_SHARE:
            out.append(f"mx-host={domain},mx.{ZONE},10\n")
    sys.stdout.writelines(out)
    if args.postfix_names:
        write_postfix_names(args.requests, args.postfix_names, names)
    if args.zone_file:
        with open(args.zone_file, "a", encoding="utf-8") as f:
            f.writelines(master_lines(out))
    if args.reverse_zones:
        write_reverse_zones(args.reverse_zones, names)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
