//! SNTP (RFC 4330; NTPv4 client mode, RFC 5905 packet): the request, the checks a reply must
//! pass, and the clock offset and round-trip delay from the four timestamps. One query is one
//! UDP exchange; choosing servers, polling and correcting the clock is the time-sync
//! controller's job (controllers/timesync.rs).

use std::net::SocketAddr;
use std::time::Duration;

/// The NTP port, used when a server is given without one.
pub const NTP_PORT: u16 = 123;
/// Seconds from the NTP epoch (1900-01-01) to the Unix epoch (1970-01-01).
const NTP_TO_UNIX: i128 = 2_208_988_800;
const NANOS: i128 = 1_000_000_000;
const PACKET_LEN: usize = 48;
const MODE_CLIENT: u8 = 3;
const MODE_SERVER: u8 = 4;
const VERSION: u8 = 4;

/// A 64-bit NTP timestamp: seconds since 1900 (modulo 2^32) and a 32-bit binary fraction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NtpTimestamp(pub u64);

impl NtpTimestamp {
    /// From nanoseconds since the Unix epoch.
    pub fn from_unix_nanos(nanos: i128) -> Self {
        let secs = nanos.div_euclid(NANOS);
        let sub = nanos.rem_euclid(NANOS);
        let ntp_secs = (secs + NTP_TO_UNIX).rem_euclid(1 << 32) as u64;
        // Round to the nearest 2^-32 s so encode/decode round trips stay within a nanosecond.
        let frac = ((sub << 32) + NANOS / 2) / NANOS;
        NtpTimestamp((ntp_secs << 32) + frac as u64)
    }

    /// To nanoseconds since the Unix epoch. The era is chosen as RFC 4330 section 3 says: a
    /// set top bit of the seconds means 1968-2036 (era 0), a clear one 2036-2104 (era 1).
    pub fn to_unix_nanos(self) -> i128 {
        let secs = (self.0 >> 32) as i128;
        let frac = (self.0 & 0xffff_ffff) as i128;
        let era_secs = if secs & 0x8000_0000 != 0 {
            secs
        } else {
            secs + (1 << 32)
        };
        (era_secs - NTP_TO_UNIX) * NANOS + ((frac * NANOS + (1 << 31)) >> 32)
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }
}

/// The fields of an NTP packet SNTP uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub leap: u8,
    pub version: u8,
    pub mode: u8,
    pub stratum: u8,
    pub reference_id: [u8; 4],
    pub originate: NtpTimestamp,
    pub receive: NtpTimestamp,
    pub transmit: NtpTimestamp,
}

/// A client request carrying `transmit` (the server copies it into its reply's originate).
pub fn encode_request(transmit: NtpTimestamp) -> [u8; PACKET_LEN] {
    let mut p = [0u8; PACKET_LEN];
    p[0] = (VERSION << 3) | MODE_CLIENT;
    p[40..48].copy_from_slice(&transmit.0.to_be_bytes());
    p
}

pub fn decode(bytes: &[u8]) -> Option<Packet> {
    if bytes.len() < PACKET_LEN {
        return None;
    }
    let ts = |at: usize| {
        NtpTimestamp(u64::from_be_bytes(
            bytes[at..at + 8].try_into().expect("8 bytes"),
        ))
    };
    Some(Packet {
        leap: bytes[0] >> 6,
        version: (bytes[0] >> 3) & 7,
        mode: bytes[0] & 7,
        stratum: bytes[1],
        reference_id: bytes[12..16].try_into().expect("4 bytes"),
        originate: ts(24),
        receive: ts(32),
        transmit: ts(40),
    })
}

/// Why a reply is not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("not a server reply (mode {0})")]
    NotServer(u8),
    #[error("unsupported NTP version {0}")]
    Version(u8),
    #[error("reply does not answer our request (origin timestamp differs)")]
    Unsolicited,
    #[error("kiss-o'-death {0:?}: the server refuses to serve us now")]
    Kiss(String),
    #[error("the server's clock is not synchronised (leap indicator 3)")]
    Unsynchronised,
    #[error("invalid stratum {0}")]
    Stratum(u8),
    #[error("the reply has no transmit timestamp")]
    NoTransmit,
}

/// Checks a reply to the request we sent with `sent` (RFC 4330 section 5).
pub fn check_reply(reply: &Packet, sent: NtpTimestamp) -> Result<(), ReplyError> {
    // First: anything not answering our request is ignored, whatever else it says.
    if reply.originate != sent {
        return Err(ReplyError::Unsolicited);
    }
    if reply.mode != MODE_SERVER {
        return Err(ReplyError::NotServer(reply.mode));
    }
    if !(1..=4).contains(&reply.version) {
        return Err(ReplyError::Version(reply.version));
    }
    if reply.stratum == 0 {
        let code: String = reply
            .reference_id
            .iter()
            .map(|&b| if b.is_ascii_graphic() { b as char } else { '?' })
            .collect();
        return Err(ReplyError::Kiss(code));
    }
    if reply.leap == 3 {
        return Err(ReplyError::Unsynchronised);
    }
    if reply.stratum > 15 {
        return Err(ReplyError::Stratum(reply.stratum));
    }
    if reply.transmit.is_zero() {
        return Err(ReplyError::NoTransmit);
    }
    Ok(())
}

