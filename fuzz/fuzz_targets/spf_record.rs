// The SPF fuzz target: one input is a selector byte and a TXT record as anyone on the
// internet may publish it; the checks (parsers, check_host() and its macro expander over an
// in-memory zone) live in the harness library so that this file never needs to change.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| greyspf_fuzz::check_spf_record(data));
