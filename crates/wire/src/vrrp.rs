//! VRRP version 3 advertisements for IPv4 (RFC 9568 §5).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version| Type  | Virtual Rtr ID|   Priority    |Count IPvX Addr|
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |(rsvd) |     Max Adver Int     |          Checksum             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                      IPv4 Address(es) ...                     |
//! ```
//!
//! [`Packet`] is the zero-copy view; [`Repr::emit`] / [`Repr::emit_frame`]
//! write an advertisement; [`parse_advert`] runs the receive checks of RFC 9568 §7.1
//! that need nothing but the packet (the checks that need the local
//! configuration, such as the VRID, live in `podlb_core::vrrp::Router`) and
//! returns an owned [`Advert`] or the [`AdvertDrop`] reason to count.

use super::checksum;
use super::ethernet::{self, ETHERTYPE_IPV4};
use super::ipv4::{self, PROTO_VRRP};
use super::{be16, ip_at, put16, Error, Ipv4Addr, MacAddr, Result};

/// The IPv4 multicast group of VRRP (RFC 9568 §5.1.1.2).
pub const MULTICAST_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// The Ethernet group address 224.0.0.18 maps to (RFC 1112 §6.4).
pub const MULTICAST_MAC: MacAddr = MacAddr([0x01, 0x00, 0x5e, 0x00, 0x00, 0x12]);
/// The IPv4 TTL of every advertisement (RFC 9568 §5.1.1.3).
pub const TTL: u8 = 255;
/// VRRP version 3 (RFC 9568 §5.2.1).
pub const VERSION: u8 = 3;
/// The only defined type, ADVERTISEMENT (RFC 9568 §5.2.2).
pub const TYPE_ADVERT: u8 = 1;
/// Fixed header before the addresses.
pub const HEADER_LEN: usize = 8;
/// "Count IPvX Addr" is one octet (RFC 9568 §5.2.5).
pub const MAX_ADDRS: usize = 255;
/// The 12-bit Max Advertise Interval field (RFC 9568 §5.2.7).
pub const MAX_INTERVAL_CS: u16 = 0x0fff;

mod field {
    // RFC 9568 §5.1 "VRRP Packet Format".
    pub const VER_TYPE: usize = 0;
    pub const VRID: usize = 1;
    pub const PRIORITY: usize = 2;
    pub const COUNT: usize = 3;
    pub const RSVD_INTERVAL: usize = 4;
    pub const CHECKSUM: usize = 6;
    pub const ADDRS: usize = 8;
}

/// The virtual router MAC address 00-00-5E-00-01-{VRID} (RFC 9568 §7.3).
pub const fn virtual_mac(vrid: u8) -> MacAddr {
    MacAddr([0x00, 0x00, 0x5e, 0x00, 0x01, vrid])
}

/// How the checksum of an advertisement was (or is to be) computed
/// (RFC 9568 §5.2.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ChecksumForm {
    /// Over the VRRP message only: what RFC 9568 specifies for IPv4 (and
    /// keepalived's `v3_checksum_as_v2`, Cisco, recent FRR).
    Plain,
    /// Preceded by the IPv4 pseudo-header (source, destination, zero,
    /// protocol 112, VRRP length), as RFC 5798 was read by keepalived's
    /// default and older FRR. podlb's default, for keepalived interop.
    #[default]
    PseudoHeader,
}

