//! The DNS health check's messages, sans-IO: the query podlb sends
//! ([`query`]) and the verdict on what comes back ([`judge`]).
//!
//! The query is RFC 1035 §4.1: a 12-byte header (ID, RD = 1, QDCOUNT = 1),
//! then one question: QNAME as labels, QTYPE A (1), QCLASS IN (1). The
//! backend is healthy when it answers with the query's ID, QR = 1 and
//! RCODE NOERROR (0) or NXDOMAIN (3): a server that knows the name is
//! absent is still serving. Only the header of the reply is read, so no
//! reply, however malformed, can do more than fail the check.

/// Longest name in text form, without the trailing dot (RFC 1035 §2.3.4:
/// 255 octets on the wire).
pub const MAX_NAME: usize = 253;
/// Longest label (RFC 1035 §2.3.4).
pub const MAX_LABEL: usize = 63;
/// Length of the DNS header (RFC 1035 §4.1.1).
pub const HEADER_LEN: usize = 12;

/// QTYPE A.
const TYPE_A: u16 = 1;
/// QCLASS IN.
const CLASS_IN: u16 = 1;

/// Checks a name to query: dot-separated labels of 1..=63 ASCII letters,
/// digits, `-` or `_`, at most 253 characters without a trailing dot
/// (which is allowed; `"."` alone is the root).
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty: give a name like \"example.com\" (or \".\" for the root)".into());
    }
    if name == "." {
        return Ok(());
    }
    let bare = name.strip_suffix('.').unwrap_or(name);
    if bare.len() > MAX_NAME {
        return Err(format!(
            "{} characters; a name has at most {MAX_NAME}",
            bare.len()
        ));
    }
    for label in bare.split('.') {
        if label.is_empty() {
            return Err(format!("{name:?} has an empty label"));
        }
        if label.len() > MAX_LABEL {
            return Err(format!(
                "label {label:?} has {} characters; at most {MAX_LABEL}",
                label.len()
            ));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(format!(
                "{name:?} contains {c:?}: use ASCII letters, digits, '-' and '_'"
            ));
        }
    }
    Ok(())
}

/// The query for `name` (type A, class IN, recursion desired) with ID `id`.
/// Refuses names [`check_name`] refuses.
pub fn query(id: u16, name: &str) -> Result<Vec<u8>, String> {
    check_name(name)?;
    let bare = name.strip_suffix('.').unwrap_or(name);
    let mut q = Vec::with_capacity(HEADER_LEN + bare.len() + 6);
    q.extend_from_slice(&id.to_be_bytes());
    // QR = 0, OPCODE = 0 (QUERY), AA = 0, TC = 0, RD = 1; RA, Z, RCODE = 0.
    q.extend_from_slice(&[0x01, 0x00]);
    // QDCOUNT = 1, ANCOUNT = NSCOUNT = ARCOUNT = 0.
    q.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    if !bare.is_empty() {
        for label in bare.split('.') {
            // check_name bounds every label to 63 bytes.
            let len = u8::try_from(label.len()).map_err(|_| "label too long".to_string())?;
            q.push(len);
            q.extend_from_slice(label.as_bytes());
        }
    }
    q.push(0);
    q.extend_from_slice(&TYPE_A.to_be_bytes());
    q.extend_from_slice(&CLASS_IN.to_be_bytes());
    Ok(q)
}

/// What a datagram that came back says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The answer to our query with RCODE NOERROR or NXDOMAIN.
    Healthy,
    /// Not an answer to our query (another ID): keep waiting.
    Ignore,
    /// The check fails, for this reason.
    Unhealthy(String),
}

/// Judges `reply` to the query with ID `id`.
pub fn judge(id: u16, reply: &[u8]) -> Verdict {
    let Some(header) = reply.get(..HEADER_LEN) else {
        return Verdict::Unhealthy(format!(
            "malformed reply: {} bytes, shorter than a DNS header",
            reply.len()
        ));
    };
    if u16::from_be_bytes([header[0], header[1]]) != id {
        return Verdict::Ignore;
    }
    let (flags, low) = (header[2], header[3]);
    if flags & 0x80 == 0 {
        return Verdict::Unhealthy(
            "malformed reply: QR = 0, a query rather than a response".into(),
        );
    }
    match low & 0x0f {
        0 | 3 => Verdict::Healthy,
        rcode => Verdict::Unhealthy(format!("rcode {}", rcode_name(rcode))),
    }
}

