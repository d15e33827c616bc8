//! The Postfix policy protocol: reading request blocks with hard limits, writing replies.
//! It knows the wire format only; what to answer is decided elsewhere.

use std::io::{self, BufRead, Write};

/// Longest attribute line accepted; Postfix values are short, and an unbounded line is the
/// easiest way to make a policy service eat memory.
pub const MAX_LINE: usize = 4096;
/// Most attributes in one block (Postfix 3.7 sends 28).
pub const MAX_ATTRS: usize = 256;
/// Most bytes in one block.
pub const MAX_BLOCK: usize = 64 * 1024;

/// The attributes a decision uses. Unknown attributes are ignored; missing ones are empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    pub request: String,
    pub protocol_state: String,
    pub client_address: String,
    pub client_name: String,
    /// The client's PTR name, verified or not ("unknown" for none; Postfix 2.9 and later).
    pub reverse_client_name: String,
    pub helo_name: String,
    pub sender: String,
    pub recipient: String,
    pub queue_id: String,
    pub instance: String,
    pub sasl_username: String,
    /// The address the client connected to (scoring: a HELO that claims it).
    pub server_address: String,
    /// Named attributes whose value was not UTF-8 and was decoded lossily (U+FFFD for each
    /// bad sequence). The request is still decided: refusing to decide would let odd bytes
    /// in any attribute switch SPF and greylisting off for the message.
    pub lossy: Vec<&'static str>,
}

/// One block from the stream: a request, or the reason it cannot be used.
// A block is moved once per request; boxing the common variant would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Block {
    Request(Request),
    Malformed(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("reading requests: {0}")]
    Read(io::Error),
    #[error("writing reply: {0}")]
    Write(io::Error),
}

/// Reads request blocks, reusing its buffers from block to block.
pub struct Reader<R> {
    inner: R,
    line: Vec<u8>,
}

impl<R: BufRead> Reader<R> {
    pub fn new(inner: R) -> Self {
        Reader {
            inner,
            line: Vec::with_capacity(256),
        }
    }

    /// Reads one line into `self.line` without its LF, keeping at most `MAX_LINE` bytes.
    /// Returns None at EOF before any byte, Some(too_long) otherwise.
    fn read_line(&mut self) -> Result<Option<(bool, bool)>, ProtocolError> {
        self.line.clear();
        let mut too_long = false;
        let mut any = false;
        loop {
            let buf = match self.inner.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ProtocolError::Read(e)),
            };
            if buf.is_empty() {
                return Ok(if any { Some((too_long, false)) } else { None });
            }
            any = true;
            let (chunk, done) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (&buf[..i], Some(i + 1)),
                None => (buf, None),
            };
            let room = MAX_LINE.saturating_sub(self.line.len());
            if chunk.len() > room {
                too_long = true;
                self.line.extend_from_slice(&chunk[..room]);
            } else {
                self.line.extend_from_slice(chunk);
            }
            let used = done.unwrap_or(buf.len());
            self.inner.consume(used);
            if done.is_some() {
                return Ok(Some((too_long, true)));
            }
        }
    }

    /// Reads the next block. `Ok(None)` means EOF with nothing pending. A block cut off by
    /// EOF is returned as malformed so that the caller still answers it.
    pub fn next_block(&mut self) -> Result<Option<Block>, ProtocolError> {
        let mut req = Request::default();
        let mut problem: Option<String> = None;
        let mut attrs = 0usize;
        let mut bytes = 0usize;
        let mut started = false;
        loop {
            let Some((too_long, terminated)) = self.read_line()? else {
                return Ok(if started {
                    Some(Block::Malformed("request cut off by end of input".into()))
                } else {
                    None
                });
            };
            // A lone CR is the end of a CRLF-terminated block: ending the block there keeps
            // a CRLF client from waiting forever for an answer.
            let cr_line = self.line == b"\r";
            if (self.line.is_empty() || cr_line) && !too_long {
                if !started {
                    if cr_line {
                        return Ok(Some(Block::Malformed(
                            "carriage return in request (lines must end with LF only)".into(),
                        )));
                    }
                    // Blank lines between blocks are harmless; Postfix never sends them.
                    if !terminated {
                        return Ok(None);
                    }
                    continue;
                }
                if cr_line && problem.is_none() {
                    problem =
                        Some("carriage return in request (lines must end with LF only)".into());
                }
                return Ok(Some(match problem {
                    Some(p) => Block::Malformed(p),
                    None => check(req),
                }));
            }
            started = true;
            if !terminated {
                return Ok(Some(Block::Malformed(
                    "request cut off by end of input".into(),
                )));
            }
            if problem.is_some() {
                continue;
            }
            attrs += 1;
            bytes += self.line.len() + 1;
            problem = if too_long {
                Some(format!("attribute line longer than {MAX_LINE} bytes"))
            } else if attrs > MAX_ATTRS {
                Some(format!("more than {MAX_ATTRS} attributes"))
            } else if bytes > MAX_BLOCK {
                Some(format!("request larger than {MAX_BLOCK} bytes"))
            } else {
                parse_attr(&self.line, &mut req).err()
            };
        }
    }
}