/// A view of a VRRPv3 message carrying IPv4 addresses (the IPv4 payload).
///
/// `new_checked` guarantees at least [`HEADER_LEN`] bytes, a count of at least
/// one address, and room for all `count()` addresses. It does not check the
/// version, the type or the checksum: [`parse_advert`] does, each with its own
/// drop reason. Bytes after the addresses are covered by the checksum (it is
/// computed over the whole buffer, which should be the IPv4 payload exactly).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Errors: [`Error::Truncated`] below 8 bytes or below `8 + 4 * count`;
    /// [`Error::Malformed`] for a count of zero (RFC 9568 §5.2.5: "MUST be at
    /// least 1").
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let count = usize::from(b[field::COUNT]);
        if count == 0 {
            return Err(Error::Malformed);
        }
        if HEADER_LEN + 4 * count > b.len() {
            return Err(Error::Truncated);
        }
        Ok(Packet { buffer })
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The high nibble of the first octet (RFC 9568 §5.2.1).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TYPE] >> 4
    }

    /// The low nibble of the first octet (RFC 9568 §5.2.2).
    #[inline]
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TYPE] & 0x0f
    }

    #[inline]
    pub fn vrid(&self) -> u8 {
        self.buffer.as_ref()[field::VRID]
    }

    #[inline]
    pub fn priority(&self) -> u8 {
        self.buffer.as_ref()[field::PRIORITY]
    }

    /// Number of IPv4 addresses, `>= 1`.
    #[inline]
    pub fn count(&self) -> u8 {
        self.buffer.as_ref()[field::COUNT]
    }

    /// Max Advertise Interval in centiseconds; the 4 reserved bits are
    /// ignored (RFC 9568 §5.2.6: "MUST be ignored on receipt").
    #[inline]
    pub fn max_advert_interval_cs(&self) -> u16 {
        be16(self.buffer.as_ref(), field::RSVD_INTERVAL) & MAX_INTERVAL_CS
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// The `count()` IPv4 addresses, in packet order.
    #[inline]
    pub fn addresses(&self) -> impl ExactSizeIterator<Item = Ipv4Addr> + '_ {
        let b = self.buffer.as_ref();
        (0..usize::from(self.count())).map(move |i| ip_at(b, field::ADDRS + 4 * i))
    }

    /// The whole message the checksum covers.
    #[inline]
    pub fn message(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// Which form of checksum is correct for this message sent from `src` to
    /// `dst`, trying [`ChecksumForm::Plain`] first; `None` if neither is
    /// (RFC 9568 §5.2.8).
    pub fn verify(&self, src: Ipv4Addr, dst: Ipv4Addr) -> Option<ChecksumForm> {
        let msg = self.message();
        let plain = checksum::sum(msg, 0);
        if checksum::fold(plain) == 0xffff {
            return Some(ChecksumForm::Plain);
        }
        // A VRRP message longer than 65535 bytes cannot be in an IPv4 packet.
        let len = u16::try_from(msg.len()).ok()?;
        let pseudo = checksum::pseudo_header_v4(src, dst, PROTO_VRRP, len);
        (checksum::fold(plain + pseudo) == 0xffff).then_some(ChecksumForm::PseudoHeader)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets version 3 and type advertisement.
    #[inline]
    pub fn set_version_type(&mut self, version: u8, msg_type: u8) {
        self.buffer.as_mut()[field::VER_TYPE] = (version << 4) | (msg_type & 0x0f);
    }

    #[inline]
    pub fn set_vrid(&mut self, vrid: u8) {
        self.buffer.as_mut()[field::VRID] = vrid;
    }

    /// Does not update the checksum.
    #[inline]
    pub fn set_priority(&mut self, priority: u8) {
        self.buffer.as_mut()[field::PRIORITY] = priority;
    }

    /// Writes the 12-bit interval (larger values are clamped to 4095) with
    /// the reserved bits zero (RFC 9568 §5.2.6 "MUST be set to zero on
    /// transmission"). Does not update the checksum.
    #[inline]
    pub fn set_max_advert_interval_cs(&mut self, cs: u16) {
        put16(
            self.buffer.as_mut(),
            field::RSVD_INTERVAL,
            cs.min(MAX_INTERVAL_CS),
        );
    }

    #[inline]
    pub fn set_checksum(&mut self, check: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, check);
    }

    /// Recomputes the checksum in the given form (RFC 9568 §5.2.8).
    pub fn fill_checksum(&mut self, form: ChecksumForm, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let msg = self.buffer.as_ref();
        let initial = match form {
            ChecksumForm::Plain => 0,
            // The buffer passed new_checked, and emitters never write more than
            // 8 + 4 * 255 bytes; a longer buffer saturates (and fails verify).
            ChecksumForm::PseudoHeader => checksum::pseudo_header_v4(
                src,
                dst,
                PROTO_VRRP,
                u16::try_from(msg.len()).unwrap_or(u16::MAX),
            ),
        };
        let c = !checksum::fold(checksum::sum(msg, initial));
        self.set_checksum(c);
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// Length of an advertisement with `n` IPv4 addresses.
#[inline]
pub const fn advert_len(n: usize) -> usize {
    HEADER_LEN + 4 * n
}

/// The fields of an advertisement (RFC 9568 §5.1; version 3, type 1,
/// reserved bits zero). How its checksum is computed is chosen when it is
/// emitted ([`ChecksumForm`], with the addresses of the IPv4 header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    pub vrid: u8,
    pub priority: u8,
    /// Max Advertise Interval, centiseconds; above 4095 it is emitted as
    /// 4095 (the field has 12 bits, RFC 9568 §5.2.7).
    pub interval_cs: u16,
    /// 1 to 255 addresses (RFC 9568 §5.2.5).
    pub addrs: AddrList,
}

/// The Ethernet and IPv4 addressing of an advertisement frame; the rest of
/// both headers is fixed: IPv4 protocol 112, TTL 255 (RFC 9568 §5.1.1.3),
/// DF, no options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Envelope {
    /// [`virtual_mac`] (RFC 9568 §7.3).
    pub src_mac: MacAddr,
    /// [`MULTICAST_MAC`], or a unicast peer's.
    pub dst_mac: MacAddr,
    /// The sender's primary address (RFC 9568 §5.1.1.1).
    pub src_ip: Ipv4Addr,
    /// [`MULTICAST_V4`], or a unicast peer's.
    pub dst_ip: Ipv4Addr,
    pub ident: u16,
}

