#!/usr/bin/env python3
# Rebuilds the seed corpus of the spf_record target from the RFC 7208 test suite: every TXT
# and SPF record of its zone data (character-strings joined, as a resolver hands them over),
# each behind a selector byte that varies the client address and sender. Needs PyYAML.
# Run it from anywhere after the suite changes; it replaces corpus/spf_record/ entirely.
import hashlib
import pathlib
import shutil

import yaml

here = pathlib.Path(__file__).resolve().parent
suite = here.parent / "tests" / "fixtures" / "rfc7208" / "rfc7208-tests.yml"
out = here / "corpus" / "spf_record"
shutil.rmtree(out, ignore_errors=True)
out.mkdir(parents=True)

records = []
with open(suite, "rb") as f:
    for scenario in yaml.safe_load_all(f):
        for entries in (scenario.get("zonedata") or {}).values():
            for entry in entries:
                if not isinstance(entry, dict):
                    continue
                for kind, value in entry.items():
                    if kind not in ("TXT", "SPF") or value == "NONE":
                        continue
                    parts = value if isinstance(value, list) else [value]
                    text = "".join(parts).encode("utf-8")
                    if text not in records:
                        records.append(text)

for i, text in enumerate(records):
    data = bytes([i % 12]) + text
    name = hashlib.sha1(data).hexdigest()[:16]
    (out / name).write_bytes(data)
print(f"{len(records)} seed files in corpus/spf_record")