/// An RCODE as `NAME (n)` (RFC 1035 §4.1.1, RFC 2136 §2.2).
pub fn rcode_name(rcode: u8) -> String {
    let name = match rcode {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        6 => "YXDOMAIN",
        7 => "YXRRSET",
        8 => "NXRRSET",
        9 => "NOTAUTH",
        10 => "NOTZONE",
        _ => return rcode.to_string(),
    };
    format!("{name} ({rcode})")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reply to `q`: its header with QR set and `rcode`, then its question.
    fn reply(q: &[u8], rcode: u8) -> Vec<u8> {
        let mut r = q.to_vec();
        r[2] |= 0x80;
        r[3] = 0x80 | rcode;
        r
    }

    #[test]
    fn query_layout() {
        let q = query(0xbeef, "www.example.com").unwrap();
        let mut want = vec![0xbe, 0xef, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        want.extend_from_slice(b"\x03www\x07example\x03com\x00");
        want.extend_from_slice(&[0, 1, 0, 1]);
        assert_eq!(q, want);
        // A trailing dot changes nothing.
        assert_eq!(query(0xbeef, "www.example.com.").unwrap(), want);
        // The root: QNAME is the empty label alone.
        assert_eq!(
            query(7, ".").unwrap(),
            vec![0, 7, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1]
        );
    }

    #[test]
    fn names() {
        let l63 = "a".repeat(63);
        // 4 labels of 63 + 3 dots = 255 > 253; 3 × 63 + 61 + 3 = 253.
        let max = format!("{l63}.{l63}.{l63}.{}", "b".repeat(61));
        assert_eq!(max.len(), 253);
        for ok in [
            "example.com",
            "example.com.",
            ".",
            "_dns._udp.example-1.org",
            "localhost",
            "A.B.C",
            l63.as_str(),
            max.as_str(),
        ] {
            assert_eq!(check_name(ok), Ok(()), "{ok}");
            let q = query(1, ok).unwrap();
            assert!(q.len() <= HEADER_LEN + 255 + 4, "{ok}");
        }
        let l64 = "a".repeat(64);
        let long = format!("{max}c");
        for bad in [
            "",
            "..",
            ".example.com",
            "example..com",
            "exa mple.com",
            "exa\0mple",
            "ex/ample",
            "é.com",
            "example.com..",
            l64.as_str(),
            long.as_str(),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
            assert!(query(1, bad).is_err(), "{bad:?}");
        }
        // The 253 limit is on the name without its trailing dot.
        assert_eq!(check_name(&format!("{max}.")), Ok(()));
    }

    #[test]
    fn verdicts() {
        let q = query(0x1234, "example.com").unwrap();
        assert_eq!(judge(0x1234, &reply(&q, 0)), Verdict::Healthy);
        assert_eq!(judge(0x1234, &reply(&q, 3)), Verdict::Healthy, "NXDOMAIN");
        // The header alone is enough.
        assert_eq!(judge(0x1234, &reply(&q, 0)[..12]), Verdict::Healthy);
        assert_eq!(
            judge(0x1234, &reply(&q, 2)),
            Verdict::Unhealthy("rcode SERVFAIL (2)".into())
        );
        assert_eq!(
            judge(0x1234, &reply(&q, 5)),
            Verdict::Unhealthy("rcode REFUSED (5)".into())
        );
        assert_eq!(
            judge(0x1234, &reply(&q, 15)),
            Verdict::Unhealthy("rcode 15".into())
        );
        // Another ID: someone else's answer.
        assert_eq!(judge(0x1235, &reply(&q, 0)), Verdict::Ignore);
        // Our query echoed back is no answer.
        assert!(matches!(judge(0x1234, &q), Verdict::Unhealthy(e) if e.contains("QR = 0")));
    }

    #[test]
    fn short_and_garbage_replies_fail_without_panicking() {
        for n in 0..HEADER_LEN {
            let r = vec![0x12; n];
            assert!(
                matches!(judge(0x1212, &r), Verdict::Unhealthy(ref e) if e.contains("malformed")),
                "{n} bytes"
            );
        }
        // Every 12-byte header, however odd, gets a verdict.
        let mut x: u32 = 1;
        for _ in 0..10_000 {
            let mut r = [0u8; 13];
            for b in &mut r {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                *b = x.to_le_bytes()[0];
            }
            let _ = judge(u16::from_be_bytes([r[0], r[1]]), &r);
        }
    }
}