impl Repr {
    /// An advertisement of the first 255 of `addrs`.
    pub fn new(vrid: u8, priority: u8, interval_cs: u16, addrs: &[Ipv4Addr]) -> Repr {
        Repr {
            vrid,
            priority,
            interval_cs,
            addrs: AddrList::from_slice(addrs),
        }
    }

    /// Reads a checked message. Only the version and type are checked here
    /// ([`Error::Unsupported`] for anything but version 3, type 1): the
    /// receive checks of RFC 9568 §7.1, the checksum among them, are
    /// [`parse_advert`]'s.
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Repr> {
        if p.version() != VERSION || p.msg_type() != TYPE_ADVERT {
            return Err(Error::Unsupported);
        }
        let mut addrs = AddrList::default();
        for a in p.addresses() {
            addrs.push(a);
        }
        Ok(Repr {
            vrid: p.vrid(),
            priority: p.priority(),
            interval_cs: p.max_advert_interval_cs(),
            addrs,
        })
    }

    /// [`HEADER_LEN`], before the addresses.
    #[inline]
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// The whole message: [`advert_len`] of the address count.
    #[inline]
    pub fn buffer_len(&self) -> usize {
        advert_len(self.addrs.len())
    }

    /// Writes the message into `buf[..buffer_len()]` with its checksum in
    /// `form` and returns the view over exactly those bytes. For
    /// [`ChecksumForm::PseudoHeader`] the checksum covers `src` and `dst`,
    /// which must be the addresses of the IPv4 header it travels in (for
    /// unicast, the peer's).
    ///
    /// Errors, with nothing written: [`Error::Malformed`] without addresses;
    /// [`Error::Truncated`] if `buf` is shorter than the message.
    pub fn emit<'b>(
        &self,
        buf: &'b mut [u8],
        form: ChecksumForm,
        src: Ipv4Addr,
        dst: Ipv4Addr,
    ) -> Result<Packet<&'b mut [u8]>> {
        // AddrList holds at most 255: the count fits its octet.
        let count = u8::try_from(self.addrs.len()).map_err(|_| Error::Malformed)?;
        if count == 0 {
            return Err(Error::Malformed);
        }
        let b = buf.get_mut(..self.buffer_len()).ok_or(Error::Truncated)?;
        // RFC 9568 §5.2.1, §5.2.2: version 3, type 1 (ADVERTISEMENT).
        b[field::COUNT] = count;
        for (i, a) in self.addrs.iter().enumerate() {
            let at = field::ADDRS + 4 * i;
            b[at..at + 4].copy_from_slice(&a.octets());
        }
        let mut p = Packet { buffer: b };
        p.set_version_type(VERSION, TYPE_ADVERT);
        p.set_vrid(self.vrid);
        p.set_priority(self.priority);
        p.set_max_advert_interval_cs(self.interval_cs);
        p.fill_checksum(form, src, dst);
        Ok(p)
    }

    /// Writes a whole untagged Ethernet + IPv4 + VRRP advertisement frame
    /// addressed as `to` says. Frames shorter than the 60-byte Ethernet
    /// minimum are zero-padded to 60 (the IPv4 total length stays exact).
    ///
    /// Returns the frame length. Errors as [`emit`](Repr::emit), and
    /// [`Error::Truncated`] if `buf` is shorter than the frame; nothing is
    /// written on error.
    pub fn emit_frame(&self, buf: &mut [u8], to: &Envelope, form: ChecksumForm) -> Result<usize> {
        if self.addrs.is_empty() {
            return Err(Error::Malformed);
        }
        let vrrp_len = self.buffer_len();
        let ip = ipv4::Repr {
            src: to.src_ip,
            dst: to.dst_ip,
            protocol: PROTO_VRRP,
            ttl: TTL,
            ident: to.ident,
            // At most 8 + 4 * 255 bytes.
            payload_len: u16::try_from(vrrp_len).map_err(|_| Error::Malformed)?,
        };
        let eth = ethernet::Repr {
            dst: to.dst_mac,
            src: to.src_mac,
            ethertype: ETHERTYPE_IPV4,
        };
        let len = (eth.header_len() + ip.buffer_len()).max(ethernet::MIN_FRAME_LEN);
        let b = buf.get_mut(..len).ok_or(Error::Truncated)?;
        let mut f = eth.emit(b)?;
        let mut p = ip.emit(f.payload_mut())?;
        self.emit(p.payload_mut(), form, to.src_ip, to.dst_ip)?;
        let end = eth.header_len() + ip.buffer_len();
        b[end..].fill(0);
        Ok(len)
    }
}