/// What one exchange measured, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// How far our clock is behind the server's (add it to our clock).
    pub offset_ns: i128,
    /// Round-trip time on the network (the server's processing time excluded).
    pub delay_ns: i128,
    pub stratum: u8,
}

/// Offset and delay from T1 (request sent, our clock), T2 (received, server's), T3 (reply
/// sent, server's), T4 (reply received, ours), all in nanoseconds since the Unix epoch:
/// offset = ((T2 - T1) + (T3 - T4)) / 2, delay = (T4 - T1) - (T3 - T2).
pub fn offset_and_delay(t1: i128, t2: i128, t3: i128, t4: i128) -> (i128, i128) {
    let offset = ((t2 - t1) + (t3 - t4)) / 2;
    let delay = (t4 - t1) - (t3 - t2);
    (offset, delay.max(0))
}

/// Asks `server` once. `now` reads the clock being disciplined (nanoseconds since the Unix
/// epoch), so the dev system's simulated clock is measured, not the host's.
pub async fn query(
    server: SocketAddr,
    now: &(dyn Fn() -> i128 + Send + Sync),
    timeout: Duration,
) -> Result<Sample, String> {
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().expect("addr")
    } else {
        "[::]:0".parse().expect("addr")
    };
    let sock = tokio::net::UdpSocket::bind(bind)
        .await
        .map_err(|e| format!("socket: {e}"))?;
    sock.connect(server)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let t1 = now();
    let sent = NtpTimestamp::from_unix_nanos(t1);
    sock.send(&encode_request(sent))
        .await
        .map_err(|e| format!("send: {e}"))?;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = [0u8; 512];
    let mut last_problem = None;
    loop {
        let n = match tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => return Err(format!("receive: {e}")),
            Err(_) => {
                return Err(match last_problem {
                    Some(p) => format!("no usable reply within {timeout:?} (last: {p})"),
                    None => format!("no reply within {timeout:?}"),
                });
            }
        };
        let t4 = now();
        let Some(reply) = decode(&buf[..n]) else {
            last_problem = Some(format!("short packet of {n} bytes"));
            continue;
        };
        match check_reply(&reply, sent) {
            Ok(()) => {}
            // A stray or late datagram: keep waiting for ours.
            Err(ReplyError::Unsolicited) => {
                last_problem = Some(ReplyError::Unsolicited.to_string());
                continue;
            }
            Err(e) => return Err(e.to_string()),
        }
        let (offset_ns, delay_ns) = offset_and_delay(
            t1,
            reply.receive.to_unix_nanos(),
            reply.transmit.to_unix_nanos(),
            t4,
        );
        return Ok(Sample {
            offset_ns,
            delay_ns,
            stratum: reply.stratum,
        });
    }
}

