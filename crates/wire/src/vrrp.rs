//! VRRP version 3 advertisements for IPv4 and IPv6 (RFC 9568 §5).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version| Type  | Virtual Rtr ID|   Priority    |Count IPvX Addr|
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |(rsvd) |     Max Adver Int     |          Checksum             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                      IPvX Address(es) ...                     |
//! ```
//!
//! [`Packet`] is the zero-copy view; [`Repr::emit`] / [`Repr::emit_frame`]
//! write an advertisement; [`parse_advert`] runs the receive checks of RFC 9568 §7.1
//! that need nothing but the packet (the checks that need the local
//! configuration, such as the VRID, live in `podlb_core::vrrp::Router`) and
//! returns an owned [`Advert`] or the [`AdvertDrop`] reason to count.
//!
//! # Address families
//!
//! Every type is generic over the address family, [`VrrpAddr`]: implemented
//! for [`Ipv4Addr`] (the default, so `Repr`, `Advert`, ... without a
//! parameter are the IPv4 ones) and [`Ipv6Addr`], and for nothing else. The
//! IPv4 and IPv6 forms differ only where RFC 9568 makes them differ:
//!
//! | | IPv4 | IPv6 |
//! |---|---|---|
//! | address in the message (§5.2.9) | 4 octets | 16 octets |
//! | checksum (§5.2.8) | [`ChecksumForm`], either | always the RFC 8200 §8.1 pseudo-header, next header 112 |
//! | group (§5.1.1.2, §5.1.2.2) | 224.0.0.18, `01:00:5e:00:00:12` | ff02::12, `33:33:00:00:00:12` |
//! | virtual MAC (§7.3) | `00:00:5e:00:01:{VRID}` | `00:00:5e:00:02:{VRID}` |
//! | source (§5.1.1.1, §5.1.2.1) | primary IPv4 address | link-local address |
//! | TTL / Hop Limit (§5.1.1.3, §5.1.2.3) | 255 | 255 |
//! | first address (§5.2.9) | any | link-local (see below) |
//!
//! An IPv6 advert is received through [`parse_advert_ipv6`] (which walks
//! the extension headers to the VRRP message) and built with
//! [`Repr::emit_frame`] and an [`Envelope`] of `Ipv6Addr`s
//! ([`Envelope::multicast`]).
//!
//! RFC 9568 §5.2.9: "For IPv6, the first address MUST be the IPv6
//! link-local address associated with the Virtual Router." That binds the
//! sender: podlb's configuration check (`podlb_core::vrrp::Config::validate`)
//! enforces it for what podlb sends, and [`virtual_link_local`] offers an
//! address for it. On receive it is not checked: RFC 9568 §7.1 does not list
//! it, keepalived only logs (and checks nothing in unicast mode), and a
//! dropped advert turns a peer's misconfiguration into two masters, while
//! an accepted one still elects one master (the address-list check of §7.1
//! catches a list that differs from ours). See docs/decisions.md §66.

use core::fmt;
use core::hash::Hash;
use core::marker::PhantomData;

use super::checksum;
use super::ethernet::{self, ETHERTYPE_IPV4, ETHERTYPE_IPV6};
use super::ipv4::{self, PROTO_VRRP};
use super::ipv6;
use super::{be16, ip6_at, ip_at, put16, Error, Ipv4Addr, Ipv6Addr, MacAddr, Result};

/// The IPv4 multicast group of VRRP (RFC 9568 §5.1.1.2).
pub const MULTICAST_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// The Ethernet group address 224.0.0.18 maps to (RFC 1112 §6.4).
pub const MULTICAST_MAC: MacAddr = MacAddr([0x01, 0x00, 0x5e, 0x00, 0x00, 0x12]);
/// The IPv6 multicast group of VRRP (RFC 9568 §5.1.2.2).
pub const MULTICAST_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);
/// The Ethernet group address ff02::12 maps to (RFC 2464 §7).
pub const MULTICAST_MAC_V6: MacAddr = MacAddr([0x33, 0x33, 0x00, 0x00, 0x00, 0x12]);
/// The IPv4 TTL of every advertisement (RFC 9568 §5.1.1.3).
pub const TTL: u8 = 255;
/// The IPv6 Hop Limit of every advertisement (RFC 9568 §5.1.2.3).
pub const HOP_LIMIT: u8 = 255;
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

/// The IPv4 virtual router MAC address 00-00-5E-00-01-{VRID} (RFC 9568
/// §7.3).
pub const fn virtual_mac(vrid: u8) -> MacAddr {
    MacAddr([0x00, 0x00, 0x5e, 0x00, 0x01, vrid])
}

/// The IPv6 virtual router MAC address 00-00-5E-00-02-{VRID} (RFC 9568
/// §7.3, "IPv6 case"). An IPv4 and an IPv6 virtual router with the same
/// VRID are separate instances (RFC 9568 Abstract: "the Virtual Routers in
/// each of the IPv4 and IPv6 address families are independent of one
/// another") and answer with different MACs.
pub const fn virtual_mac_v6(vrid: u8) -> MacAddr {
    MacAddr([0x00, 0x00, 0x5e, 0x00, 0x02, vrid])
}

/// A link-local address for the IPv6 virtual router of `vrid`: fe80:: with
/// the modified EUI-64 interface identifier of [`virtual_mac_v6`] (RFC 4291
/// §2.5.1, Appendix A), `fe80::200:5eff:fe00:2XX` (XX the VRID in hex), the address Linux
/// gives an interface on the virtual MAC (a macvlan) with EUI-64 address
/// generation. One choice for the
/// first address of the list (RFC 9568 §5.2.9); any link-local address all
/// routers of the virtual router agree on will do.
pub const fn virtual_link_local(vrid: u8) -> Ipv6Addr {
    Ipv6Addr::new(
        0xfe80,
        0,
        0,
        0,
        0x0200,
        0x5eff,
        0xfe00,
        0x0200 | vrid as u16,
    )
}

/// Which IP version a virtual router runs over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// lowercase name for logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        }
    }
}

/// An address family VRRPv3 runs over: [`Ipv4Addr`] or [`Ipv6Addr`] (the
/// trait is sealed). Everything family-specific about an advertisement
/// lives in its two implementations (see the table in the module docs).
pub trait VrrpAddr:
    sealed::Sealed + Copy + Eq + Ord + Hash + fmt::Debug + fmt::Display + Send + Sync + 'static
{
    const FAMILY: Family;
    /// Octets of one address in the message (RFC 9568 §5.2.9): 4 or 16.
    const LEN: usize;
    /// The VRRP multicast group (RFC 9568 §5.1.1.2, §5.1.2.2).
    const MULTICAST: Self;
    /// The Ethernet address of [`MULTICAST`](VrrpAddr::MULTICAST).
    const MULTICAST_MAC: MacAddr;
    /// 0.0.0.0 or `::`.
    const UNSPECIFIED: Self;

    /// The virtual router MAC of this family (RFC 9568 §7.3):
    /// [`virtual_mac`] or [`virtual_mac_v6`].
    fn virtual_mac(vrid: u8) -> MacAddr;

    /// The address as an unsigned integer in network byte order, for the
    /// comparison of primary addresses of RFC 9568 §6.4.3 (the same order
    /// as `Ord`).
    fn to_u128(self) -> u128;

    /// IPv4 169.254.0.0/16, IPv6 fe80::/10 (unicast link-local).
    fn is_link_local(self) -> bool;

    /// Length of an advertisement with `n` addresses of this family.
    #[inline]
    fn advert_len(n: usize) -> usize {
        HEADER_LEN + Self::LEN * n
    }
}

