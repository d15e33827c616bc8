#!/usr/bin/env python3
# bench/gen_requests.py: deterministic generator of Postfix policy request streams for the benchmarks.
"""Write Postfix 3.7 smtpd access-policy request blocks to stdout.

The same seed and flags always give the same bytes, so two runs (or two machines) measure
the same work. Every block carries the 29 lines Postfix 3.7.11 sends, in its order (request
type plus 28 attributes; see the real captures in the test fixtures), because a parser's cost
depends on what it has to skip, not only on what it uses.

The stream is a sequence of SMTP transactions ("messages"). A message is either new (a fresh
client, sender and recipients) or a repeat of an earlier one: the retry a real MTA makes after
being greylisted, possibly from another address of the same network and with a re-rendered
sender (a new BATV tag, VERP number or SRS hash), which greylisting must fold into the same
triplet. Each recipient of a message is one RCPT request with the same `instance`.

The stream carries no timing: a driver replays it as fast as the policy answers, so a
retry counts as "after the delay" only with greylist_delay=0 (as the benchmark runs it).

--stats FILE writes JSON counts, including the number of distinct greylisting triplets under
the normalisation of the design (client network, sender without BATV/+ext/VERP digits/SRS,
recipient without +ext, lowercased): the benchmark divides store size by it. With
--spf-domains it also counts them as SPF-keyed greylisting would (the client part of the key
is the sender domain when SPF passes).
"""

import argparse
import ipaddress
import json
import random
import string
import sys

# The attribute order of Postfix 3.7.11 (smtpd_check.c), as captured.
ATTRIBUTES = (
    "request", "protocol_state", "protocol_name", "client_address", "client_name",
    "client_port", "reverse_client_name", "server_address", "server_port", "helo_name",
    "sender", "recipient", "recipient_count", "queue_id", "instance", "size", "etrn_domain",
    "stress", "sasl_method", "sasl_username", "sasl_sender", "ccert_subject", "ccert_issuer",
    "ccert_fingerprint", "ccert_pubkey_fingerprint", "encryption_protocol",
    "encryption_cipher", "encryption_keysize", "policy_context",
)

# Private and documentation ranges only: the stream must never name a real host.
IPV4_POOL = ipaddress.ip_network("10.0.0.0/8")
IPV6_POOL = ipaddress.ip_network("2001:db8::/32")
SERVER_V4 = "192.0.2.25"
SERVER_V6 = "2001:db8:ffff::25"
LOCAL_DOMAINS = ("example.com", "example.net", "example.org")
BASE32 = "abcdefghijklmnopqrstuvwxyz234567"
BASE64 = string.ascii_letters + string.digits + "+/"

SENDER_FORMS = ("plain", "batv", "batv-reversed", "verp", "srs0", "ext")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=1, help="same seed and flags, same bytes")
    p.add_argument("--requests", type=int, default=10000, help="request blocks to write")
    p.add_argument("--repeat", type=float, default=0.4,
                   help="share of messages that retry an earlier message's triplets")
    p.add_argument("--reshape", type=float, default=0.5,
                   help="share of retries with a re-rendered sender and another client "
                        "address of the same network (same triplet, other bytes)")
    p.add_argument("--max-recipients", type=int, default=3,
                   help="recipients per message: 1 in half the messages, else up to this")
    p.add_argument("--null-sender", type=float, default=0.05,
                   help="share of messages with the null sender (bounces)")
    p.add_argument("--ipv6", type=float, default=0.15, help="share of IPv6 clients")
    p.add_argument("--sender-forms", type=float, default=0.3,
                   help="share of senders written as BATV (both orders), VERP, SRS0 or +ext")
    p.add_argument("--recipient-ext", type=float, default=0.05,
                   help="share of recipients with a +extension")
    p.add_argument("--duplicates", type=float, default=0.0,
                   help="share of RCPT requests sent twice, as with check_policy_service "
                        "in two restriction lists and smtpd_delay_reject=yes")
    p.add_argument("--tls", type=float, default=0.5, help="share of TLS sessions")
    p.add_argument("--unknown-client", type=float, default=0.1,
                   help="share of clients without a verified name")
    p.add_argument("--clients", type=int, default=50000, help="size of the client pool")
    p.add_argument("--senders", type=int, default=20000, help="size of the sender pool")
    p.add_argument("--recipients", type=int, default=2000, help="size of the recipient pool")
    p.add_argument("--sender-domains", type=int, default=500,
                   help="size of the generated sender-domain pool (when no --spf-domains)")
    p.add_argument("--spf-domains", metavar="FILE",
                   help="sender domains, one per line: DOMAIN RESULT [NETWORK]; RESULT is "
                        "pass, fail, softfail, neutral or none; clients of a pass domain are "
                        "drawn from its NETWORK (which its SPF record must authorise), others "
                        "from the general pool")
    p.add_argument("--ipv4-prefix", type=int, default=24, help="triplet grouping, for --stats")
    p.add_argument("--ipv6-prefix", type=int, default=64, help="triplet grouping, for --stats")
    p.add_argument("--stats", metavar="FILE", help="write JSON counts here")
    args = p.parse_args(argv)
    for name in ("repeat", "reshape", "null_sender", "ipv6", "sender_forms", "recipient_ext",
                 "duplicates", "tls", "unknown_client"):
        v = getattr(args, name)
        if not 0.0 <= v <= 1.0:
            p.error(f"--{name.replace('_', '-')} must be between 0 and 1")
    if args.requests < 0 or args.max_recipients < 1:
        p.error("--requests must be >= 0 and --max-recipients >= 1")
    return args