/// Up to 255 IPv4 addresses held inline (no allocation); derefs to a slice.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddrList {
    len: u8,
    buf: [Ipv4Addr; MAX_ADDRS],
}

impl AddrList {
    /// The first 255 addresses of `addrs`.
    pub fn from_slice(addrs: &[Ipv4Addr]) -> AddrList {
        let mut l = AddrList::default();
        for a in addrs {
            if !l.push(*a) {
                break;
            }
        }
        l
    }

    /// Appends `a`; false (and nothing added) when the list holds 255.
    pub fn push(&mut self, a: Ipv4Addr) -> bool {
        let Some(slot) = self.buf.get_mut(usize::from(self.len)) else {
            return false;
        };
        *slot = a;
        self.len += 1;
        true
    }

    /// The same addresses as `other`, in any order and counting repeats.
    pub fn same_set(&self, other: &[Ipv4Addr]) -> bool {
        if self.len() != other.len() {
            return false;
        }
        let n = self.len();
        let mut a: AddrList = *self;
        let mut b = AddrList::from_slice(other);
        a.buf[..n].sort_unstable();
        b.buf[..n].sort_unstable();
        a[..] == b[..]
    }
}

impl Default for AddrList {
    fn default() -> Self {
        AddrList {
            len: 0,
            buf: [Ipv4Addr::UNSPECIFIED; MAX_ADDRS],
        }
    }
}

impl core::ops::Deref for AddrList {
    type Target = [Ipv4Addr];
    fn deref(&self) -> &[Ipv4Addr] {
        &self.buf[..usize::from(self.len)]
    }
}

impl core::fmt::Debug for AddrList {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// A received advertisement that passed the packet-level checks of RFC 9568
/// §7.1, in host form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advert {
    pub vrid: u8,
    /// 0 = the master is stopping; 255 = sent by the address owner.
    pub priority: u8,
    /// Max Advertise Interval, centiseconds (0..=4095, as received).
    pub interval_cs: u16,
    pub addrs: AddrList,
    /// The checksum form the sender used.
    pub checksum_form: ChecksumForm,
}

impl Advert {
    /// An advertisement as a sender would build it (for simulations and tests).
    pub fn new(vrid: u8, priority: u8, interval_cs: u16, addrs: &[Ipv4Addr]) -> Advert {
        Advert {
            vrid,
            priority,
            interval_cs: interval_cs.min(MAX_INTERVAL_CS),
            addrs: AddrList::from_slice(addrs),
            checksum_form: ChecksumForm::default(),
        }
    }

    /// The advertisement's fields, to emit it again.
    pub fn repr(&self) -> Repr {
        Repr {
            vrid: self.vrid,
            priority: self.priority,
            interval_cs: self.interval_cs,
            addrs: self.addrs,
        }
    }
}

/// Why a received advertisement was discarded (RFC 9568 §7.1: "If any one of
/// the above checks fails, the receiver MUST discard the packet, SHOULD log
/// the event"). Each variant is a counter.
///
/// The first six come from [`parse_advert`]; the rest from
/// `podlb_core::vrrp::Router::handle_advert`, which knows the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum AdvertDrop {
    /// IPv4 TTL not 255 (RFC 9568 §7.1), with TTL checking on.
    BadTtl,
    /// Version not 3 (RFC 9568 §7.1, §5.2.1).
    BadVersion,
    /// Type not 1, ADVERTISEMENT (RFC 9568 §5.2.2).
    BadType,
    /// Neither checksum form verifies (RFC 9568 §7.1, §5.2.8).
    BadChecksum,
    /// Shorter than the header or than its address count claims (RFC 9568
    /// §7.1 "contains the complete VRRP packet").
    Truncated,
    /// Address count zero (RFC 9568 §5.2.5).
    BadCount,
    /// VRID not the one configured (RFC 9568 §7.1).
    VridMismatch,
    /// This router is the address owner (priority 255) (RFC 9568 §7.1).
    LocalOwner,
    /// The address list differs from the configured VIPs and the sender is
    /// not the owner (RFC 9568 §7.1).
    AddrListMismatch,
    /// Our own advertisement, looped back (source = our primary address).
    OwnAdvert,
    /// Received while in the Initialize state (not started or shut down).
    NotRunning,
}

