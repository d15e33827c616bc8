//! null_policy: the do-nothing policy service, the floor the benchmarks compare against.
//!
//! It speaks the same pipe protocol as greyspf and answers every request block with
//! `action=DUNNO`, so its cost is what the pipe, the process start and the driver cost by
//! themselves. It buffers like a sensible server: a `BufReader` over stdin (one read(2) per
//! request as long as a block fits the buffer) and a `BufWriter` over stdout flushed once
//! per reply (one write(2) per reply). It keeps no request in memory: it only needs to see
//! where a block ends, which is a newline right after a newline.

use std::io::{self, BufRead, BufWriter, Write};

const REPLY: &[u8] = b"action=DUNNO\n\n";

fn main() {
    // Nothing may ever reach stderr (under spawn(8) it is the smtpd socket), so errors end
    // the process quietly: a broken pipe means smtpd went away, which is not our problem.
    let code = match serve() {
        Ok(()) => 0,
        Err(_) => 1,
    };
    std::process::exit(code);
}

fn serve() -> io::Result<()> {
    let stdin = io::stdin();
    let mut input = stdin.lock();
    let stdout = io::stdout();
    let mut output = BufWriter::new(stdout.lock());
    // True right after a newline (or at the start of a block): a further newline ends it.
    let mut at_line_start = true;
    // True once the block has a byte: empty lines between blocks are not requests.
    let mut in_block = false;
    loop {
        let buffer = input.fill_buf()?;
        if buffer.is_empty() {
            // EOF, also in the middle of a block: that request was abandoned, just leave.
            return Ok(());
        }
        let length = buffer.len();
        for &byte in buffer {
            if byte == b'\n' {
                if at_line_start && in_block {
                    output.write_all(REPLY)?;
                    output.flush()?;
                    in_block = false;
                }
                at_line_start = true;
            } else {
                at_line_start = false;
                in_block = true;
            }
        }
        input.consume(length);
    }
}
