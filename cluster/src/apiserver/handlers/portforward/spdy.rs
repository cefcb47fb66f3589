//! SPDY/3.1 framing, the part kubectl's port-forward uses (what client-go's spdystream
//! speaks): 8-byte frame headers, control frames (SYN_STREAM, SYN_REPLY, RST_STREAM,
//! SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE) and data frames. Header blocks are
//! name/value lists compressed with one zlib stream per direction for the whole connection,
//! primed with the SPDY/3 dictionary and sync-flushed after each block.

use std::io;

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The zlib dictionary of SPDY/3 header blocks (1423 bytes, from the protocol draft).
const DICTIONARY: &[u8] = include_bytes!("spdy3_dictionary.bin");

const VERSION: u16 = 3;
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;

/// FLAG_FIN on data frames and SYN_STREAM/SYN_REPLY/HEADERS: the sender's last frame.
pub const FLAG_FIN: u8 = 1;
/// RST_STREAM status: a protocol error.
pub const PROTOCOL_ERROR: u32 = 1;
/// Frames larger than this are refused (data frames kubectl sends are at most 32 KiB).
const MAX_FRAME: usize = 1 << 24;

pub type Headers = Vec<(String, String)>;

#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    Data {
        stream_id: u32,
        flags: u8,
        data: Bytes,
    },
    /// SETTINGS, WINDOW_UPDATE and control frames of unknown types: nothing this server acts
    /// on.
    Ignored,
}

/// The value of header `name` (names are lower case on the wire).
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("SPDY: {}", msg.into()))
}

fn u32_at(b: &[u8], at: usize) -> io::Result<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| invalid("frame too short"))
}

/// Reads frames from one direction of a connection, keeping its header decompressor.
pub struct FrameReader<R> {
    r: R,
    inflate: Decompress,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(r: R) -> Self {
        FrameReader {
            r,
            inflate: Decompress::new(true),
        }
    }

    /// The next frame; None at a clean end of the connection (between frames).
    pub async fn next(&mut self) -> io::Result<Option<Frame>> {
        let mut head = [0u8; 8];
        match self.r.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let flags = head[4];
        let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
        if len > MAX_FRAME {
            return Err(invalid(format!("a frame of {len} bytes")));
        }
        let mut body = vec![0u8; len];
        self.r.read_exact(&mut body).await?;
        if head[0] & 0x80 == 0 {
            let stream_id = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
            return Ok(Some(Frame::Data {
                stream_id,
                flags,
                data: Bytes::from(body),
            }));
        }
        let version = u16::from_be_bytes([head[0] & 0x7f, head[1]]);
        if version != VERSION {
            return Err(invalid(format!("version {version}, not 3")));
        }
        let kind = u16::from_be_bytes([head[2], head[3]]);
        let stream_id = || u32_at(&body, 0).map(|v| v & 0x7fff_ffff);
        Ok(Some(match kind {
            SYN_STREAM => {
                // stream id, associated stream id, priority (3 bits) + unused, slot; then
                // the header block.
                let block = body.get(10..).ok_or_else(|| invalid("short SYN_STREAM"))?;
                Frame::SynStream {
                    stream_id: stream_id()?,
                    flags,
                    headers: self.header_block(block)?,
                }
            }
            SYN_REPLY | HEADERS => {
                let block = body.get(4..).ok_or_else(|| invalid("short SYN_REPLY"))?;
                let (stream_id, headers) = (stream_id()?, self.header_block(block)?);
                if kind == SYN_REPLY {
                    Frame::SynReply {
                        stream_id,
                        flags,
                        headers,
                    }
                } else {
                    Frame::Headers {
                        stream_id,
                        flags,
                        headers,
                    }
                }
            }
            RST_STREAM => Frame::RstStream {
                stream_id: stream_id()?,
                status: u32_at(&body, 4)?,
            },
            PING => Frame::Ping {
                id: u32_at(&body, 0)?,
            },
            GOAWAY => Frame::GoAway {
                last_good_stream_id: stream_id()?,
                status: u32_at(&body, 4).unwrap_or(0),
            },
            SETTINGS | WINDOW_UPDATE => Frame::Ignored,
            _ => Frame::Ignored,
        }))
    }

