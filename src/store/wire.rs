//! The keeper's wire format: length-prefixed frames whose fields are separated by NUL
//! (request values never contain NUL: the parser rejects it).

use std::io::{self, Read, Write};

/// A frame larger than this is a protocol error, not an allocation.
pub const MAX_FRAME: usize = 16 << 20;

pub fn write_frame<W: Write>(w: &mut W, fields: &[&str]) -> io::Result<()> {
    let len: usize = fields.iter().map(|f| f.len()).sum::<usize>() + fields.len().saturating_sub(1);
    let mut buf = Vec::with_capacity(4 + len);
    buf.extend_from_slice(&(len as u32).to_be_bytes());
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            buf.push(0);
        }
        buf.extend_from_slice(f.as_bytes());
    }
    w.write_all(&buf)?;
    w.flush()
}

/// Reads one frame; `Ok(None)` on a clean EOF before the frame.
pub fn read_frame<R: Read>(r: &mut R) -> io::Result<Option<Vec<String>>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "frame too large",
        ));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf)?;
    let text = String::from_utf8(buf)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "frame is not UTF-8"))?;
    Ok(Some(text.split('\0').map(str::to_string).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut buf = Vec::new();
        write_frame(&mut buf, &["GREY", "", "a@b"]).unwrap();
        write_frame(&mut buf, &["X"]).unwrap();
        let mut r = buf.as_slice();
        assert_eq!(
            read_frame(&mut r).unwrap().unwrap(),
            vec!["GREY", "", "a@b"]
        );
        assert_eq!(read_frame(&mut r).unwrap().unwrap(), vec!["X"]);
        assert!(read_frame(&mut r).unwrap().is_none());
    }
}
