//! null_tcp_policy: the do-nothing policy daemon, the floor the daemon benchmarks compare
//! against.
//!
//! `null_tcp_policy ADDRESS:PORT` listens there and answers every request block of every
//! connection with `action=DUNNO`, a thread per connection, as greyspf daemon serves them:
//! what it costs is what TCP, the threads and the driver cost by themselves. It buffers
//! like null_policy (one read per request while a block fits, one write per reply).

use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::net::{TcpListener, TcpStream};

const REPLY: &[u8] = b"action=DUNNO\n\n";

fn main() {
    let Some(address) = std::env::args().nth(1) else {
        eprintln!("usage: null_tcp_policy ADDRESS:PORT");
        std::process::exit(64);
    };
    let listener = match TcpListener::bind(&address) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("null_tcp_policy: {address}: {e}");
            std::process::exit(70);
        }
    };
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || {
            let _ = serve(stream);
        });
    }
}

fn serve(stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut input = BufReader::new(stream.try_clone()?);
    let mut output = BufWriter::new(stream);
    let mut at_line_start = true;
    let mut in_block = false;
    loop {
        let buffer = input.fill_buf()?;
        if buffer.is_empty() {
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