    /// Decompresses one header block (the stream continues from the previous block).
    fn header_block(&mut self, compressed: &[u8]) -> io::Result<Headers> {
        let mut out = Vec::with_capacity(compressed.len() * 4 + 256);
        let mut pos = 0;
        loop {
            if out.capacity() - out.len() < 512 {
                out.reserve(out.capacity().max(1024));
            }
            let before = self.inflate.total_in();
            let result =
                self.inflate
                    .decompress_vec(&compressed[pos..], &mut out, FlushDecompress::Sync);
            pos += (self.inflate.total_in() - before) as usize;
            match result {
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(DICTIONARY)
                        .map_err(|e| invalid(format!("header dictionary: {e}")))?;
                    continue;
                }
                Err(e) => return Err(invalid(format!("header block: {e}"))),
            }
            if pos >= compressed.len() && out.len() < out.capacity() {
                break;
            }
        }
        parse_headers(&out)
    }
}

/// An uncompressed header block: a count, then length-prefixed names and values.
fn parse_headers(b: &[u8]) -> io::Result<Headers> {
    let count = u32_at(b, 0)? as usize;
    let mut at = 4;
    let take = |at: &mut usize| -> io::Result<String> {
        let n = u32_at(b, *at)? as usize;
        let s = b
            .get(*at + 4..*at + 4 + n)
            .ok_or_else(|| invalid("header block too short"))?;
        *at += 4 + n;
        Ok(String::from_utf8_lossy(s).into_owned())
    };
    let mut headers = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let name = take(&mut at)?;
        let value = take(&mut at)?;
        headers.push((name, value));
    }
    Ok(headers)
}

/// Encodes frames for one direction of a connection, keeping its header compressor.
pub struct FrameWriter {
    deflate: Compress,
}

impl Default for FrameWriter {
    fn default() -> Self {
        Self::new()
    }
}

fn control(kind: u16, flags: u8, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + body.len());
    f.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    f.extend_from_slice(&kind.to_be_bytes());
    f.push(flags);
    f.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    f.extend_from_slice(body);
    f
}

impl FrameWriter {
    pub fn new() -> Self {
        let mut deflate = Compress::new(Compression::default(), true);
        // A fresh stream takes a dictionary; it cannot fail.
        let _ = deflate.set_dictionary(DICTIONARY);
        FrameWriter { deflate }
    }