/// Nanoseconds as signed seconds with millisecond precision (`+1800.004s`).
pub fn format_offset(nanos: i128) -> String {
    let sign = if nanos < 0 { '-' } else { '+' };
    let abs = nanos.unsigned_abs();
    format!(
        "{sign}{}.{:03}s",
        abs / 1_000_000_000,
        (abs % 1_000_000_000) / 1_000_000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-26T00:00:00Z.
    const SOME_DAY: i128 = 1_795_651_200 * NANOS;

    #[test]
    fn timestamps_round_trip_and_handle_the_2036_era() {
        for nanos in [
            0,
            SOME_DAY + 123_456_789,
            SOME_DAY - 1,
            2_085_978_496 * NANOS + 5,
        ] {
            let back = NtpTimestamp::from_unix_nanos(nanos).to_unix_nanos();
            assert!((back - nanos).abs() <= 1, "{nanos} -> {back}");
        }
        // The Unix epoch is NTP second 2208988800 (top bit set: era 0).
        assert_eq!(NtpTimestamp::from_unix_nanos(0).0 >> 32, 2_208_988_800);
        // 2036-02-07T06:28:16Z wraps to NTP second 0 and still decodes after 2036.
        let wrap = (1i128 << 32) - NTP_TO_UNIX;
        assert_eq!(NtpTimestamp::from_unix_nanos(wrap * NANOS).0, 0);
        assert_eq!(
            NtpTimestamp::from_unix_nanos(wrap * NANOS + NANOS / 2).to_unix_nanos(),
            wrap * NANOS + NANOS / 2
        );
        // Half a second is fraction 2^31.
        assert_eq!(
            NtpTimestamp::from_unix_nanos(NANOS / 2).0 & 0xffff_ffff,
            1 << 31
        );
    }

    #[test]
    fn offset_and_delay_from_the_four_timestamps() {
        // Server 10 s ahead, 40 ms each way, 1 ms processing.
        let t1 = SOME_DAY;
        let t2 = t1 + 10 * NANOS + 40_000_000;
        let t3 = t2 + 1_000_000;
        let t4 = t1 + 81_000_000;
        assert_eq!(offset_and_delay(t1, t2, t3, t4), (10 * NANOS, 80_000_000));
        // Server behind: the offset is negative.
        let (o, d) = offset_and_delay(t1, t1 - NANOS + 5, t1 - NANOS + 5, t1 + 10);
        assert_eq!((o, d), (-NANOS, 10));
        assert_eq!(format_offset(-NANOS - 2_500_000), "-1.002s");
        assert_eq!(format_offset(1800 * NANOS + 4_000_000), "+1800.004s");
    }

    fn reply(sent: NtpTimestamp) -> Vec<u8> {
        let mut p = vec![0u8; 48];
        p[0] = (4 << 3) | 4;
        p[1] = 2;
        p[12..16].copy_from_slice(b"GPS\0");
        p[24..32].copy_from_slice(&sent.0.to_be_bytes());
        let now = NtpTimestamp::from_unix_nanos(SOME_DAY);
        p[32..40].copy_from_slice(&now.0.to_be_bytes());
        p[40..48].copy_from_slice(&now.0.to_be_bytes());
        p
    }

    #[test]
    fn requests_and_replies_on_the_wire() {
        let sent = NtpTimestamp::from_unix_nanos(SOME_DAY);
        let req = encode_request(sent);
        assert_eq!(req[0], 0x23, "LI 0, version 4, mode 3");
        assert!(req[1..40].iter().all(|&b| b == 0));
        assert_eq!(decode(&req).unwrap().transmit, sent);

        let good = decode(&reply(sent)).unwrap();
        assert_eq!(check_reply(&good, sent), Ok(()));
        assert_eq!(
            check_reply(&good, NtpTimestamp(sent.0 + 1)),
            Err(ReplyError::Unsolicited)
        );
        let mut kiss = reply(sent);
        kiss[1] = 0;
        kiss[12..16].copy_from_slice(b"RATE");
        assert_eq!(
            check_reply(&decode(&kiss).unwrap(), sent),
            Err(ReplyError::Kiss("RATE".into()))
        );
        let mut alarm = reply(sent);
        alarm[0] |= 3 << 6;
        assert_eq!(
            check_reply(&decode(&alarm).unwrap(), sent),
            Err(ReplyError::Unsynchronised)
        );
        let mut client = reply(sent);
        client[0] = (4 << 3) | 3;
        assert_eq!(
            check_reply(&decode(&client).unwrap(), sent),
            Err(ReplyError::NotServer(3))
        );
        let mut empty = reply(sent);
        empty[40..48].fill(0);
        assert_eq!(
            check_reply(&decode(&empty).unwrap(), sent),
            Err(ReplyError::NoTransmit)
        );
        assert!(decode(&req[..47]).is_none());
    }

    /// A one-shot server on 127.0.0.1 whose clock is 42 s ahead; the query measures that.
    #[tokio::test]
    async fn query_measures_a_local_server() {
        let server = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        let clock = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as i128
        };
        let serve = async {
            let mut buf = [0u8; 48];
            let (_, from) = server.recv_from(&mut buf).await.unwrap();
            let ahead = NtpTimestamp::from_unix_nanos(clock() + 42 * NANOS);
            let mut p = [0u8; 48];
            p[0] = (4 << 3) | 4;
            p[1] = 1;
            p[24..32].copy_from_slice(&buf[40..48]);
            p[32..40].copy_from_slice(&ahead.0.to_be_bytes());
            p[40..48].copy_from_slice(&ahead.0.to_be_bytes());
            // A stray packet first: the client must skip it and wait for the real reply.
            server.send_to(&[0u8; 48], from).await.unwrap();
            server.send_to(&p, from).await.unwrap();
        };
        let (sample, ()) = tokio::join!(query(addr, &clock, Duration::from_secs(5)), serve);
        let sample = sample.unwrap();
        assert!(
            (sample.offset_ns - 42 * NANOS).abs() < NANOS / 2,
            "{sample:?}"
        );
        assert_eq!(sample.stratum, 1);

        // Nobody answers: a timeout naming the wait.
        let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let err = query(
            silent.local_addr().unwrap(),
            &clock,
            Duration::from_millis(200),
        )
        .await
        .unwrap_err();
        assert!(err.contains("no reply within"), "{err}");
    }
}