impl AdvertDrop {
    pub const ALL: [AdvertDrop; 11] = [
        AdvertDrop::BadTtl,
        AdvertDrop::BadVersion,
        AdvertDrop::BadType,
        AdvertDrop::BadChecksum,
        AdvertDrop::Truncated,
        AdvertDrop::BadCount,
        AdvertDrop::VridMismatch,
        AdvertDrop::LocalOwner,
        AdvertDrop::AddrListMismatch,
        AdvertDrop::OwnAdvert,
        AdvertDrop::NotRunning,
    ];

    /// snake_case name for metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            AdvertDrop::BadTtl => "bad_ttl",
            AdvertDrop::BadVersion => "bad_version",
            AdvertDrop::BadType => "bad_type",
            AdvertDrop::BadChecksum => "bad_checksum",
            AdvertDrop::Truncated => "truncated",
            AdvertDrop::BadCount => "bad_count",
            AdvertDrop::VridMismatch => "vrid_mismatch",
            AdvertDrop::LocalOwner => "local_owner",
            AdvertDrop::AddrListMismatch => "addr_list_mismatch",
            AdvertDrop::OwnAdvert => "own_advert",
            AdvertDrop::NotRunning => "not_running",
        }
    }
}

/// The packet-level receive checks of RFC 9568 §7.1 on the IPv4 payload of an
/// advertisement that arrived from `ip_src` to `ip_dst` with `ttl`.
///
/// `check_ttl` false skips the TTL check (unicast peers across routers; a
/// keepalived-style extension). The checksum is accepted in either
/// [`ChecksumForm`]; a pseudo-header computed over the multicast group instead
/// of the unicast destination is accepted too (keepalived ≤ 1.3.6 in unicast
/// mode), reported as [`ChecksumForm::PseudoHeader`].
pub fn parse_advert(
    ip_src: Ipv4Addr,
    ip_dst: Ipv4Addr,
    ttl: u8,
    payload: &[u8],
    check_ttl: bool,
) -> core::result::Result<Advert, AdvertDrop> {
    // RFC 9568 §7.1: "MUST verify that the IPv4 TTL ... is 255".
    if check_ttl && ttl != TTL {
        return Err(AdvertDrop::BadTtl);
    }
    let Some(&ver_type) = payload.first() else {
        return Err(AdvertDrop::Truncated);
    };
    // RFC 9568 §7.1: "MUST verify that the VRRP version is 3".
    if ver_type >> 4 != VERSION {
        return Err(AdvertDrop::BadVersion);
    }
    // RFC 9568 §5.2.2: "A packet with unknown type MUST be discarded."
    if ver_type & 0x0f != TYPE_ADVERT {
        return Err(AdvertDrop::BadType);
    }
    // RFC 9568 §7.1: "MUST verify that the received packet contains the
    // complete VRRP packet (including fixed fields, and IPvX address(es))".
    let p = match Packet::new_checked(payload) {
        Ok(p) => p,
        Err(Error::Malformed) => return Err(AdvertDrop::BadCount),
        Err(_) => return Err(AdvertDrop::Truncated),
    };
    // RFC 9568 §7.1: "MUST verify the VRRP checksum".
    let form = match p.verify(ip_src, ip_dst) {
        Some(f) => f,
        None if ip_dst != MULTICAST_V4 && p.verify(ip_src, MULTICAST_V4).is_some() => {
            ChecksumForm::PseudoHeader
        }
        None => return Err(AdvertDrop::BadChecksum),
    };
    // Version and type were checked above, each with its own reason.
    let r = Repr::parse(&p).map_err(|_| AdvertDrop::BadType)?;
    Ok(Advert {
        vrid: r.vrid,
        priority: r.priority,
        interval_cs: r.interval_cs,
        addrs: r.addrs,
        checksum_form: form,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{IpNumber, Ipv4Header};
    use proptest::prelude::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
    const PEER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
    const VIPS: [Ipv4Addr; 2] = [Ipv4Addr::new(198, 18, 0, 10), Ipv4Addr::new(198, 18, 0, 11)];

    /// An advertisement laid out by hand from RFC 9568 §5.1: version 3 type 1,
    /// VRID 51, priority 200, 2 addresses, interval 100 cs, then
    /// 198.18.0.10 and 198.18.0.11. The checksums were computed outside this
    /// crate (a plain RFC 1071 loop in Python).
    fn fixture(check: [u8; 2]) -> [u8; 16] {
        [
            0x31, 51, 200, 2, 0x00, 100, check[0], check[1], 198, 18, 0, 10, 198, 18, 0, 11,
        ]
    }
    /// Over the message only (RFC 9568).
    const PLAIN: [u8; 2] = [0x7a, 0x2b];
    /// With the pseudo-header 198.18.0.1 -> 224.0.0.18, proto 112, len 16.
    const PSEUDO_MCAST: [u8; 2] = [0xd3, 0x84];
    /// With the pseudo-header 198.18.0.1 -> 198.18.0.2 (unicast).
    const PSEUDO_UCAST: [u8; 2] = [0xed, 0x82];

    #[test]
    fn constants() {
        assert_eq!(virtual_mac(51), MacAddr([0, 0, 0x5e, 0, 1, 51]));
        assert_eq!(MULTICAST_MAC.to_string(), "01:00:5e:00:00:12");
        assert!(MULTICAST_V4.is_multicast());
        assert_eq!(PROTO_VRRP, 112);
    }

    #[test]
    fn view_reads_fixture() {
        let b = fixture(PLAIN);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!((p.version(), p.msg_type()), (3, 1));
        assert_eq!((p.vrid(), p.priority(), p.count()), (51, 200, 2));
        assert_eq!(p.max_advert_interval_cs(), 100);
        assert_eq!(p.checksum(), 0x7a2b);
        assert_eq!(p.addresses().collect::<Vec<_>>(), VIPS);
        assert_eq!(p.verify(SRC, MULTICAST_V4), Some(ChecksumForm::Plain));

        // Reserved bits are ignored on receive (RFC 9568 §5.2.6).
        let mut r = b;
        r[4] |= 0xf0;
        let p = Packet::new_checked(&r[..]).unwrap();
        assert_eq!(p.max_advert_interval_cs(), 100);
    }

    #[test]
    fn emit_matches_fixture_in_both_forms() {
        let r = Repr::new(51, 200, 100, &VIPS);
        assert_eq!((r.header_len(), r.buffer_len()), (8, 16));
        for (form, dst, check) in [
            (ChecksumForm::Plain, MULTICAST_V4, PLAIN),
            (ChecksumForm::PseudoHeader, MULTICAST_V4, PSEUDO_MCAST),
            (ChecksumForm::PseudoHeader, PEER, PSEUDO_UCAST),
        ] {
            let mut buf = [0xee; 20];
            let p = r.emit(&mut buf, form, SRC, dst).unwrap();
            assert_eq!(p.message().len(), 16);
            assert_eq!(Repr::parse(&p), Ok(r));
            assert_eq!(p.verify(SRC, dst), Some(form));
            // The plain form verifies whatever the addresses; the pseudo
            // form does not verify against another destination.
            if form == ChecksumForm::PseudoHeader {
                assert_eq!(p.verify(SRC, Ipv4Addr::new(198, 18, 0, 99)), None);
            }
            assert_eq!(buf[..16], fixture(check), "{form:?} {dst}");
            assert_eq!(buf[16..], [0xee; 4]);
        }
    }

    #[test]
    fn emit_rejects() {
        let mut buf = [0u8; 64];
        let f = ChecksumForm::Plain;
        let r = Repr::new(1, 1, 1, &VIPS);
        assert_eq!(
            r.emit(&mut buf[..15], f, SRC, PEER).err(),
            Some(Error::Truncated)
        );
        assert_eq!(buf, [0u8; 64], "nothing written");
        let none = Repr::new(1, 1, 1, &[]);
        assert_eq!(
            none.emit(&mut buf, f, SRC, PEER).err(),
            Some(Error::Malformed)
        );
        let env = Envelope {
            src_mac: virtual_mac(1),
            dst_mac: MULTICAST_MAC,
            src_ip: SRC,
            dst_ip: MULTICAST_V4,
            ident: 0,
        };
        assert_eq!(none.emit_frame(&mut buf, &env, f), Err(Error::Malformed));
        assert_eq!(buf, [0u8; 64], "nothing written");
        // At most 255 addresses are represented.
        let many = Repr::new(1, 1, 1, &[SRC; 256]);
        assert_eq!(many.addrs.len(), 255);
        let mut big = [0u8; 2048];
        assert_eq!(
            many.emit(&mut big, f, SRC, PEER).map(|p| p.message().len()),
            Ok(1028)
        );
        // Interval clamps to 12 bits, reserved bits stay zero.
        let r = Repr::new(1, 1, 0xffff, &VIPS);
        assert_eq!(
            r.emit(&mut buf, f, SRC, PEER).map(|p| p.message().len()),
            Ok(16)
        );
        assert_eq!(&buf[4..6], &[0x0f, 0xff]);
    }

    #[test]
    fn frame_matches_etherparse() {
        let mut buf = [0u8; 128];
        let vmac = virtual_mac(51);
        let env = Envelope {
            src_mac: vmac,
            dst_mac: MULTICAST_MAC,
            src_ip: SRC,
            dst_ip: MULTICAST_V4,
            ident: 0x1234,
        };
        let r = Repr::new(51, 200, 100, &VIPS);
        let n = r
            .emit_frame(&mut buf, &env, ChecksumForm::PseudoHeader)
            .unwrap();
        assert_eq!(n, 14 + 20 + 16 + 10); // padded to 60
        assert_eq!(&buf[..6], &MULTICAST_MAC.0);
        assert_eq!(&buf[6..12], &vmac.0);
        assert_eq!(&buf[12..14], &[0x08, 0x00]);
        let (ip, rest) = Ipv4Header::from_slice(&buf[14..n]).unwrap();
        assert_eq!(ip.protocol, IpNumber(112));
        assert_eq!(ip.time_to_live, 255);
        assert!(ip.dont_fragment);
        assert_eq!(ip.identification, 0x1234);
        assert_eq!(ip.source, SRC.octets());
        assert_eq!(ip.destination, MULTICAST_V4.octets());
        assert_eq!(usize::from(ip.total_len), 36);
        assert_eq!(ip.header_checksum, ip.calc_header_checksum());
        assert_eq!(rest[..16], fixture(PSEUDO_MCAST));
        assert_eq!(rest[16..], [0u8; 10]);

        // An etherparse-built IPv4 header around the hand-laid fixture parses
        // back through parse_advert.
        let h = Ipv4Header::new(16, 255, IpNumber(112), SRC.octets(), PEER.octets()).unwrap();
        let mut pkt = h.to_bytes().to_vec();
        pkt.extend(fixture(PSEUDO_UCAST));
        let v = ipv4::Packet::new_checked(&pkt[..]).unwrap();
        let a = parse_advert(v.src(), v.dst(), v.ttl(), v.payload(), true).unwrap();
        assert_eq!(a.checksum_form, ChecksumForm::PseudoHeader);
        assert_eq!((a.vrid, a.priority, a.interval_cs), (51, 200, 100));
        assert_eq!(&a.addrs[..], &VIPS);
        assert_eq!(a.repr(), r);

        let mut short = [0u8; 59];
        assert_eq!(
            r.emit_frame(&mut short, &env, ChecksumForm::Plain),
            Err(Error::Truncated)
        );
        assert_eq!(short, [0u8; 59], "nothing written");
    }

    #[test]
    fn parse_accepts_every_form() {
        let ok = |b: [u8; 16], dst| parse_advert(SRC, dst, 255, &b, true).map(|a| a.checksum_form);
        assert_eq!(ok(fixture(PLAIN), MULTICAST_V4), Ok(ChecksumForm::Plain));
        assert_eq!(ok(fixture(PLAIN), PEER), Ok(ChecksumForm::Plain));
        assert_eq!(
            ok(fixture(PSEUDO_MCAST), MULTICAST_V4),
            Ok(ChecksumForm::PseudoHeader)
        );
        assert_eq!(
            ok(fixture(PSEUDO_UCAST), PEER),
            Ok(ChecksumForm::PseudoHeader)
        );
        // Old keepalived unicast: pseudo-header over the multicast group.
        assert_eq!(
            ok(fixture(PSEUDO_MCAST), PEER),
            Ok(ChecksumForm::PseudoHeader)
        );
        // ... but a unicast pseudo-header does not verify for multicast.
        assert_eq!(
            ok(fixture(PSEUDO_UCAST), MULTICAST_V4),
            Err(AdvertDrop::BadChecksum)
        );
    }

    #[test]
    fn every_drop_reason() {
        let good = fixture(PLAIN);
        let parse = |b: &[u8], ttl| parse_advert(SRC, MULTICAST_V4, ttl, b, true);
        assert!(parse(&good, 255).is_ok());
        assert_eq!(parse(&good, 254), Err(AdvertDrop::BadTtl));
        assert_eq!(parse(&good, 1), Err(AdvertDrop::BadTtl));
        assert!(parse_advert(SRC, MULTICAST_V4, 1, &good, false).is_ok());

        let mut b = good;
        b[0] = 0x21; // VRRPv2
        assert_eq!(parse(&b, 255), Err(AdvertDrop::BadVersion));
        b[0] = 0x32;
        assert_eq!(parse(&b, 255), Err(AdvertDrop::BadType));
        let mut b = good;
        b[7] ^= 1;
        assert_eq!(parse(&b, 255), Err(AdvertDrop::BadChecksum));
        let mut b = good;
        b[3] = 0;
        assert_eq!(parse(&b, 255), Err(AdvertDrop::BadCount));
        let mut b = good;
        b[3] = 3; // claims 3 addresses, holds 2
        assert_eq!(parse(&b, 255), Err(AdvertDrop::Truncated));
        for n in 0..16 {
            assert_eq!(parse(&good[..n], 255), Err(AdvertDrop::Truncated), "{n}");
        }
        assert_eq!(Packet::new_checked(&good[..7]), Err(Error::Truncated));

        let names: std::collections::HashSet<_> =
            AdvertDrop::ALL.iter().map(|d| d.as_str()).collect();
        assert_eq!(names.len(), AdvertDrop::ALL.len());
        assert!(names
            .iter()
            .all(|n| n.chars().all(|c| c.is_ascii_lowercase() || c == '_')));
    }

    #[test]
    fn addr_list() {
        let l = AddrList::from_slice(&VIPS);
        assert_eq!(l.len(), 2);
        assert!(l.same_set(&[VIPS[1], VIPS[0]]));
        assert!(!l.same_set(&VIPS[..1]));
        assert!(!l.same_set(&[VIPS[0], VIPS[0]]));
        assert_eq!(format!("{l:?}"), "[198.18.0.10, 198.18.0.11]");
        assert_eq!(AddrList::from_slice(&[SRC; 300]).len(), 255);
    }

    fn check_all(b: &[u8]) {
        if let Ok(p) = Packet::new_checked(b) {
            let _ = (p.version(), p.msg_type(), p.vrid(), p.priority());
            let _ = (
                p.max_advert_interval_cs(),
                p.checksum(),
                p.verify(SRC, PEER),
            );
            assert_eq!(p.addresses().count(), usize::from(p.count()));
        }
        for ttl in [255, 0] {
            let _ = parse_advert(SRC, PEER, ttl, b, true);
            let _ = parse_advert(SRC, MULTICAST_V4, ttl, b, false);
        }
    }

    proptest! {
        #[test]
        fn never_panics(mut b in proptest::collection::vec(any::<u8>(), 0..1100)) {
            check_all(&b);
            if let Some(x) = b.first_mut() { *x = 0x31; }
            check_all(&b);
        }

        #[test]
        fn round_trip(
            vrid in any::<u8>(),
            prio in any::<u8>(),
            interval in 0u16..=0x0fff,
            addrs in proptest::collection::vec(any::<u32>().prop_map(Ipv4Addr::from), 1..40),
            pseudo in any::<bool>(),
            src in any::<u32>().prop_map(Ipv4Addr::from),
            dst in any::<u32>().prop_map(Ipv4Addr::from),
        ) {
            let form = if pseudo { ChecksumForm::PseudoHeader } else { ChecksumForm::Plain };
            let mut buf = [0u8; 8 + 4 * 40];
            let r = Repr::new(vrid, prio, interval, &addrs);
            let p = r.emit(&mut buf, form, src, dst).unwrap();
            prop_assert_eq!(Repr::parse(&p), Ok(r));
            let n = r.buffer_len();
            prop_assert_eq!(n, 8 + 4 * addrs.len());
            let a = parse_advert(src, dst, 255, &buf[..n], true).unwrap();
            prop_assert_eq!(a.vrid, vrid);
            prop_assert_eq!(a.priority, prio);
            prop_assert_eq!(a.interval_cs, interval);
            prop_assert_eq!(&a.addrs[..], &addrs[..]);
            // Plain is tried first; a pseudo-header sum that happens to be
            // zero makes both forms valid.
            prop_assert!(a.checksum_form == form || a.checksum_form == ChecksumForm::Plain);
        }
    }
}