mod sealed {
    use super::{Ipv4Addr, Ipv6Addr, Result};

    /// The mechanics behind [`super::VrrpAddr`], kept out of its API.
    pub trait Sealed: Sized {
        /// A checksum over the message alone is valid (RFC 9568 §5.2.8
        /// leaves it to IPv4 only; see [`super::ChecksumForm`]).
        const PLAIN_CHECKSUM: bool;
        /// A unicast advert whose pseudo-header names the multicast group
        /// is accepted (keepalived ≤ 1.3.6 in IPv4 unicast mode; keepalived
        /// lets the kernel checksum IPv6, which gets it right).
        const GROUP_PSEUDO_HEADER_QUIRK: bool;
        const ETHERTYPE: u16;
        /// The IP header podlb emits: IPv4 without options, or the fixed
        /// IPv6 header without extension headers.
        const IP_HEADER_LEN: usize;
        /// Reads the address at `b[at..at + LEN]` (in range).
        fn read(b: &[u8], at: usize) -> Self;
        /// Writes it at `b[at..at + LEN]` (in range).
        fn write(self, b: &mut [u8], at: usize);
        /// Sum of the pseudo-header of a VRRP message of `len` bytes, or
        /// `None` if `len` does not fit its length field.
        fn pseudo_header(src: Self, dst: Self, len: usize) -> Option<u32>;
        /// Writes the IP header of an advertisement at the front of `buf`
        /// and returns the `payload_len` bytes after it.
        fn emit_ip(
            buf: &mut [u8],
            src: Self,
            dst: Self,
            ident: u16,
            payload_len: u16,
        ) -> Result<&mut [u8]>;
    }

    impl Sealed for Ipv4Addr {
        const PLAIN_CHECKSUM: bool = true;
        const GROUP_PSEUDO_HEADER_QUIRK: bool = true;
        const ETHERTYPE: u16 = super::ETHERTYPE_IPV4;
        const IP_HEADER_LEN: usize = super::ipv4::MIN_HEADER_LEN;

        #[inline]
        fn read(b: &[u8], at: usize) -> Self {
            super::ip_at(b, at)
        }

        #[inline]
        fn write(self, b: &mut [u8], at: usize) {
            b[at..at + 4].copy_from_slice(&self.octets());
        }

        #[inline]
        fn pseudo_header(src: Self, dst: Self, len: usize) -> Option<u32> {
            // A VRRP message longer than 65535 bytes cannot be in an IPv4
            // packet.
            let len = u16::try_from(len).ok()?;
            Some(super::checksum::pseudo_header_v4(
                src,
                dst,
                super::PROTO_VRRP,
                len,
            ))
        }

        fn emit_ip(
            buf: &mut [u8],
            src: Self,
            dst: Self,
            ident: u16,
            payload_len: u16,
        ) -> Result<&mut [u8]> {
            // RFC 9568 §5.1.1: protocol 112, TTL 255; DF, no options.
            let ip = super::ipv4::Repr {
                src,
                dst,
                protocol: super::PROTO_VRRP,
                ttl: super::TTL,
                ident,
                payload_len,
            };
            Ok(ip.emit(buf)?.into_payload_mut())
        }
    }

    impl Sealed for Ipv6Addr {
        const PLAIN_CHECKSUM: bool = false;
        const GROUP_PSEUDO_HEADER_QUIRK: bool = false;
        const ETHERTYPE: u16 = super::ETHERTYPE_IPV6;
        const IP_HEADER_LEN: usize = super::ipv6::HEADER_LEN;

        #[inline]
        fn read(b: &[u8], at: usize) -> Self {
            super::ip6_at(b, at)
        }

        #[inline]
        fn write(self, b: &mut [u8], at: usize) {
            b[at..at + 16].copy_from_slice(&self.octets());
        }

        #[inline]
        fn pseudo_header(src: Self, dst: Self, len: usize) -> Option<u32> {
            // RFC 9568 §5.2.8: the pseudo-header of RFC 8200 §8.1, next
            // header 112; its length field has 32 bits.
            let len = u32::try_from(len).ok()?;
            Some(super::checksum::pseudo_header_v6(
                src,
                dst,
                super::ipv6::PROTO_VRRP,
                len,
            ))
        }

        fn emit_ip(
            buf: &mut [u8],
            src: Self,
            dst: Self,
            _ident: u16,
            payload_len: u16,
        ) -> Result<&mut [u8]> {
            // RFC 9568 §5.1.2: next header 112, hop limit 255; no
            // extension headers.
            let ip = super::ipv6::Repr {
                src,
                dst,
                next_header: super::ipv6::PROTO_VRRP,
                hop_limit: super::HOP_LIMIT,
                payload_len,
            };
            Ok(ip.emit(buf)?.into_payload_mut())
        }
    }
}

impl VrrpAddr for Ipv4Addr {
    const FAMILY: Family = Family::V4;
    const LEN: usize = 4;
    const MULTICAST: Self = MULTICAST_V4;
    const MULTICAST_MAC: MacAddr = MULTICAST_MAC;
    const UNSPECIFIED: Self = Ipv4Addr::UNSPECIFIED;

    #[inline]
    fn virtual_mac(vrid: u8) -> MacAddr {
        virtual_mac(vrid)
    }

    #[inline]
    fn to_u128(self) -> u128 {
        u128::from(u32::from(self))
    }

    #[inline]
    fn is_link_local(self) -> bool {
        Ipv4Addr::is_link_local(&self)
    }
}

impl VrrpAddr for Ipv6Addr {
    const FAMILY: Family = Family::V6;
    const LEN: usize = 16;
    const MULTICAST: Self = MULTICAST_V6;
    const MULTICAST_MAC: MacAddr = MULTICAST_MAC_V6;
    const UNSPECIFIED: Self = Ipv6Addr::UNSPECIFIED;

    #[inline]
    fn virtual_mac(vrid: u8) -> MacAddr {
        virtual_mac_v6(vrid)
    }

    #[inline]
    fn to_u128(self) -> u128 {
        u128::from(self)
    }

    #[inline]
    fn is_link_local(self) -> bool {
        self.is_unicast_link_local()
    }
}

/// How the checksum of an advertisement was (or is to be) computed
/// (RFC 9568 §5.2.8). A choice for IPv4 only: IPv6 advertisements always
/// carry the pseudo-header form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ChecksumForm {
    /// Over the VRRP message only: what RFC 9568 specifies for IPv4 (and
    /// keepalived's `v3_checksum_as_v2`, Cisco, recent FRR).
    Plain,
    /// Preceded by the pseudo-header: for IPv4 (source, destination, zero,
    /// protocol 112, VRRP length), as RFC 5798 was read by keepalived's
    /// default and older FRR, podlb's IPv4 default for keepalived interop;
    /// for IPv6 the RFC 8200 §8.1 pseudo-header, the only form.
    #[default]
    PseudoHeader,
}

