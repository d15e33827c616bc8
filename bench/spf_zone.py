#!/usr/bin/env python3
# bench/spf_zone.py: deterministic SPF zone for the SPF benchmark stream.
"""Write the sender domains of the SPF benchmark and the DNS data that serves them.

Three files come out of one seed: the domain list that gen_requests.py --spf-domains reads
(DOMAIN RESULT [NETWORK]), a dnsmasq configuration fragment (txt-record and host-record
lines) and the same records as a zone file for the domain example (for nsd), so that either
nameserver answers for them. Every name is under bench.example and
every address is private or documentation space, so nothing here names a real host.

The records are shaped like real ones, because an SPF check costs what its record makes it
look up: a pass may come from ip4, ip6, an include or an a mechanism with a prefix; a fail
goes through an include that does not match before -all, some with an exp= explanation
(one more query); none is a name without a record (NXDOMAIN, as most HELO names are).
"""

import argparse
import random
import sys

ZONE = "bench.example"
# Networks nobody in the stream sends from: a fail domain's include must not match.
PROVIDER_NETWORKS = ("192.0.2.0/24", "198.51.100.0/24")

# Share of each result among the domains, in the order they are assigned.
MIX = (("pass", 0.5), ("fail", 0.15), ("softfail", 0.1), ("neutral", 0.05), ("none", 0.2))


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--domains", type=int, default=1000, help="sender domains to write")
    p.add_argument("--domain-list", required=True, metavar="FILE",
                   help="write DOMAIN RESULT [NETWORK] lines here (gen_requests.py --spf-domains)")
    p.add_argument("--dnsmasq", required=True, metavar="FILE",
                   help="write the dnsmasq txt-record/host-record lines here")
    p.add_argument("--zone-file", metavar="FILE",
                   help="also write the records as a zone file for the domain example")
    args = p.parse_args(argv)
    if not 1 <= args.domains <= 60000:
        p.error("--domains must be between 1 and 60000")
    return args


def txt(name, text):
    # dnsmasq takes the value in double quotes; SPF text never holds one here.
    return f'txt-record={name},"{text}"\n'


def zone_file(records):
    """The dnsmasq lines as a master file: the SOA's minimum (300 s) is the negative TTL."""
    lines = ["$ORIGIN example.\n", "$TTL 300\n",
             f"@ IN SOA ns.{ZONE}. hostmaster.{ZONE}. 1 1200 120 604800 300\n",
             f"@ IN NS ns.{ZONE}.\n", f"ns.{ZONE}. IN A 127.0.0.1\n"]
    for record in records:
        kind, _, rest = record.rstrip("\n").partition("=")
        name, _, value = rest.partition(",")
        if kind == "txt-record":
            lines.append(f"{name}. IN TXT {value}\n")
        else:
            lines.append(f"{name}. IN A {value}\n")
    return lines


def main(argv):
    args = parse_args(argv)
    rng = random.Random(args.seed)
    domains, records = [], []
    provider = f"_spf.provider.{ZONE}"
    records.append(txt(provider, "v=spf1 " + " ".join(f"ip4:{n}" for n in PROVIDER_NETWORKS)
                       + " ~all"))
    explain = f"explain.{ZONE}"
    records.append(txt(explain, "%{i} is not one of %{d}'s designated mail servers"))
    results = []
    for result, share in MIX:
        results += [result] * round(share * args.domains)
    results = (results + ["none"] * args.domains)[:args.domains]
    rng.shuffle(results)
    for k, result in enumerate(results):
        domain = f"{result}{k}.{ZONE}"
        if result == "pass":
            form = rng.randrange(4)
            if form == 3:
                network = f"2001:db8:{k + 1:x}::/48"
                records.append(txt(domain, f"v=spf1 ip6:{network} -all"))
            else:
                # 10.200.0.0/13 and up: one /24 per domain, apart from each other.
                network = f"10.{200 + k // 256}.{k % 256}.0/24"
                if form == 0:
                    records.append(txt(domain, f"v=spf1 ip4:{network} -all"))
                elif form == 1:
                    included = f"_spf.{domain}"
                    records.append(txt(domain, f"v=spf1 include:{included} -all"))
                    records.append(txt(included, f"v=spf1 ip4:{network} ~all"))
                else:
                    host = f"out.{domain}"
                    records.append(f"host-record={host},{network.rsplit('.', 1)[0]}.1\n")
                    records.append(txt(domain, f"v=spf1 a:{host}/24 -all"))
            domains.append(f"{domain} pass {network}\n")
            continue
        if result == "fail":
            text = f"v=spf1 include:{provider} -all"
            if rng.random() < 0.5:
                text += f" exp={explain}"
            records.append(txt(domain, text))
        elif result == "softfail":
            records.append(txt(domain, "v=spf1 ip4:203.0.113.0/24 ~all"))
        elif result == "neutral":
            records.append(txt(domain, "v=spf1 ?all"))
        domains.append(f"{domain} {result}\n")
    with open(args.domain_list, "w", encoding="utf-8") as f:
        f.writelines(domains)
    with open(args.dnsmasq, "w", encoding="utf-8") as f:
        f.writelines(records)
    if args.zone_file:
        with open(args.zone_file, "w", encoding="utf-8") as f:
            f.writelines(zone_file(records))


if __name__ == "__main__":
    main(sys.argv[1:])