fn parse_attr(line: &[u8], req: &mut Request) -> Result<(), String> {
    let Some(eq) = line.iter().position(|&b| b == b'=') else {
        return Err(format!(
            "attribute line without '=': {:?}",
            String::from_utf8_lossy(&line[..line.len().min(64)])
        ));
    };
    if line.contains(&0) {
        return Err("NUL byte in request".into());
    }
    if line.last() == Some(&b'\r') {
        return Err("carriage return in request (lines must end with LF only)".into());
    }
    let (name, value) = (&line[..eq], &line[eq + 1..]);
    let (field, name) = match name {
        b"request" => (&mut req.request, "request"),
        b"protocol_state" => (&mut req.protocol_state, "protocol_state"),
        b"client_address" => (&mut req.client_address, "client_address"),
        b"client_name" => (&mut req.client_name, "client_name"),
        b"reverse_client_name" => (&mut req.reverse_client_name, "reverse_client_name"),
        b"helo_name" => (&mut req.helo_name, "helo_name"),
        b"sender" => (&mut req.sender, "sender"),
        b"recipient" => (&mut req.recipient, "recipient"),
        b"queue_id" => (&mut req.queue_id, "queue_id"),
        b"instance" => (&mut req.instance, "instance"),
        b"sasl_username" => (&mut req.sasl_username, "sasl_username"),
        b"server_address" => (&mut req.server_address, "server_address"),
        _ => return Ok(()),
    };
    field.clear();
    // A later copy of an attribute replaces the earlier one, and with it its flag.
    req.lossy.retain(|n| *n != name);
    match std::str::from_utf8(value) {
        Ok(v) => field.push_str(v),
        Err(_) => {
            // The value keeps its shape (a bad byte becomes one U+FFFD), so a greylisting
            // key built from it is the same on every retry, and an SPF identity holding it
            // is simply not a valid domain.
            field.push_str(&String::from_utf8_lossy(value));
            req.lossy.push(name);
        }
    }
    Ok(())
}

fn check(req: Request) -> Block {
    match req.request.as_str() {
        "smtpd_access_policy" => Block::Request(req),
        "" => Block::Malformed("request attribute missing".into()),
        other => Block::Malformed(format!(
            "unknown request type {:?}",
            // Cut by characters: a byte index could fall inside one and panic.
            other.chars().take(64).collect::<String>()
        )),
    }
}