/// A view of a VRRPv3 message carrying addresses of family `A` (the IP
/// payload).
///
/// `new_checked` guarantees at least [`HEADER_LEN`] bytes, a count of at least
/// one address, and room for all `count()` addresses. It does not check the
/// version, the type or the checksum: [`parse_advert`] does, each with its own
/// drop reason. Bytes after the addresses are covered by the checksum (it is
/// computed over the whole buffer, which should be the IP payload exactly).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>, A: VrrpAddr = Ipv4Addr> {
    buffer: T,
    family: PhantomData<A>,
}

impl<T: AsRef<[u8]>, A: VrrpAddr> Packet<T, A> {
    /// Errors: [`Error::Truncated`] below 8 bytes or below `8 + LEN * count`
    /// (RFC 9568 §5.2.9: 4 or 16 octets an address);
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
        if A::advert_len(count) > b.len() {
            return Err(Error::Truncated);
        }
        Ok(Packet {
            buffer,
            family: PhantomData,
        })
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

    /// Number of addresses, `>= 1`.
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

    /// The `count()` addresses, in packet order.
    #[inline]
    pub fn addresses(&self) -> impl ExactSizeIterator<Item = A> + '_ {
        let b = self.buffer.as_ref();
        (0..usize::from(self.count())).map(move |i| A::read(b, field::ADDRS + A::LEN * i))
    }

    /// The whole message the checksum covers.
    #[inline]
    pub fn message(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// Which form of checksum is correct for this message sent from `src` to
    /// `dst`, trying [`ChecksumForm::Plain`] first (IPv4 only); `None` if
    /// none is (RFC 9568 §5.2.8).
    pub fn verify(&self, src: A, dst: A) -> Option<ChecksumForm> {
        let msg = self.message();
        let plain = checksum::sum(msg, 0);
        if A::PLAIN_CHECKSUM && checksum::fold(plain) == 0xffff {
            return Some(ChecksumForm::Plain);
        }
        let pseudo = A::pseudo_header(src, dst, msg.len())?;
        (checksum::fold(plain + pseudo) == 0xffff).then_some(ChecksumForm::PseudoHeader)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>, A: VrrpAddr> Packet<T, A> {
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

    /// Recomputes the checksum in the given form (RFC 9568 §5.2.8). IPv6
    /// always gets the pseudo-header form, whatever `form` says.
    pub fn fill_checksum(&mut self, form: ChecksumForm, src: A, dst: A) {
        self.set_checksum(0);
        let msg = self.buffer.as_ref();
        let initial = if A::PLAIN_CHECKSUM && form == ChecksumForm::Plain {
            0
        } else {
            // The buffer passed new_checked, and emitters never write more
            // than 8 + 16 * 255 bytes; a buffer too long for the
            // pseudo-header's length field gets none (and fails verify
            // in that form).
            A::pseudo_header(src, dst, msg.len()).unwrap_or(0)
        };
        let c = !checksum::fold(checksum::sum(msg, initial));
        self.set_checksum(c);
    }
}

impl<T: AsRef<[u8]>, A: VrrpAddr> AsRef<[u8]> for Packet<T, A> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// Length of an advertisement with `n` IPv4 addresses.
#[inline]
pub const fn advert_len(n: usize) -> usize {
    HEADER_LEN + 4 * n
}

/// Length of an advertisement with `n` IPv6 addresses (RFC 9568 §5.2.9).
#[inline]
pub const fn advert_len_v6(n: usize) -> usize {
    HEADER_LEN + 16 * n
}

/// The fields of an advertisement (RFC 9568 §5.1; version 3, type 1,
/// reserved bits zero). How its checksum is computed is chosen when it is
/// emitted ([`ChecksumForm`], with the addresses of the IP header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr<A: VrrpAddr = Ipv4Addr> {
    pub vrid: u8,
    pub priority: u8,
    /// Max Advertise Interval, centiseconds; above 4095 it is emitted as
    /// 4095 (the field has 12 bits, RFC 9568 §5.2.7).
    pub interval_cs: u16,
    /// 1 to 255 addresses (RFC 9568 §5.2.5); for IPv6 the first is the
    /// virtual router's link-local address (§5.2.9, not checked here).
    pub addrs: AddrList<A>,
}

/// The Ethernet and IP addressing of an advertisement frame; the rest of
/// both headers is fixed: IPv4 protocol 112, TTL 255 (RFC 9568 §5.1.1.3),
/// DF, no options; or IPv6 next header 112, hop limit 255 (§5.1.2.3),
/// traffic class and flow label 0, no extension headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Envelope<A: VrrpAddr = Ipv4Addr> {
    /// [`virtual_mac`] or [`virtual_mac_v6`] (RFC 9568 §7.3).
    pub src_mac: MacAddr,
    /// [`MULTICAST_MAC`] / [`MULTICAST_MAC_V6`], or a unicast peer's.
    pub dst_mac: MacAddr,
    /// The sender's primary address (RFC 9568 §5.1.1.1); for IPv6 the
    /// link-local address of the interface (§5.1.2.1).
    pub src_ip: A,
    /// [`MULTICAST_V4`] / [`MULTICAST_V6`], or a unicast peer's.
    pub dst_ip: A,
    /// The IPv4 Identification; IPv6 has none (ignored).
    pub ident: u16,
}

impl<A: VrrpAddr> Envelope<A> {
    /// From the virtual MAC of `vrid` and `src_ip` to the VRRP group.
    pub fn multicast(vrid: u8, src_ip: A) -> Envelope<A> {
        Envelope {
            src_mac: A::virtual_mac(vrid),
            dst_mac: A::MULTICAST_MAC,
            src_ip,
            dst_ip: A::MULTICAST,
            ident: 0,
        }
    }
}

