// The fuzz target: one input is a byte stream as Postfix's smtpd would write it to the
// policy service; the checks (parser alone, then the whole serve() pipeline) live in the
// harness library so that this file never needs to change.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| greyspf_fuzz::check_pipeline(data));