def load_spf_domains(path):
    domains = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            fields = line.split("#", 1)[0].split()
            if not fields:
                continue
            if len(fields) not in (2, 3):
                sys.exit(f"{path}:{number}: expected DOMAIN RESULT [NETWORK]")
            network = ipaddress.ip_network(fields[2], strict=False) if len(fields) == 3 else None
            if fields[1] == "pass" and network is None:
                sys.exit(f"{path}:{number}: a pass domain needs the NETWORK its record allows")
            domains.append((fields[0].lower(), fields[1], network))
    if not domains:
        sys.exit(f"{path}: no domains")
    return domains


def random_address(rng, network):
    # Skip the network and broadcast addresses of small IPv4 networks: nobody sends from them.
    size = network.num_addresses
    if size <= 2:
        return network.network_address
    return network.network_address + rng.randrange(1, size - 1)


def triplet_network(address, args):
    prefix = args.ipv6_prefix if address.version == 6 else args.ipv4_prefix
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


class Generator:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        rng = self.rng
        if args.spf_domains:
            self.domains = load_spf_domains(args.spf_domains)
        else:
            self.domains = [(f"d{n}.example", "none", None) for n in range(args.sender_domains)]
        # Pools are drawn up front so that one flag does not shift every later random draw.
        self.clients = []
        for n in range(args.clients):
            v6 = rng.random() < args.ipv6
            address = random_address(rng, IPV6_POOL if v6 else IPV4_POOL)
            name = "unknown" if rng.random() < args.unknown_client else f"mta{n}.relay{n % 997}.example"
            self.clients.append((address, name))
        self.senders = [(f"u{n}", rng.randrange(len(self.domains))) for n in range(args.senders)]
        self.recipients = [f"r{n}@{LOCAL_DOMAINS[n % len(LOCAL_DOMAINS)]}"
                           for n in range(args.recipients)]
        self.messages = []  # earlier messages, for retries
        self.triplets = set()
        self.spf_keyed = set()
        self.counts = {"requests": 0, "messages": 0, "retries": 0, "null_sender": 0,
                       "ipv6_requests": 0, "duplicates": 0,
                       "sender_forms": {form: 0 for form in SENDER_FORMS},
                       "rcpt_by_spf_result": {}}
        self.smtpd_pid = rng.randrange(1000, 60000)
        self.clock = 0x6B024AC8  # a fixed start, so output does not depend on today's date
        self.sequence = 0

    # --- senders -------------------------------------------------------------------------

    def render_sender(self, local, domain, form):
        """One envelope address for the canonical sender local@domain, in the given form."""
        rng = self.rng
        if form == "batv":
            tag = f"{rng.randrange(10)}{rng.randrange(1000):03d}{rng.randrange(1 << 24):06x}"
            return f"prvs={tag}={local}@{domain}"
        if form == "batv-reversed":
            tag = f"{rng.randrange(10)}{rng.randrange(1000):03d}{rng.randrange(1 << 24):06x}"
            return f"prvs={local}={tag}@{domain}"
        if form == "verp":
            return f"{local}-bounces-{rng.randrange(1, 10**7)}-{rng.randrange(1, 10**4)}@{domain}"
        if form == "srs0":
            hash_ = "".join(rng.choice(BASE64) for _ in range(4))
            stamp = "".join(rng.choice(BASE32) for _ in range(2))
            return f"SRS0={hash_}={stamp}={domain}={local}@forwarder.example"
        if form == "ext":
            return f"{local}+{rng.choice(('news', 'bills', 'list', 'x'))}{rng.randrange(100)}@{domain}"
        return f"{local}@{domain}"

    @staticmethod
    def canonical_sender(local, domain, form):
        # VERP digit runs fold to '#', so every VERP number of one list is one sender.
        if form == "verp":
            return f"{local}-bounces-#-#@{domain}"
        return f"{local}@{domain}"

    # --- messages ------------------------------------------------------------------------

    def new_message(self):
        args, rng = self.args, self.rng
        null = rng.random() < args.null_sender
        local, domain_index = self.senders[rng.randrange(len(self.senders))]
        domain, result, network = self.domains[domain_index]
        form = "plain"
        if not null and rng.random() < args.sender_forms:
            form = rng.choice(SENDER_FORMS[1:])
        if network is not None:
            address = random_address(rng, network)
            name = f"mx{rng.randrange(100)}.{domain}"
        else:
            address, name = self.clients[rng.randrange(len(self.clients))]
        count = 1 if rng.random() < 0.5 else rng.randint(1, args.max_recipients)
        recipients = rng.sample(self.recipients, min(count, len(self.recipients)))
        return {"address": address, "name": name, "helo": name if name != "unknown" else
                f"[{address}]" if address.version == 4 else f"[IPv6:{address}]",
                "null": null, "local": local, "domain": domain, "result": result,
                "network": network, "form": form, "recipients": recipients,
                "sender": "" if null else self.render_sender(local, domain, form)}

    def retry(self, earlier):
        message = dict(earlier)
        if self.rng.random() < self.args.reshape:
            # Another outbound address of the same pool and a fresh tag: same triplet.
            grouping = earlier["network"] or ipaddress.ip_network(
                triplet_network(earlier["address"], self.args))
            message["address"] = random_address(self.rng, grouping)
            if not message["null"]:
                message["sender"] = self.render_sender(message["local"], message["domain"],
                                                       message["form"])
        return message

    def next_instance(self):
        # Postfix: "%lx.%lx.%lx.%x" of smtpd pid, time, microseconds, per-session counter.
        self.clock += self.rng.randrange(0, 3)
        self.sequence += 1
        if self.rng.random() < 0.05:
            self.smtpd_pid = self.rng.randrange(1000, 60000)
        return f"{self.smtpd_pid:x}.{self.clock:x}.{self.rng.randrange(1000000):x}.{self.sequence % 4:x}"

    def blocks(self):
        args, rng = self.args, self.rng
        emitted = 0
        while emitted < args.requests:
            if self.messages and rng.random() < args.repeat:
                message = self.retry(self.messages[rng.randrange(len(self.messages))])
                self.counts["retries"] += 1
            else:
                message = self.new_message()
                self.messages.append(message)
            self.counts["messages"] += 1
            self.counts["sender_forms"][message["form"]] += 1
            self.counts["null_sender"] += message["null"]
            instance = self.next_instance()
            queue_id = "%X" % rng.randrange(1 << 40)
            tls = rng.random() < args.tls
            port = rng.randrange(1024, 65536)
            size = rng.choice((0, 0, rng.randrange(1000, 200000)))
            sender_key = "" if message["null"] else self.canonical_sender(
                message["local"], message["domain"], message["form"])
            for index, recipient in enumerate(message["recipients"]):
                if rng.random() < args.recipient_ext:
                    user, domain = recipient.split("@")
                    shown = f"{user}+tag{rng.randrange(10)}@{domain}"
                else:
                    shown = recipient
                network = triplet_network(message["address"], args)
                self.triplets.add((network, sender_key, recipient))
                if message["result"] == "pass" and not message["null"]:
                    self.spf_keyed.add((message["domain"], sender_key, recipient))
                else:
                    self.spf_keyed.add((network, sender_key, recipient))
                results = self.counts["rcpt_by_spf_result"]
                results[message["result"]] = results.get(message["result"], 0) + 1
                block = self.render(message, shown, instance,
                                    queue_id if index > 0 else "", tls, port, size)
                copies = 2 if rng.random() < args.duplicates else 1
                for _ in range(copies):
                    if emitted >= args.requests:
                        return
                    yield block
                    emitted += 1
                    self.counts["requests"] += 1
                    self.counts["ipv6_requests"] += message["address"].version == 6
                self.counts["duplicates"] += copies - 1

    def render(self, message, recipient, instance, queue_id, tls, port, size):
        address = message["address"]
        values = {
            "request": "smtpd_access_policy",
            "protocol_state": "RCPT",
            "protocol_name": "ESMTP" if message["helo"][0] != "[" or tls else "SMTP",
            "client_address": str(address),
            "client_name": message["name"],
            "client_port": str(port),
            "reverse_client_name": message["name"],
            "server_address": SERVER_V6 if address.version == 6 else SERVER_V4,
            "server_port": "25",
            "helo_name": message["helo"],
            "sender": message["sender"],
            "recipient": recipient,
            # Postfix fills recipient_count only from DATA on.
            "recipient_count": "0",
            "queue_id": queue_id,
            "instance": instance,
            "size": str(size),
            "encryption_protocol": "TLSv1.3" if tls else "",
            "encryption_cipher": "TLS_AES_256_GCM_SHA384" if tls else "",
            "encryption_keysize": "256" if tls else "0",
        }
        lines = [f"{name}={values.get(name, '')}\n" for name in ATTRIBUTES]
        lines.append("\n")
        return "".join(lines)


def main(argv):
    args = parse_args(argv)
    generator = Generator(args)
    out = sys.stdout
    for block in generator.blocks():
        out.write(block)
    out.flush()
    if args.stats:
        stats = dict(generator.counts)
        stats["seed"] = args.seed
        stats["distinct_triplets"] = len(generator.triplets)
        stats["distinct_triplets_spf_keyed"] = len(generator.spf_keyed)
        with open(args.stats, "w", encoding="utf-8") as f:
            json.dump(stats, f, indent=2, sort_keys=True)
            f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1:])