impl<A: VrrpAddr> Repr<A> {
    /// An advertisement of the first 255 of `addrs`.
    pub fn new(vrid: u8, priority: u8, interval_cs: u16, addrs: &[A]) -> Repr<A> {
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
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T, A>) -> Result<Repr<A>> {
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

    /// The whole message: [`VrrpAddr::advert_len`] of the address count.
    #[inline]
    pub fn buffer_len(&self) -> usize {
        A::advert_len(self.addrs.len())
    }

    /// Writes the message into `buf[..buffer_len()]` with its checksum in
    /// `form` (IPv6: always the pseudo-header) and returns the view over
    /// exactly those bytes. For the pseudo-header the checksum covers `src`
    /// and `dst`, which must be the addresses of the IP header it travels
    /// in (for unicast, the peer's).
    ///
    /// Errors, with nothing written: [`Error::Malformed`] without addresses;
    /// [`Error::Truncated`] if `buf` is shorter than the message.
    pub fn emit<'b>(
        &self,
        buf: &'b mut [u8],
        form: ChecksumForm,
        src: A,
        dst: A,
    ) -> Result<Packet<&'b mut [u8], A>> {
        // AddrList holds at most 255: the count fits its octet.
        let count = u8::try_from(self.addrs.len()).map_err(|_| Error::Malformed)?;
        if count == 0 {
            return Err(Error::Malformed);
        }
        let b = buf.get_mut(..self.buffer_len()).ok_or(Error::Truncated)?;
        // RFC 9568 §5.2.1, §5.2.2: version 3, type 1 (ADVERTISEMENT).
        b[field::COUNT] = count;
        for (i, a) in self.addrs.iter().enumerate() {
            a.write(b, field::ADDRS + A::LEN * i);
        }
        let mut p = Packet {
            buffer: b,
            family: PhantomData,
        };
        p.set_version_type(VERSION, TYPE_ADVERT);
        p.set_vrid(self.vrid);
        p.set_priority(self.priority);
        p.set_max_advert_interval_cs(self.interval_cs);
        p.fill_checksum(form, src, dst);
        Ok(p)
    }

    /// Writes a whole untagged Ethernet + IP + VRRP advertisement frame
    /// addressed as `to` says: Ethernet + IPv4 for `Repr<Ipv4Addr>`,
    /// Ethernet + IPv6 for `Repr<Ipv6Addr>` (EtherType 0x86dd, hop limit
    /// 255, next header 112). Frames shorter than the 60-byte Ethernet
    /// minimum are zero-padded to 60 (the IP length field stays exact).
    ///
    /// Returns the frame length. Errors as [`emit`](Repr::emit), and
    /// [`Error::Truncated`] if `buf` is shorter than the frame; nothing is
    /// written on error.
    pub fn emit_frame(
        &self,
        buf: &mut [u8],
        to: &Envelope<A>,
        form: ChecksumForm,
    ) -> Result<usize> {
        if self.addrs.is_empty() {
            return Err(Error::Malformed);
        }
        let vrrp_len = self.buffer_len();
        // At most 8 + 16 * 255 bytes.
        let payload_len = u16::try_from(vrrp_len).map_err(|_| Error::Malformed)?;
        let eth = ethernet::Repr {
            dst: to.dst_mac,
            src: to.src_mac,
            ethertype: A::ETHERTYPE,
        };
        let end = eth.header_len() + A::IP_HEADER_LEN + vrrp_len;
        let len = end.max(ethernet::MIN_FRAME_LEN);
        let b = buf.get_mut(..len).ok_or(Error::Truncated)?;
        let mut f = eth.emit(b)?;
        let payload = A::emit_ip(f.payload_mut(), to.src_ip, to.dst_ip, to.ident, payload_len)?;
        self.emit(payload, form, to.src_ip, to.dst_ip)?;
        b[end..].fill(0);
        Ok(len)
    }
}

/// Up to 255 addresses held inline (no allocation); derefs to a slice.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddrList<A: VrrpAddr = Ipv4Addr> {
    len: u8,
    buf: [A; MAX_ADDRS],
}

impl<A: VrrpAddr> AddrList<A> {
    /// The first 255 addresses of `addrs`.
    pub fn from_slice(addrs: &[A]) -> AddrList<A> {
        let mut l = AddrList::default();
        for a in addrs {
            if !l.push(*a) {
                break;
            }
        }
        l
    }

    /// Appends `a`; false (and nothing added) when the list holds 255.
    pub fn push(&mut self, a: A) -> bool {
        let Some(slot) = self.buf.get_mut(usize::from(self.len)) else {
            return false;
        };
        *slot = a;
        self.len += 1;
        true
    }

    /// The same addresses as `other`, in any order and counting repeats.
    pub fn same_set(&self, other: &[A]) -> bool {
        if self.len() != other.len() {
            return false;
        }
        let n = self.len();
        let mut a: AddrList<A> = *self;
        let mut b = AddrList::from_slice(other);
        a.buf[..n].sort_unstable();
        b.buf[..n].sort_unstable();
        a[..] == b[..]
    }

    /// Whether the first address is link-local, as RFC 9568 §5.2.9 requires
    /// of an IPv6 list ("the first address MUST be the IPv6 link-local
    /// address associated with the Virtual Router"). Not a receive check
    /// (see the module docs); for logging a peer that breaks the rule.
    pub fn first_is_link_local(&self) -> bool {
        self.first().is_some_and(|a| a.is_link_local())
    }
}

impl<A: VrrpAddr> Default for AddrList<A> {
    fn default() -> Self {
        AddrList {
            len: 0,
            buf: [A::UNSPECIFIED; MAX_ADDRS],
        }
    }
}

impl<A: VrrpAddr> core::ops::Deref for AddrList<A> {
    type Target = [A];
    fn deref(&self) -> &[A] {
        &self.buf[..usize::from(self.len)]
    }
}

impl<A: VrrpAddr> fmt::Debug for AddrList<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// A received advertisement that passed the packet-level checks of RFC 9568
/// §7.1, in host form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advert<A: VrrpAddr = Ipv4Addr> {
    pub vrid: u8,
    /// 0 = the master is stopping; 255 = sent by the address owner.
    pub priority: u8,
    /// Max Advertise Interval, centiseconds (0..=4095, as received).
    pub interval_cs: u16,
    pub addrs: AddrList<A>,
    /// The checksum form the sender used (always
    /// [`ChecksumForm::PseudoHeader`] for IPv6).
    pub checksum_form: ChecksumForm,
}

impl<A: VrrpAddr> Advert<A> {
    /// An advertisement as a sender would build it (for simulations and tests).
    pub fn new(vrid: u8, priority: u8, interval_cs: u16, addrs: &[A]) -> Advert<A> {
        Advert {
            vrid,
            priority,
            interval_cs: interval_cs.min(MAX_INTERVAL_CS),
            addrs: AddrList::from_slice(addrs),
            checksum_form: ChecksumForm::default(),
        }
    }

    /// The advertisement's fields, to emit it again.
    pub fn repr(&self) -> Repr<A> {
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
/// The first seven come from [`parse_advert`] and [`parse_advert_ipv6`];
/// the rest from `podlb_core::vrrp::Router::handle_advert`, which knows the
/// configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum AdvertDrop {
    /// IPv4 TTL or IPv6 Hop Limit not 255 (RFC 9568 §5.1.1.3, §5.1.2.3),
    /// with the check on.
    BadTtl,
    /// Version not 3 (RFC 9568 §7.1, §5.2.1).
    BadVersion,
    /// Type not 1, ADVERTISEMENT (RFC 9568 §5.2.2).
    BadType,
    /// No checksum form verifies (RFC 9568 §7.1, §5.2.8).
    BadChecksum,
    /// Shorter than the header or than its address count claims, or (IPv6)
    /// a fragment (RFC 9568 §7.1 "contains the complete VRRP packet").
    Truncated,
    /// Address count zero (RFC 9568 §5.2.5).
    BadCount,
    /// An IPv6 packet whose extension header chain cannot be walked or does
    /// not end in VRRP, next header 112 (RFC 8200 §4; [`parse_advert_ipv6`]).
    NotVrrp,
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
    pub const ALL: [AdvertDrop; 12] = [
        AdvertDrop::BadTtl,
        AdvertDrop::BadVersion,
        AdvertDrop::BadType,
        AdvertDrop::BadChecksum,
        AdvertDrop::Truncated,
        AdvertDrop::BadCount,
        AdvertDrop::NotVrrp,
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
            AdvertDrop::NotVrrp => "not_vrrp",
            AdvertDrop::VridMismatch => "vrid_mismatch",
            AdvertDrop::LocalOwner => "local_owner",
            AdvertDrop::AddrListMismatch => "addr_list_mismatch",
            AdvertDrop::OwnAdvert => "own_advert",
            AdvertDrop::NotRunning => "not_running",
        }
    }
}