    fn header_block(&mut self, headers: &Headers) -> Vec<u8> {
        let mut plain = Vec::new();
        plain.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        for (n, v) in headers {
            for s in [n.to_ascii_lowercase().as_bytes(), v.as_bytes()] {
                plain.extend_from_slice(&(s.len() as u32).to_be_bytes());
                plain.extend_from_slice(s);
            }
        }
        let mut out = Vec::with_capacity(plain.len() + 64);
        let mut pos = 0;
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(256));
            }
            let before = self.deflate.total_in();
            // Compressing into a Vec with room left does not fail.
            let _ = self
                .deflate
                .compress_vec(&plain[pos..], &mut out, FlushCompress::Sync);
            pos += (self.deflate.total_in() - before) as usize;
            if pos >= plain.len() && out.len() < out.capacity() {
                break;
            }
        }
        out
    }

    pub fn encode(&mut self, frame: &Frame) -> Vec<u8> {
        match frame {
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                let mut f = Vec::with_capacity(8 + data.len());
                f.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
                f.push(*flags);
                f.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
                f.extend_from_slice(data);
                f
            }
            Frame::SynStream {
                stream_id,
                flags,
                headers,
            } => {
                let mut body = Vec::new();
                body.extend_from_slice(&stream_id.to_be_bytes());
                body.extend_from_slice(&0u32.to_be_bytes());
                body.extend_from_slice(&[0, 0]);
                body.extend(self.header_block(headers));
                control(SYN_STREAM, *flags, &body)
            }
            Frame::SynReply {
                stream_id,
                flags,
                headers,
            }
            | Frame::Headers {
                stream_id,
                flags,
                headers,
            } => {
                let kind = if matches!(frame, Frame::SynReply { .. }) {
                    SYN_REPLY
                } else {
                    HEADERS
                };
                let mut body = stream_id.to_be_bytes().to_vec();
                body.extend(self.header_block(headers));
                control(kind, *flags, &body)
            }
            Frame::RstStream { stream_id, status } => {
                let mut body = stream_id.to_be_bytes().to_vec();
                body.extend_from_slice(&status.to_be_bytes());
                control(RST_STREAM, 0, &body)
            }
            Frame::Ping { id } => control(PING, 0, &id.to_be_bytes()),
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                let mut body = last_good_stream_id.to_be_bytes().to_vec();
                body.extend_from_slice(&status.to_be_bytes());
                control(GOAWAY, 0, &body)
            }
            Frame::Ignored => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Headers {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_dictionary_is_the_spdy3_one() {
        assert_eq!(DICTIONARY.len(), 1423);
        assert!(DICTIONARY.starts_with(b"\0\0\0\x07options"));
        assert!(DICTIONARY.ends_with(b",*,enq=0."));
    }

    #[tokio::test]
    async fn frames_round_trip_with_headers_compressed_across_frames() {
        let mut w = FrameWriter::new();
        let frames = vec![
            Frame::SynStream {
                stream_id: 1,
                flags: 0,
                headers: h(&[
                    ("streamtype", "error"),
                    ("port", "8080"),
                    ("requestid", "0"),
                ]),
            },
            Frame::SynStream {
                stream_id: 3,
                flags: 0,
                headers: h(&[("streamtype", "data"), ("port", "8080"), ("requestid", "0")]),
            },
            Frame::SynReply {
                stream_id: 3,
                flags: 0,
                headers: Vec::new(),
            },
            Frame::Data {
                stream_id: 3,
                flags: FLAG_FIN,
                data: Bytes::from_static(b"GET / HTTP/1.0\r\n\r\n"),
            },
            Frame::Ping { id: 7 },
            Frame::RstStream {
                stream_id: 3,
                status: 5,
            },
            Frame::Headers {
                stream_id: 1,
                flags: FLAG_FIN,
                headers: h(&[("x", "y")]),
            },
            Frame::GoAway {
                last_good_stream_id: 3,
                status: 0,
            },
        ];
        let wire: Vec<u8> = frames.iter().flat_map(|f| w.encode(f)).collect();
        // zlib header with FDICT and the dictionary's Adler-32 (what Go's zlib checks).
        let first_block = &wire[8 + 10..];
        assert_eq!(first_block[1] & 0x20, 0x20, "FDICT set");
        assert_eq!(&first_block[2..6], &0xe3c6_a7c2u32.to_be_bytes());
        let mut r = FrameReader::new(&wire[..]);
        let mut got = Vec::new();
        while let Some(f) = r.next().await.unwrap() {
            got.push(f);
        }
        assert_eq!(got, frames);
        assert_eq!(header(&h(&[("port", "80")]), "port"), Some("80"));
    }

    #[tokio::test]
    async fn a_bad_version_or_a_truncated_frame_is_an_error() {
        let mut bad = control(PING, 0, &1u32.to_be_bytes());
        bad[1] = 2;
        assert!(FrameReader::new(&bad[..]).next().await.is_err());
        let ping = control(PING, 0, &1u32.to_be_bytes());
        assert!(FrameReader::new(&ping[..10]).next().await.is_err());
        assert_eq!(FrameReader::new(&[][..]).next().await.unwrap(), None);
    }
}