/// Writes `action=<action>\n\n` and flushes. An action that is empty or holds a line break
/// would accept the mail or break the conversation, so it is replaced by DUNNO.
pub fn write_reply<W: Write>(w: &mut W, action: &str) -> Result<(), ProtocolError> {
    let action = if action.trim().is_empty() || action.contains(['\n', '\r', '\0']) {
        "DUNNO"
    } else {
        action
    };
    let mut buf = Vec::with_capacity(action.len() + 10);
    buf.extend_from_slice(b"action=");
    buf.extend_from_slice(action.as_bytes());
    buf.extend_from_slice(b"\n\n");
    w.write_all(&buf).map_err(ProtocolError::Write)?;
    w.flush().map_err(ProtocolError::Write)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocks(input: &[u8]) -> Vec<Block> {
        let mut r = Reader::new(input);
        let mut out = Vec::new();
        while let Some(b) = r.next_block().unwrap() {
            out.push(b);
        }
        out
    }

    fn malformed(input: &[u8]) -> String {
        match blocks(input).as_slice() {
            [Block::Malformed(m)] => m.clone(),
            other => panic!("expected one malformed block, got {other:?}"),
        }
    }

    #[test]
    fn parses_a_request_and_ignores_unknown_attributes() {
        let b = blocks(b"request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=192.0.2.1\nsender=\nnew_attr=x=y\nrecipient=a@b\n\n");
        let [Block::Request(r)] = b.as_slice() else {
            panic!("{b:?}")
        };
        assert_eq!(r.protocol_state, "RCPT");
        assert_eq!(r.client_address, "192.0.2.1");
        assert_eq!(r.sender, "");
        assert_eq!(r.recipient, "a@b");
    }

    #[test]
    fn bad_blocks_are_reported_and_the_stream_goes_on() {
        let b =
            blocks(b"request=smtpd_access_policy\nno equals\n\nrequest=smtpd_access_policy\n\n");
        assert_eq!(b.len(), 2);
        assert!(
            matches!(&b[0], Block::Malformed(m) if m.starts_with("attribute line without '='"))
        );
        assert!(matches!(&b[1], Block::Request(_)));
    }

    #[test]
    fn limits_and_garbage() {
        let mut long = b"request=smtpd_access_policy\nsender=".to_vec();
        long.extend(std::iter::repeat_n(b'a', 1 << 20));
        long.extend_from_slice(b"\n\n");
        assert_eq!(malformed(&long), "attribute line longer than 4096 bytes");

        let mut many = b"request=smtpd_access_policy\n".to_vec();
        for i in 0..10_000 {
            many.extend_from_slice(format!("x{i}=y\n").as_bytes());
        }
        many.push(b'\n');
        assert_eq!(malformed(&many), "more than 256 attributes");

        assert_eq!(
            malformed(b"request=smtpd_access_policy\nsender=a\0b\n\n"),
            "NUL byte in request"
        );
        assert_eq!(
            malformed(b"request=other\n\n"),
            "unknown request type \"other\""
        );
        assert_eq!(malformed(b"sender=x\n\n"), "request attribute missing");
        assert_eq!(
            malformed(b"request=smtpd_access_policy\nsender=x"),
            "request cut off by end of input"
        );
        assert_eq!(
            malformed(b"request=smtpd_access_policy\n"),
            "request cut off by end of input"
        );
        // Unused attributes may hold any bytes but NUL.
        assert!(matches!(
            blocks(b"request=smtpd_access_policy\nccert_subject=\xff\n\n").as_slice(),
            [Block::Request(_)]
        ));
    }

    #[test]
    fn bad_utf8_in_named_attributes_is_decoded_lossily_and_flagged() {
        let b = blocks(
            b"request=smtpd_access_policy\nclient_name=E\xffSMTP\nsender=a\xc3\x28@b\nhelo_name=x\nhelo_name=mx.example\n\n",
        );
        let [Block::Request(r)] = b.as_slice() else {
            panic!("{b:?}")
        };
        assert_eq!(r.client_name, "E\u{fffd}SMTP");
        assert_eq!(r.sender, "a\u{fffd}(@b");
        assert_eq!(r.helo_name, "mx.example");
        assert_eq!(r.lossy, vec!["client_name", "sender"]);
        // A later valid copy clears the flag.
        let b = blocks(b"request=smtpd_access_policy\nsender=\xff\nsender=a@b\n\n");
        let [Block::Request(r)] = b.as_slice() else {
            panic!("{b:?}")
        };
        assert!(r.lossy.is_empty());
        // The request type must be exact: a lossy one is unknown.
        assert_eq!(
            malformed(b"request=smtpd_access_policy\xff\n\n"),
            "unknown request type \"smtpd_access_policy\u{fffd}\""
        );
    }

    #[test]
    fn crlf_blocks_end_at_the_lone_cr() {
        let b = blocks(
            b"request=smtpd_access_policy\r\nsender=a\r\n\r\nrequest=smtpd_access_policy\n\n",
        );
        assert_eq!(b.len(), 2);
        assert!(matches!(&b[0], Block::Malformed(m) if m.starts_with("carriage return")));
        assert!(matches!(&b[1], Block::Request(_)));
    }

    #[test]
    fn empty_input_and_blank_lines() {
        assert!(blocks(b"").is_empty());
        assert!(blocks(b"\n\n\n").is_empty());
    }

    #[test]
    fn replies() {
        let mut out = Vec::new();
        write_reply(&mut out, "DEFER_IF_PERMIT Greylisted").unwrap();
        write_reply(&mut out, "").unwrap();
        write_reply(&mut out, "PREPEND a\nb").unwrap();
        assert_eq!(
            out,
            b"action=DEFER_IF_PERMIT Greylisted\n\naction=DUNNO\n\naction=DUNNO\n\n"
        );
    }
}