/// The packet-level receive checks of RFC 9568 §7.1 on the VRRP message
/// `payload` (the IP payload: for IPv6 the bytes after the extension
/// headers, see [`parse_advert_ipv6`]) that arrived from `ip_src` to
/// `ip_dst` with `ttl` (the IPv4 TTL or the IPv6 Hop Limit).
///
/// `check_ttl` false skips the TTL check (unicast peers across routers; a
/// keepalived-style extension). For IPv4 the checksum is accepted in either
/// [`ChecksumForm`], and a pseudo-header computed over the multicast group
/// instead of the unicast destination is accepted too (keepalived ≤ 1.3.6
/// in unicast mode), reported as [`ChecksumForm::PseudoHeader`]. For IPv6
/// only the RFC 8200 §8.1 pseudo-header over the real source and
/// destination verifies.
pub fn parse_advert<A: VrrpAddr>(
    ip_src: A,
    ip_dst: A,
    ttl: u8,
    payload: &[u8],
    check_ttl: bool,
) -> core::result::Result<Advert<A>, AdvertDrop> {
    // RFC 9568 §5.1.1.3 (IPv4), §5.1.2.3 (IPv6): "A VRRP Router receiving a
    // packet with the TTL [Hop Limit] not equal to 255 MUST discard the
    // packet".
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
    let p = match Packet::<_, A>::new_checked(payload) {
        Ok(p) => p,
        Err(Error::Malformed) => return Err(AdvertDrop::BadCount),
        Err(_) => return Err(AdvertDrop::Truncated),
    };
    // RFC 9568 §7.1: "MUST verify the VRRP checksum".
    let form = match p.verify(ip_src, ip_dst) {
        Some(f) => f,
        None if A::GROUP_PSEUDO_HEADER_QUIRK
            && ip_dst != A::MULTICAST
            && p.verify(ip_src, A::MULTICAST).is_some() =>
        {
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

/// [`parse_advert`] for a whole IPv6 packet (fixed header first): walks the
/// extension headers to the VRRP message ([`ipv6::Packet::upper_layer`])
/// and checks it with the packet's source, destination and Hop Limit.
///
/// Drops, besides those of [`parse_advert`]: [`AdvertDrop::NotVrrp`] when
/// the chain cannot be walked or ends in another protocol;
/// [`AdvertDrop::Truncated`] for a fragment that is not atomic (RFC 6946:
/// offset 0 and no more fragments is processed as a whole packet), since
/// a fragment does not hold the complete message (RFC 9568 §7.1).
pub fn parse_advert_ipv6<T: AsRef<[u8]>>(
    ip: &ipv6::Packet<T>,
    check_hop_limit: bool,
) -> core::result::Result<Advert<Ipv6Addr>, AdvertDrop> {
    let ul = ip.upper_layer().map_err(|_| AdvertDrop::NotVrrp)?;
    if ul.fragment.is_some_and(|f| !f.is_atomic()) {
        return Err(AdvertDrop::Truncated);
    }
    if ul.protocol != ipv6::PROTO_VRRP {
        return Err(AdvertDrop::NotVrrp);
    }
    // upper_layer() keeps offset + len within the checked packet.
    let msg = ip
        .as_ref()
        .get(ul.offset..ul.offset + ul.len)
        .ok_or(AdvertDrop::Truncated)?;
    parse_advert(ip.src(), ip.dst(), ip.hop_limit(), msg, check_hop_limit)
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
        let p = Packet::<_, Ipv4Addr>::new_checked(&b[..]).unwrap();
        assert_eq!((p.version(), p.msg_type()), (3, 1));
        assert_eq!((p.vrid(), p.priority(), p.count()), (51, 200, 2));
        assert_eq!(p.max_advert_interval_cs(), 100);
        assert_eq!(p.checksum(), 0x7a2b);
        assert_eq!(p.addresses().collect::<Vec<_>>(), VIPS);
        assert_eq!(p.verify(SRC, MULTICAST_V4), Some(ChecksumForm::Plain));

        // Reserved bits are ignored on receive (RFC 9568 §5.2.6).
        let mut r = b;
        r[4] |= 0xf0;
        let p = Packet::<_, Ipv4Addr>::new_checked(&r[..]).unwrap();
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
        assert_eq!(
            Packet::<_, Ipv4Addr>::new_checked(&good[..7]),
            Err(Error::Truncated)
        );

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
        if let Ok(p) = Packet::<_, Ipv4Addr>::new_checked(b) {
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

#[cfg(test)]
mod tests_v6 {
    use super::*;
    use etherparse::{IpNumber, Ipv6FlowLabel, Ipv6Header};
    use proptest::prelude::*;

    /// The sender's link-local address (RFC 9568 §5.1.2.1).
    const SRC: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
    const PEER: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2);
    /// fe80::200:5eff:fe00:233 (the virtual router's link-local address,
    /// first as RFC 9568 §5.2.9 requires) and 2001:2::10.
    const VIPS: [Ipv6Addr; 2] = [
        Ipv6Addr::new(0xfe80, 0, 0, 0, 0x0200, 0x5eff, 0xfe00, 0x0233),
        Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x10),
    ];

    /// An IPv6 advertisement laid out by hand from RFC 9568 §5.1: version 3
    /// type 1, VRID 51, priority 200, 2 addresses, interval 100 cs, then the
    /// two 16-octet addresses of `VIPS`. The checksums were computed outside
    /// this crate (a plain RFC 1071 loop in Python over the RFC 8200 §8.1
    /// pseudo-header: source, destination, 32-bit length 40, three zero
    /// bytes, next header 112).
    fn fixture(check: [u8; 2]) -> [u8; 40] {
        let mut b = [0u8; 40];
        b[..8].copy_from_slice(&[0x31, 51, 200, 2, 0x00, 100, check[0], check[1]]);
        b[8..24].copy_from_slice(&[
            0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0x02, 0x00, 0x5e, 0xff, 0xfe, 0x00, 0x02, 0x33,
        ]);
        b[24..].copy_from_slice(&[0x20, 0x01, 0, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10]);
        b
    }
    /// fe80::1 -> ff02::12.
    const PSEUDO_MCAST: [u8; 2] = [0x88, 0x6f];
    /// fe80::1 -> fe80::2 (unicast).
    const PSEUDO_UCAST: [u8; 2] = [0x89, 0x01];
    /// Over the message only: not a valid IPv6 checksum.
    const PLAIN: [u8; 2] = [0x86, 0x9e];

    /// The checksum of `msg` (checksum field included as it is) from
    /// `src` to `dst`, the pseudo-header laid out byte by byte per RFC 8200
    /// §8.1 and summed with a naive RFC 1071 loop: independent of
    /// `checksum::pseudo_header_v6`. Zero when the checksum is right.
    fn naive(src: Ipv6Addr, dst: Ipv6Addr, msg: &[u8]) -> u16 {
        let mut b = Vec::new();
        b.extend(src.octets());
        b.extend(dst.octets());
        b.extend(u32::try_from(msg.len()).unwrap().to_be_bytes());
        b.extend([0, 0, 0, 112]);
        b.extend(msg);
        if b.len() % 2 == 1 {
            b.push(0);
        }
        let mut s: u64 = b
            .chunks(2)
            .map(|w| u64::from(u16::from_be_bytes([w[0], w[1]])))
            .sum();
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        !u16::try_from(s).unwrap()
    }

    #[test]
    fn constants() {
        assert_eq!(virtual_mac_v6(51), MacAddr([0, 0, 0x5e, 0, 2, 51]));
        assert_ne!(virtual_mac_v6(51), virtual_mac(51));
        assert_eq!(MULTICAST_MAC_V6.to_string(), "33:33:00:00:00:12");
        assert_eq!(crate::ndp::multicast_mac(MULTICAST_V6), MULTICAST_MAC_V6);
        assert_eq!(MULTICAST_V6, "ff02::12".parse::<Ipv6Addr>().unwrap());
        assert!(MULTICAST_V6.is_multicast());
        assert_eq!(ipv6::PROTO_VRRP, 112);
        assert_eq!(ethernet::ETHERTYPE_IPV6, 0x86dd);
        assert_eq!(HOP_LIMIT, 255);
        assert_eq!((advert_len_v6(2), Ipv6Addr::advert_len(2)), (40, 40));
        assert_eq!(
            (Ipv4Addr::FAMILY, Ipv6Addr::FAMILY),
            (Family::V4, Family::V6)
        );
        assert_eq!(Family::V6.as_str(), "ipv6");
        // Modified EUI-64 of 00:00:5e:00:02:33 (RFC 4291 Appendix A):
        // the U/L bit flipped, ff:fe in the middle.
        assert_eq!(virtual_link_local(51), VIPS[0]);
        assert_eq!(
            virtual_link_local(255),
            "fe80::200:5eff:fe00:2ff".parse::<Ipv6Addr>().unwrap()
        );
        assert!(virtual_link_local(1).is_link_local());
        // The tie-break order (RFC 9568 §6.4.3) is the unsigned one.
        assert!(PEER.to_u128() > SRC.to_u128());
        assert!(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0x8000).to_u128() > PEER.to_u128());
    }

    #[test]
    fn fixture_checksums_are_independent() {
        assert_eq!(naive(SRC, MULTICAST_V6, &fixture(PSEUDO_MCAST)), 0);
        assert_eq!(naive(SRC, PEER, &fixture(PSEUDO_UCAST)), 0);
        assert_ne!(naive(SRC, PEER, &fixture(PSEUDO_MCAST)), 0);
    }

    #[test]
    fn view_reads_fixture() {
        let b = fixture(PSEUDO_MCAST);
        let p = Packet::<_, Ipv6Addr>::new_checked(&b[..]).unwrap();
        assert_eq!((p.version(), p.msg_type()), (3, 1));
        assert_eq!((p.vrid(), p.priority(), p.count()), (51, 200, 2));
        assert_eq!(p.max_advert_interval_cs(), 100);
        assert_eq!(p.checksum(), 0x886f);
        assert_eq!(p.addresses().collect::<Vec<_>>(), VIPS);
        assert_eq!(
            p.verify(SRC, MULTICAST_V6),
            Some(ChecksumForm::PseudoHeader)
        );
        assert_eq!(p.verify(SRC, PEER), None);
        // No plain form for IPv6 (RFC 9568 §5.2.8).
        let b = fixture(PLAIN);
        let p = Packet::<_, Ipv6Addr>::new_checked(&b[..]).unwrap();
        assert_eq!(p.verify(SRC, MULTICAST_V6), None);
        // The same 40 bytes are 16 octets an address here, not 4.
        assert_eq!(
            Packet::<_, Ipv6Addr>::new_checked(&b[..39]),
            Err(Error::Truncated)
        );
        assert!(Packet::<_, Ipv4Addr>::new_checked(&b[..16]).is_ok());
    }

    #[test]
    fn emit_matches_fixture() {
        let r = Repr::new(51, 200, 100, &VIPS);
        assert_eq!(r.buffer_len(), 40);
        // IPv6 has one checksum form whatever is asked.
        for form in [ChecksumForm::Plain, ChecksumForm::PseudoHeader] {
            for (dst, check) in [(MULTICAST_V6, PSEUDO_MCAST), (PEER, PSEUDO_UCAST)] {
                let mut buf = [0xee; 44];
                let p = r.emit(&mut buf, form, SRC, dst).unwrap();
                assert_eq!(p.message().len(), 40);
                assert_eq!(Repr::parse(&p), Ok(r));
                assert_eq!(p.verify(SRC, dst), Some(ChecksumForm::PseudoHeader));
                assert_eq!(buf[..40], fixture(check), "{form:?} {dst}");
                assert_eq!(buf[40..], [0xee; 4]);
            }
        }
        let mut buf = [0u8; 64];
        assert_eq!(
            r.emit(&mut buf[..39], ChecksumForm::PseudoHeader, SRC, PEER)
                .err(),
            Some(Error::Truncated)
        );
        assert_eq!(buf, [0u8; 64], "nothing written");
        let many = Repr::new(1, 1, 1, &[SRC; 256]);
        let mut big = [0u8; 8 + 16 * 255];
        assert_eq!(
            many.emit(&mut big, ChecksumForm::PseudoHeader, SRC, PEER)
                .map(|p| p.message().len()),
            Ok(4088)
        );
        assert_eq!(naive(SRC, PEER, &big), 0);
    }

    /// An IPv6 packet around `msg`, its fixed header written by etherparse.
    fn packet(src: Ipv6Addr, dst: Ipv6Addr, hop_limit: u8, nh: u8, chain: &[u8]) -> Vec<u8> {
        let h = Ipv6Header {
            traffic_class: 0,
            flow_label: Ipv6FlowLabel::ZERO,
            payload_length: u16::try_from(chain.len()).unwrap(),
            next_header: IpNumber(nh),
            hop_limit,
            source: src.octets(),
            destination: dst.octets(),
        };
        let mut v = h.to_bytes().to_vec();
        v.extend(chain);
        v
    }

    #[test]
    fn frame_matches_etherparse() {
        let r = Repr::new(51, 200, 100, &VIPS);
        let env = Envelope::multicast(51, SRC);
        assert_eq!(
            env,
            Envelope {
                src_mac: virtual_mac_v6(51),
                dst_mac: MULTICAST_MAC_V6,
                src_ip: SRC,
                dst_ip: MULTICAST_V6,
                ident: 0,
            }
        );
        let mut buf = [0xaau8; 128];
        let n = r.emit_frame(&mut buf, &env, ChecksumForm::Plain).unwrap();
        assert_eq!(n, 14 + 40 + 40, "above the Ethernet minimum: no padding");
        assert_eq!(&buf[..6], &MULTICAST_MAC_V6.0);
        assert_eq!(&buf[6..12], &[0, 0, 0x5e, 0, 2, 51]);
        assert_eq!(&buf[12..14], &[0x86, 0xdd]);
        let (ip, rest) = Ipv6Header::from_slice(&buf[14..n]).unwrap();
        let want = Ipv6Header {
            traffic_class: 0,
            flow_label: Ipv6FlowLabel::ZERO,
            payload_length: 40,
            next_header: IpNumber(112),
            hop_limit: 255,
            source: SRC.octets(),
            destination: MULTICAST_V6.octets(),
        };
        assert_eq!(ip, want);
        assert_eq!(rest, fixture(PSEUDO_MCAST));
        assert_eq!(buf[n], 0xaa, "nothing written past the frame");

        // An etherparse-built header around the hand-laid fixture, unicast.
        let pkt = packet(SRC, PEER, 255, 112, &fixture(PSEUDO_UCAST));
        let v = ipv6::Packet::new_checked(&pkt[..]).unwrap();
        let a = parse_advert_ipv6(&v, true).unwrap();
        assert_eq!(a.checksum_form, ChecksumForm::PseudoHeader);
        assert_eq!((a.vrid, a.priority, a.interval_cs), (51, 200, 100));
        assert_eq!(&a.addrs[..], &VIPS);
        assert!(a.addrs.first_is_link_local());
        assert_eq!(a.repr(), r);
        // The same through the generic entry point, with the payload.
        assert_eq!(parse_advert(SRC, PEER, 255, v.payload(), true), Ok(a));

        let mut short = [0u8; 93];
        assert_eq!(
            r.emit_frame(&mut short, &env, ChecksumForm::Plain),
            Err(Error::Truncated)
        );
        assert_eq!(short, [0u8; 93], "nothing written");
        let none = Repr::<Ipv6Addr>::new(51, 200, 100, &[]);
        assert_eq!(
            none.emit_frame(&mut buf, &env, ChecksumForm::Plain),
            Err(Error::Malformed)
        );
    }

    #[test]
    fn ipv4_and_ipv6_frames_do_not_mix() {
        // RFC 9568: the IPv4 and IPv6 virtual routers of one VRID are
        // separate instances; their frames differ in EtherType, group and
        // MAC (§7.3).
        let mut v6 = [0u8; 128];
        let n6 = Repr::new(51, 200, 100, &VIPS)
            .emit_frame(&mut v6, &Envelope::multicast(51, SRC), ChecksumForm::Plain)
            .unwrap();
        let mut v4 = [0u8; 128];
        let src4 = Ipv4Addr::new(198, 18, 0, 1);
        let n4 = Repr::new(51, 200, 100, &[Ipv4Addr::new(198, 18, 0, 10)])
            .emit_frame(&mut v4, &Envelope::multicast(51, src4), ChecksumForm::Plain)
            .unwrap();
        let e4 = ethernet::Frame::new_checked(&v4[..n4]).unwrap();
        let e6 = ethernet::Frame::new_checked(&v6[..n6]).unwrap();
        assert_eq!(
            (e4.ethertype(), e6.ethertype()),
            (ETHERTYPE_IPV4, ETHERTYPE_IPV6)
        );
        assert_ne!(e4.src(), e6.src());
        assert_ne!(e4.dst(), e6.dst());
        assert_eq!(
            ipv4::Packet::new_checked(e6.payload()),
            Err(Error::Malformed)
        );
        assert_eq!(
            ipv6::Packet::new_checked(e4.payload()).err(),
            Some(Error::Malformed)
        );
        // An IPv6 message read as IPv4 does not verify either.
        assert_eq!(
            parse_advert(src4, MULTICAST_V4, 255, &fixture(PSEUDO_MCAST), true),
            Err(AdvertDrop::BadChecksum)
        );
    }

    #[test]
    fn every_drop_reason() {
        let good = fixture(PSEUDO_MCAST);
        let parse = |b: &[u8], hl| parse_advert(SRC, MULTICAST_V6, hl, b, true);
        assert!(parse(&good, 255).is_ok());
        // RFC 9568 §5.1.2.3: Hop Limit 255 only.
        assert_eq!(parse(&good, 254), Err(AdvertDrop::BadTtl));
        assert_eq!(parse(&good, 1), Err(AdvertDrop::BadTtl));
        assert!(parse_advert(SRC, MULTICAST_V6, 1, &good, false).is_ok());
        let mut b = good;
        b[0] = 0x21;
        assert_eq!(parse(&b, 255), Err(AdvertDrop::BadVersion));
        b[0] = 0x32;
        assert_eq!(parse(&b, 255), Err(AdvertDrop::BadType));
        let mut b = good;
        b[39] ^= 1;
        assert_eq!(parse(&b, 255), Err(AdvertDrop::BadChecksum));
        assert_eq!(parse(&fixture(PLAIN), 255), Err(AdvertDrop::BadChecksum));
        // The pseudo-header over the group does not pass for a unicast
        // destination (that keepalived quirk is IPv4's).
        assert_eq!(
            parse_advert(SRC, PEER, 255, &good, true),
            Err(AdvertDrop::BadChecksum)
        );
        let mut b = good;
        b[3] = 0;
        assert_eq!(parse(&b, 255), Err(AdvertDrop::BadCount));
        let mut b = good;
        b[3] = 3; // claims 3 addresses, holds 2
        assert_eq!(parse(&b, 255), Err(AdvertDrop::Truncated));
        for n in 0..40 {
            assert_eq!(parse(&good[..n], 255), Err(AdvertDrop::Truncated), "{n}");
        }

        // Through the IPv6 packet: the Hop Limit is the header's.
        let pkt = |hl| packet(SRC, MULTICAST_V6, hl, 112, &good);
        let ok = pkt(255);
        let v = ipv6::Packet::new_checked(&ok[..]).unwrap();
        assert!(parse_advert_ipv6(&v, true).is_ok());
        let low = pkt(64);
        let v = ipv6::Packet::new_checked(&low[..]).unwrap();
        assert_eq!(parse_advert_ipv6(&v, true), Err(AdvertDrop::BadTtl));
        assert!(parse_advert_ipv6(&v, false).is_ok());
        // A checksum over another source fails.
        let other = packet(PEER, MULTICAST_V6, 255, 112, &good);
        let v = ipv6::Packet::new_checked(&other[..]).unwrap();
        assert_eq!(parse_advert_ipv6(&v, true), Err(AdvertDrop::BadChecksum));
        // Not VRRP.
        let udp = packet(SRC, MULTICAST_V6, 255, ipv6::PROTO_UDP, &good);
        let v = ipv6::Packet::new_checked(&udp[..]).unwrap();
        assert_eq!(parse_advert_ipv6(&v, true), Err(AdvertDrop::NotVrrp));
        // A Hop-by-Hop header that runs past the payload.
        let bad = packet(SRC, MULTICAST_V6, 255, ipv6::NH_HOP_BY_HOP, &[112, 9]);
        let v = ipv6::Packet::new_checked(&bad[..]).unwrap();
        assert_eq!(parse_advert_ipv6(&v, true), Err(AdvertDrop::NotVrrp));
        // The payload cut short of the message.
        let mut cut = ok.clone();
        cut[5] = 39; // Payload Length 39
        let v = ipv6::Packet::new_checked(&cut[..]).unwrap();
        assert_eq!(parse_advert_ipv6(&v, true), Err(AdvertDrop::Truncated));
        // Ethernet padding after the packet is not part of the message.
        let mut padded = ok.clone();
        padded.extend([0u8; 6]);
        let v = ipv6::Packet::new_checked(&padded[..]).unwrap();
        assert!(parse_advert_ipv6(&v, true).is_ok());
    }

    /// The Fragment header by hand (RFC 8200 §4.5; etherparse 0.16 lays it
    /// out wrongly, decisions §65): next header, reserved, offset/M, ident.
    fn fragment(next: u8, offset_m: u16) -> [u8; 8] {
        let o = offset_m.to_be_bytes();
        [next, 0, o[0], o[1], 0, 0, 0x12, 0x34]
    }

    #[test]
    fn extension_headers() {
        let msg = fixture(PSEUDO_MCAST);
        let with = |nh: u8, ext: &[u8]| {
            let mut chain = ext.to_vec();
            chain.extend(msg);
            packet(SRC, MULTICAST_V6, 255, nh, &chain)
        };
        // Hop-by-Hop with a PadN option (RFC 8200 §4.2), then VRRP.
        let hbh = with(ipv6::NH_HOP_BY_HOP, &[112, 0, 1, 4, 0, 0, 0, 0]);
        let v = ipv6::Packet::new_checked(&hbh[..]).unwrap();
        let a = parse_advert_ipv6(&v, true).unwrap();
        assert_eq!(&a.addrs[..], &VIPS);
        // An atomic fragment is a whole packet (RFC 6946).
        let atomic = with(ipv6::NH_FRAGMENT, &fragment(112, 0));
        let v = ipv6::Packet::new_checked(&atomic[..]).unwrap();
        assert!(parse_advert_ipv6(&v, true).is_ok());
        // A first fragment with more to come, and a later one: not complete.
        let first = with(ipv6::NH_FRAGMENT, &fragment(112, 1));
        let v = ipv6::Packet::new_checked(&first[..]).unwrap();
        assert_eq!(parse_advert_ipv6(&v, true), Err(AdvertDrop::Truncated));
        let later = with(ipv6::NH_FRAGMENT, &fragment(112, 8 << 3));
        let v = ipv6::Packet::new_checked(&later[..]).unwrap();
        assert_eq!(parse_advert_ipv6(&v, true), Err(AdvertDrop::Truncated));
    }

    #[test]
    fn first_address_not_link_local_is_accepted() {
        // RFC 9568 §5.2.9 binds the sender; on receive podlb does not drop
        // (see the module docs and decisions §66).
        let global_first = [VIPS[1], VIPS[0]];
        let r = Repr::new(51, 200, 100, &global_first);
        let mut buf = [0u8; 40];
        r.emit(&mut buf, ChecksumForm::PseudoHeader, SRC, MULTICAST_V6)
            .unwrap();
        let a = parse_advert(SRC, MULTICAST_V6, 255, &buf, true).unwrap();
        assert!(!a.addrs.first_is_link_local());
        assert_eq!(&a.addrs[..], &global_first);
        assert!(!AddrList::<Ipv6Addr>::default().first_is_link_local());
        assert_eq!(
            format!("{:?}", a.addrs),
            "[2001:2::10, fe80::200:5eff:fe00:233]"
        );
    }

    fn check_all(b: &[u8]) {
        if let Ok(p) = Packet::<_, Ipv6Addr>::new_checked(b) {
            let _ = (p.version(), p.msg_type(), p.vrid(), p.priority());
            let _ = (
                p.max_advert_interval_cs(),
                p.checksum(),
                p.verify(SRC, PEER),
            );
            assert_eq!(p.addresses().count(), usize::from(p.count()));
        }
        for hl in [255, 0] {
            let _ = parse_advert(SRC, PEER, hl, b, true);
            let _ = parse_advert(SRC, MULTICAST_V6, hl, b, false);
        }
        if let Ok(v) = ipv6::Packet::new_checked(b) {
            let _ = parse_advert_ipv6(&v, true);
        }
        // And as the payload of a well-formed IPv6 packet.
        if let Ok(chain) = u16::try_from(b.len()) {
            let mut pkt = packet(SRC, MULTICAST_V6, 255, 112, &[]);
            pkt[4..6].copy_from_slice(&chain.to_be_bytes());
            pkt.extend(b);
            let v = ipv6::Packet::new_checked(&pkt[..]).unwrap();
            assert_eq!(
                parse_advert_ipv6(&v, true),
                parse_advert(SRC, MULTICAST_V6, 255, b, true)
            );
        }
    }

    proptest! {
        #[test]
        fn never_panics(mut b in proptest::collection::vec(any::<u8>(), 0..4200)) {
            check_all(&b);
            if let Some(x) = b.first_mut() { *x = 0x31; }
            check_all(&b);
            if let Some(x) = b.first_mut() { *x = 0x60; }
            check_all(&b);
        }

        #[test]
        fn round_trip(
            vrid in any::<u8>(),
            prio in any::<u8>(),
            interval in 0u16..=0x0fff,
            addrs in proptest::collection::vec(any::<u128>().prop_map(Ipv6Addr::from), 1..40),
            src in any::<u128>().prop_map(Ipv6Addr::from),
            dst in any::<u128>().prop_map(Ipv6Addr::from),
        ) {
            let mut buf = [0u8; 8 + 16 * 40];
            let r = Repr::new(vrid, prio, interval, &addrs);
            let p = r.emit(&mut buf, ChecksumForm::PseudoHeader, src, dst).unwrap();
            prop_assert_eq!(Repr::parse(&p), Ok(r));
            let n = r.buffer_len();
            prop_assert_eq!(n, 8 + 16 * addrs.len());
            prop_assert_eq!(naive(src, dst, &buf[..n]), 0);
            let a = parse_advert(src, dst, 255, &buf[..n], true).unwrap();
            prop_assert_eq!(a.repr(), r);
            prop_assert_eq!(a.checksum_form, ChecksumForm::PseudoHeader);

            // And as a frame, through the Ethernet and IPv6 views.
            let mut frame = [0u8; 14 + 40 + 8 + 16 * 40];
            let env = Envelope { dst_mac: MacAddr([2, 0, 0, 0, 0, 1]), ..Envelope::multicast(vrid, src) };
            let env = Envelope { dst_ip: dst, ..env };
            let len = r.emit_frame(&mut frame, &env, ChecksumForm::Plain).unwrap();
            prop_assert_eq!(len, 14 + 40 + n);
            let e = ethernet::Frame::new_checked(&frame[..len]).unwrap();
            prop_assert_eq!(e.ethertype(), ETHERTYPE_IPV6);
            let v = ipv6::Packet::new_checked(e.payload()).unwrap();
            prop_assert_eq!((v.src(), v.dst(), v.hop_limit()), (src, dst, 255));
            prop_assert_eq!(parse_advert_ipv6(&v, true), Ok(a));
        }
    }
}
