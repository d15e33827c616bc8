//! A minimal SMTP client for end-to-end tests, std only.
//!
//! It speaks just enough SMTP to drive Postfix's smtpd the way a sending MTA would
//! (EHLO, XCLIENT, MAIL, RCPT, DATA, RSET, QUIT) and hands every reply back whole,
//! so tests can assert the exact code and text a client would see.

use std::fmt;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// How long one reply may take. smtpd waits up to a second before retrying a failed
/// policy server, and greyspf may have to start its store keeper first, so this is
/// generous; it only bounds a hung test.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// One SMTP reply: the three-digit code and every line as received (code included,
/// CRLF removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    /// The text of the last line without the code and separator, e.g.
    /// `2.0.0 Ok: queued as 4Xyz` for `250 2.0.0 Ok: queued as 4Xyz`.
    pub fn last_text(&self) -> &str {
        self.lines
            .last()
            .map(|l| l.get(4..).unwrap_or(""))
            .unwrap_or("")
    }
}

impl fmt::Display for Reply {
    /// All lines joined by LF: a one-line reply prints exactly as the server sent it,
    /// which is what tests compare against.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.lines.join("\n"))
    }
}

/// One SMTP connection.
pub struct Session {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    /// The greeting read on connect.
    pub banner: Reply,
}

impl Session {
    /// Connects and reads the greeting.
    pub fn connect(addr: SocketAddr) -> io::Result<Session> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
        stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
        stream.set_write_timeout(Some(REPLY_TIMEOUT))?;
        let writer = stream.try_clone()?;
        let mut reader = BufReader::new(stream);
        let banner = read_reply(&mut reader)?;
        Ok(Session {
            reader,
            writer,
            banner,
        })
    }

    /// Sends one command line (CRLF appended) and reads its reply.
    pub fn command(&mut self, line: &str) -> io::Result<Reply> {
        self.writer.write_all(line.as_bytes())?;
        self.writer.write_all(b"\r\n")?;
        self.writer.flush()?;
        read_reply(&mut self.reader)
    }

    pub fn ehlo(&mut self, name: &str) -> io::Result<Reply> {
        self.command(&format!("EHLO {name}"))
    }

    /// `XCLIENT attrs`, e.g. `NAME=mx.example.org ADDR=IPV6:2001:db8::1`. On success
    /// smtpd answers with a new 220 greeting, and the client must say EHLO again.
    pub fn xclient(&mut self, attrs: &str) -> io::Result<Reply> {
        self.command(&format!("XCLIENT {attrs}"))
    }

    pub fn mail_from(&mut self, sender: &str) -> io::Result<Reply> {
        self.command(&format!("MAIL FROM:<{sender}>"))
    }

    pub fn rcpt_to(&mut self, recipient: &str) -> io::Result<Reply> {
        self.command(&format!("RCPT TO:<{recipient}>"))
    }

    pub fn rset(&mut self) -> io::Result<Reply> {
        self.command("RSET")
    }

    /// Sends DATA; when the server invites the content (354), sends `message`
    /// dot-stuffed with CRLF line ends and returns the final reply, otherwise returns
    /// the reply to DATA itself (e.g. 554 when no recipient was accepted).
    pub fn data(&mut self, message: &str) -> io::Result<Reply> {
        let reply = self.command("DATA")?;
        if reply.code != 354 {
            return Ok(reply);
        }
        let mut content = String::with_capacity(message.len() + 16);
        for line in message.lines() {
            if line.starts_with('.') {
                content.push('.');
            }
            content.push_str(line);
            content.push_str("\r\n");
        }
        content.push_str(".\r\n");
        self.writer.write_all(content.as_bytes())?;
        self.writer.flush()?;
        read_reply(&mut self.reader)
    }

    /// Sends QUIT and reads the 221 reply; the server then closes the connection.
    pub fn quit(mut self) -> io::Result<Reply> {
        self.command("QUIT")
    }
}

/// Reads one possibly multi-line reply (`250-...` continuation lines, then `250 ...`).
fn read_reply(reader: &mut BufReader<TcpStream>) -> io::Result<Reply> {
    let mut lines = Vec::new();
    loop {
        let mut raw = String::new();
        if reader.read_line(&mut raw)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("connection closed by the server after {lines:?}"),
            ));
        }
        let line = raw.trim_end_matches(['\r', '\n']).to_string();
        let bytes = line.as_bytes();
        let code = line
            .get(..3)
            .and_then(|c| c.parse::<u16>().ok())
            .filter(|_| bytes.len() == 3 || bytes[3] == b' ' || bytes[3] == b'-');
        let Some(code) = code else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("malformed SMTP reply line {line:?}"),
            ));
        };
        let last = bytes.len() == 3 || bytes[3] == b' ';
        lines.push(line);
        if last {
            return Ok(Reply { code, lines });
        }
    }
}

/// Builds a small RFC 5322 message with CRLF line ends. `message_id` (without angle
/// brackets) lets a test find its own delivered copies among all others.
pub fn message(from: &str, to: &[&str], message_id: &str, subject: &str) -> String {
    format!(
        "From: <{from}>\r\nTo: {}\r\nSubject: {subject}\r\nMessage-ID: <{message_id}>\r\n\
         Date: Thu, 1 Jan 2026 00:00:00 +0000\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\r\n\
         Test message {message_id}.\r\n.A line that needs dot-stuffing.\r\n",
        to.iter()
            .map(|r| format!("<{r}>"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}
