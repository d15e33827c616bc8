#!/usr/bin/env python3
# bench/server_cpu.py: adds a daemon's CPU time to the driver's stream table.
"""Print one stream table of bench_driver with the CPU a server daemon used per request.

bench_driver counts the CPU of each policy process and of the helpers it starts (greyspf's
keeper). A daemon the benchmark script started itself (redis-server, sqlgrey) is not among
them: the script reads its CPU time from /proc/PID/stat before and after the table and
gives it here with the number of requests it served; this prints every policy with its
own, its helper's and its server's CPU per request, and the sum.

  server_cpu.py TABLE.json --served N --server POLICY=LABEL:MICROSECONDS ...
"""

import argparse
import json


def cell(v, digits=1):
    return "" if v is None else f"{v:,.{digits}f}"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("table")
    p.add_argument("--served", type=int, required=True,
                   help="requests each server served during the table (warm-up included)")
    p.add_argument("--server", action="append", default=[],
                   help="POLICY=LABEL:MICROSECONDS, the CPU a policy's server used")
    a = p.parse_args()
    servers = {}
    for s in a.server:
        policy, rest = s.split("=", 1)
        label, us = rest.rsplit(":", 1)
        servers[policy] = (label, float(us))
    doc = json.load(open(a.table))
    print()
    print("| policy | req/s | p50 µs | p99 µs | CPU µs/req: policy | keeper | server | in all |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for pol in doc["policies"]:
        name = pol["name"]
        own = pol.get("cpu_us_per_request_median")
        helper = pol.get("helper_cpu_us_per_request_median")
        label, us = servers.get(name, (None, None))
        server = us / a.served if label else None
        total = sum(v for v in (own, helper, server) if v is not None)
        server_cell = f"{cell(server)} ({label})" if label else ""
        print(f"| {name} | {cell(pol.get('requests_per_second_median'), 0)} "
              f"| {cell(pol.get('latency_p50_us'))} | {cell(pol.get('latency_p99_us'))} "
              f"| {cell(own)} | {cell(helper) if helper else ''} | {server_cell} "
              f"| {cell(total)} |")
    rates = {pol["name"]: pol.get("requests_per_second_median") for pol in doc["policies"]}
    if rates.get("greyspf-redis") and rates.get("sqlgrey"):
        print(f"\nstore = redis answered {rates['greyspf-redis'] / rates['sqlgrey']:.1f}x "
              "as many requests per second as sqlgrey.")


if __name__ == "__main__":
    main()
