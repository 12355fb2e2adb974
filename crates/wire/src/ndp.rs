//! Neighbor Discovery for IPv6 (RFC 4861), the part podlb speaks: Neighbor
//! Solicitation (§4.3) and Neighbor Advertisement (§4.4) with their
//! link-layer address options (§4.6.1), and the solicited-node multicast
//! address (RFC 4291 §2.7.1) and Ethernet multicast MAC (RFC 2464 §7) a
//! solicitation is sent to.
//!
//! Both messages are ICMPv6 messages: the views are over the same bytes as
//! an [`icmpv6::Packet`] (the IPv6 upper-layer data, exactly), and the
//! checksum is ICMPv6's ([`NeighborSolicit::verify_checksum`], filled by
//! the Reprs' `emit`, which therefore take the IPv6 source and destination).

use super::icmpv6::{self, TYPE_NEIGHBOR_ADVERT, TYPE_NEIGHBOR_SOLICIT};
use super::{be16, ip6_at, Error, Ipv6Addr, MacAddr, Result};

/// Type, code, checksum, reserved/flags and the target address: the fixed
/// part of both messages (RFC 4861 §4.3, §4.4).
pub const HEADER_LEN: usize = 24;
/// Source Link-Layer Address option type (RFC 4861 §4.6.1).
pub const OPT_SOURCE_LL_ADDR: u8 = 1;
/// Target Link-Layer Address option type (RFC 4861 §4.6.1).
pub const OPT_TARGET_LL_ADDR: u8 = 2;
/// A link-layer address option for Ethernet: type, length 1 (8 octets)
/// and the 6-byte MAC (RFC 4861 §4.6.1, RFC 2464 §6).
pub const LL_OPT_LEN: usize = 8;
/// The Hop Limit every Neighbor Discovery message is sent and must be
/// received with (RFC 4861 §7.1.1, §7.1.2: "The IP Hop Limit field has a
/// value of 255", i.e. no router forwarded it).
pub const HOP_LIMIT: u8 = 255;

// RFC 4861 §4.4: R, S, O in the top bits of the word after the checksum.
const FLAG_ROUTER: u8 = 0x80;
const FLAG_SOLICITED: u8 = 0x40;
const FLAG_OVERRIDE: u8 = 0x20;

/// `ff02::1:ff00:0/104` (RFC 4291 §2.7.1).
const SOLICITED_NODE_PREFIX: u128 = 0xff02_0000_0000_0000_0000_0001_ff00_0000;
const LOW_24: u128 = 0x00ff_ffff;

mod field {
    use core::ops::Range;
    // RFC 4861 §4.3 "Neighbor Solicitation Message Format", §4.4
    // "Neighbor Advertisement Message Format".
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: usize = 2;
    pub const FLAGS: usize = 4;
    pub const TARGET: Range<usize> = 8..24;
    pub const OPTIONS: usize = 24;
}

/// The solicited-node multicast address of `addr` (RFC 4291 §2.7.1):
/// `ff02::1:ff00:0/104` followed by the low 24 bits of `addr`. A Neighbor
/// Solicitation for `addr` is sent there (RFC 4861 §7.2.2).
#[inline]
pub fn solicited_node(addr: Ipv6Addr) -> Ipv6Addr {
    Ipv6Addr::from(SOLICITED_NODE_PREFIX | (u128::from(addr) & LOW_24))
}

/// `addr` is a solicited-node multicast address (in `ff02::1:ff00:0/104`).
#[inline]
pub fn is_solicited_node(addr: Ipv6Addr) -> bool {
    u128::from(addr) & !LOW_24 == SOLICITED_NODE_PREFIX
}

/// The Ethernet destination of an IPv6 multicast packet (RFC 2464 §7):
/// `33:33` followed by the last four octets of the address. Meaningful for
/// multicast addresses; computed for any.
#[inline]
pub fn multicast_mac(addr: Ipv6Addr) -> MacAddr {
    let o = addr.octets();
    MacAddr([0x33, 0x33, o[12], o[13], o[14], o[15]])
}

/// One option of a Neighbor Discovery message (RFC 4861 §4.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NdOption<'a> {
    /// The Type: [`OPT_SOURCE_LL_ADDR`], [`OPT_TARGET_LL_ADDR`], or any
    /// other, which receivers "MUST silently ignore" (RFC 4861 §4.3, §4.4).
    pub kind: u8,
    /// The option after its type and length bytes: `8 * Length - 2` bytes.
    pub data: &'a [u8],
}

impl NdOption<'_> {
    /// The MAC of an Ethernet link-layer address option: a Source or
    /// Target Link-Layer Address option of length 1 (RFC 2464 §6). `None`
    /// for other options and lengths (other link layers).
    #[inline]
    pub fn ll_addr(&self) -> Option<MacAddr> {
        let ll = matches!(self.kind, OPT_SOURCE_LL_ADDR | OPT_TARGET_LL_ADDR);
        if ll && self.data.len() == LL_OPT_LEN - 2 {
            MacAddr::from_bytes(self.data)
        } else {
            None
        }
    }
}

/// The options of a checked message, in order (see
/// [`NeighborSolicit::options`]).
#[derive(Debug, Clone)]
pub struct Options<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Options<'a> {
    type Item = NdOption<'a>;

    fn next(&mut self) -> Option<NdOption<'a>> {
        // RFC 4861 §4.6 "Length 8-bit unsigned integer. The length of the
        // option (including the type and length fields) in units of 8
        // octets." Checked once by the view; re-checked here so that the
        // iterator cannot panic even over unchecked bytes.
        let (&kind, rest) = self.rest.split_first()?;
        let len = usize::from(*rest.first()?) * 8;
        let Some(data) = self.rest.get(2..len) else {
            self.rest = &[];
            return None;
        };
        self.rest = &self.rest[len..];
        Some(NdOption { kind, data })
    }
}

/// Checks the options area of a message (RFC 4861 §4.6): every option has
/// a non-zero length ("The value 0 is invalid. Nodes MUST silently discard
/// an ND packet that contains an option with length zero") and ends within
/// the buffer.
fn check_options(mut b: &[u8]) -> Result<()> {
    while !b.is_empty() {
        let len = usize::from(*b.get(1).ok_or(Error::Truncated)?) * 8;
        if len == 0 {
            return Err(Error::Malformed);
        }
        b = b.get(len..).ok_or(Error::Truncated)?;
    }
    Ok(())
}

/// The checks both views share: length, type, code, target, options.
fn check(b: &[u8], msg_type: u8) -> Result<()> {
    if b.len() < HEADER_LEN {
        return Err(Error::Truncated);
    }
    if b[field::TYPE] != msg_type {
        return Err(Error::Unsupported);
    }
    // RFC 4861 §7.1.1, §7.1.2 "ICMP Code is 0" and "Target Address is not
    // a multicast address".
    if b[field::CODE] != 0 || ip6_at(b, field::TARGET.start).is_multicast() {
        return Err(Error::Malformed);
    }
    check_options(&b[field::OPTIONS..])
}

/// The first Ethernet link-layer address option of `kind` in `opts`.
fn find_ll(opts: Options<'_>, kind: u8) -> Option<MacAddr> {
    opts.filter(|o| o.kind == kind).find_map(|o| o.ll_addr())
}

/// The ICMPv6 view of the same bytes (at least 24 of them).
fn icmp<T: AsRef<[u8]>>(b: T) -> Option<icmpv6::Packet<T>> {
    icmpv6::Packet::new_checked(b).ok()
}

/// A view of a Neighbor Solicitation (RFC 4861 §4.3).
///
/// `new_checked` guarantees at least [`HEADER_LEN`] bytes, type 135, code
/// 0, a target that is not multicast, and an options area of well-formed
/// options (each of non-zero length, none past the end). The message is the
/// whole buffer. Not checked (it needs the IPv6 header): the checksum
/// ([`verify_checksum`](NeighborSolicit::verify_checksum)) and RFC 4861
/// §7.1.1's hop limit and addresses ([`valid_for`](NeighborSolicit::valid_for)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeighborSolicit<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> NeighborSolicit<T> {
    /// Errors: [`Error::Truncated`] below 24 bytes or for an option that
    /// runs past the end; [`Error::Unsupported`] for an ICMPv6 type other
    /// than 135; [`Error::Malformed`] for a code other than 0, a multicast
    /// target or an option of length 0.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        check(buffer.as_ref(), TYPE_NEIGHBOR_SOLICIT)?;
        Ok(NeighborSolicit { buffer })
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// "The IP address of the target of the solicitation."
    #[inline]
    pub fn target(&self) -> Ipv6Addr {
        ip6_at(self.buffer.as_ref(), field::TARGET.start)
    }

    /// The options, in order.
    #[inline]
    pub fn options(&self) -> Options<'_> {
        Options {
            rest: &self.buffer.as_ref()[field::OPTIONS..],
        }
    }

    /// The MAC of the first Ethernet Source Link-Layer Address option.
    #[inline]
    pub fn source_ll_addr(&self) -> Option<MacAddr> {
        find_ll(self.options(), OPT_SOURCE_LL_ADDR)
    }

    /// The ICMPv6 checksum for an IPv6 packet from `src` to `dst` (RFC 4443
    /// §2.3; RFC 4861 §7.1.1 "ICMP Checksum is valid").
    #[inline]
    pub fn verify_checksum(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        icmp(self.buffer.as_ref()).is_some_and(|p| p.verify_checksum(src, dst))
    }

    /// RFC 4861 §7.1.1's checks on the IPv6 header that carried this
    /// message: Hop Limit 255, and from the unspecified address (Duplicate
    /// Address Detection) only to a solicited-node multicast address and
    /// without a Source Link-Layer Address option.
    #[inline]
    pub fn valid_for(&self, src: Ipv6Addr, dst: Ipv6Addr, hop_limit: u8) -> bool {
        hop_limit == HOP_LIMIT
            && (!src.is_unspecified()
                || is_solicited_node(dst) && !self.options().any(|o| o.kind == OPT_SOURCE_LL_ADDR))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> NeighborSolicit<T> {
    /// Recomputes the ICMPv6 checksum for an IPv6 packet from `src` to
    /// `dst` (RFC 4443 §2.3).
    #[inline]
    pub fn fill_checksum(&mut self, src: Ipv6Addr, dst: Ipv6Addr) {
        if let Some(mut p) = icmp(self.buffer.as_mut()) {
            p.fill_checksum(src, dst);
        }
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for NeighborSolicit<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// A view of a Neighbor Advertisement (RFC 4861 §4.4).
///
/// `new_checked` guarantees what [`NeighborSolicit`]'s does, for type 136.
/// Not checked: the checksum and RFC 4861 §7.1.2's hop limit and
/// destination ([`valid_for`](NeighborAdvert::valid_for)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeighborAdvert<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> NeighborAdvert<T> {
    /// Errors: as [`NeighborSolicit::new_checked`], with type 136.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        check(buffer.as_ref(), TYPE_NEIGHBOR_ADVERT)?;
        Ok(NeighborAdvert { buffer })
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    #[inline]
    fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// R: "the sender is a router".
    #[inline]
    pub fn router(&self) -> bool {
        self.flags() & FLAG_ROUTER != 0
    }

    /// S: "the advertisement was sent in response to a Neighbor
    /// Solicitation from the Destination address".
    #[inline]
    pub fn solicited(&self) -> bool {
        self.flags() & FLAG_SOLICITED != 0
    }

    /// O: "the advertisement should override an existing cache entry and
    /// update the cached link-layer address".
    #[inline]
    pub fn override_flag(&self) -> bool {
        self.flags() & FLAG_OVERRIDE != 0
    }

    /// For solicited advertisements, the Target Address of the
    /// solicitation; for unsolicited ones, the address whose link-layer
    /// address has changed.
    #[inline]
    pub fn target(&self) -> Ipv6Addr {
        ip6_at(self.buffer.as_ref(), field::TARGET.start)
    }

    /// The options, in order.
    #[inline]
    pub fn options(&self) -> Options<'_> {
        Options {
            rest: &self.buffer.as_ref()[field::OPTIONS..],
        }
    }

    /// The MAC of the first Ethernet Target Link-Layer Address option.
    #[inline]
    pub fn target_ll_addr(&self) -> Option<MacAddr> {
        find_ll(self.options(), OPT_TARGET_LL_ADDR)
    }

    /// See [`NeighborSolicit::verify_checksum`].
    #[inline]
    pub fn verify_checksum(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        icmp(self.buffer.as_ref()).is_some_and(|p| p.verify_checksum(src, dst))
    }

    /// RFC 4861 §7.1.2's checks on the IPv6 header: Hop Limit 255, and "If
    /// the IP Destination Address is a multicast address the Solicited flag
    /// is zero".
    #[inline]
    pub fn valid_for(&self, dst: Ipv6Addr, hop_limit: u8) -> bool {
        hop_limit == HOP_LIMIT && !(dst.is_multicast() && self.solicited())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> NeighborAdvert<T> {
    /// See [`NeighborSolicit::fill_checksum`].
    #[inline]
    pub fn fill_checksum(&mut self, src: Ipv6Addr, dst: Ipv6Addr) {
        if let Some(mut p) = icmp(self.buffer.as_mut()) {
            p.fill_checksum(src, dst);
        }
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for NeighborAdvert<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// The link-local address a node forms from its MAC: fe80::/64 and the
/// modified EUI-64 interface identifier (RFC 4862 §5.3, RFC 4291 §2.5.1
/// and Appendix A: the universal/local bit inverted, ff:fe in the middle).
pub fn link_local_of(mac: MacAddr) -> Ipv6Addr {
    let m = mac.0;
    Ipv6Addr::from([
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        m[0] ^ 0x02,
        m[1],
        m[2],
        0xff,
        0xfe,
        m[3],
        m[4],
        m[5],
    ])
}

/// Where an NDP frame goes: Ethernet and IPv6 source and destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Envelope {
    pub src_mac: MacAddr,
    pub dst_mac: MacAddr,
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
}

impl Envelope {
    /// A solicitation for `target` from `src` at `src_mac`, to its
    /// solicited-node group (RFC 4861 §7.2.2).
    pub fn solicit(src_mac: MacAddr, src: Ipv6Addr, target: Ipv6Addr) -> Envelope {
        let dst = solicited_node(target);
        Envelope {
            src_mac,
            dst_mac: multicast_mac(dst),
            src,
            dst,
        }
    }

    /// An unsolicited advertisement from `src` at `src_mac` to all nodes,
    /// ff02::1 (RFC 4861 §7.2.6).
    pub fn all_nodes(src_mac: MacAddr, src: Ipv6Addr) -> Envelope {
        let dst = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
        Envelope {
            src_mac,
            dst_mac: multicast_mac(dst),
            src,
            dst,
        }
    }
}

/// Writes an untagged Ethernet + IPv6 (hop limit 255, RFC 4861 §7.1) frame
/// around the NDP message `emit` writes (of `len` bytes) into `buf`;
/// returns the frame's length. Errors: [`Error::Truncated`] if `buf` is
/// shorter; as `emit`.
fn emit_frame(
    buf: &mut [u8],
    to: &Envelope,
    len: usize,
    emit: impl FnOnce(&mut [u8]) -> Result<()>,
) -> Result<usize> {
    let total = crate::ethernet::HEADER_LEN + crate::ipv6::HEADER_LEN + len;
    let b = buf.get_mut(..total).ok_or(Error::Truncated)?;
    let (head, rest) = b.split_at_mut(crate::ethernet::HEADER_LEN);
    crate::ethernet::Repr {
        dst: to.dst_mac,
        src: to.src_mac,
        ethertype: crate::ethernet::ETHERTYPE_IPV6,
    }
    .emit(head)?;
    crate::ipv6::Repr {
        src: to.src,
        dst: to.dst,
        next_header: crate::ipv6::PROTO_ICMPV6,
        hop_limit: HOP_LIMIT,
        payload_len: u16::try_from(len).map_err(|_| Error::Malformed)?,
    }
    .emit(&mut *rest)?;
    emit(&mut rest[crate::ipv6::HEADER_LEN..])?;
    Ok(total)
}

impl SolicitRepr {
    /// The whole frame: see [`Envelope`]; returns its length.
    pub fn emit_frame(&self, buf: &mut [u8], to: &Envelope) -> Result<usize> {
        emit_frame(buf, to, self.buffer_len(), |m| {
            self.emit(to.src, to.dst, m).map(|_| ())
        })
    }
}

impl AdvertRepr {
    /// The whole frame: see [`Envelope`]; returns its length.
    pub fn emit_frame(&self, buf: &mut [u8], to: &Envelope) -> Result<usize> {
        emit_frame(buf, to, self.buffer_len(), |m| {
            self.emit(to.src, to.dst, m).map(|_| ())
        })
    }

    /// An unsolicited advertisement of `target` at `mac` (RFC 4861 §7.2.6):
    /// Override set (the VIP moved here), not solicited, not a router.
    pub fn unsolicited(target: Ipv6Addr, mac: MacAddr) -> AdvertRepr {
        AdvertRepr {
            router: false,
            solicited: false,
            override_flag: true,
            target,
            target_ll: Some(mac),
        }
    }
}

/// Writes the common part of both messages and the optional link-layer
/// address option into `buf[..len]`, then the checksum.
fn emit_common(
    buf: &mut [u8],
    msg_type: u8,
    flags: u8,
    target: Ipv6Addr,
    ll: Option<(u8, MacAddr)>,
    src: Ipv6Addr,
    dst: Ipv6Addr,
) -> Result<usize> {
    if target.is_multicast() {
        return Err(Error::Malformed);
    }
    let len = HEADER_LEN + if ll.is_some() { LL_OPT_LEN } else { 0 };
    let b = buf.get_mut(..len).ok_or(Error::Truncated)?;
    b[field::TYPE] = msg_type;
    b[field::CODE] = 0;
    // RFC 4861 §4.3, §4.4 "Reserved ... MUST be initialized to zero by the
    // sender"; the checksum is filled below.
    b[field::CHECKSUM..field::TARGET.start].fill(0);
    b[field::FLAGS] = flags;
    b[field::TARGET].copy_from_slice(&target.octets());
    if let Some((kind, mac)) = ll {
        let o = &mut b[field::OPTIONS..];
        o[0] = kind;
        o[1] = 1; // RFC 2464 §6: length 1 (8 octets) for Ethernet.
        o[2..8].copy_from_slice(&mac.octets());
    }
    if let Some(mut p) = icmp(&mut b[..]) {
        p.fill_checksum(src, dst);
    }
    Ok(len)
}

/// A Neighbor Solicitation (RFC 4861 §4.3) with at most an Ethernet Source
/// Link-Layer Address option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SolicitRepr {
    pub target: Ipv6Addr,
    /// The sender's MAC; `None` for Duplicate Address Detection, which is
    /// sent from the unspecified address and "MUST NOT" carry it (§4.3).
    pub source_ll: Option<MacAddr>,
}

impl SolicitRepr {
    /// Reads the target and the first Ethernet Source Link-Layer Address
    /// option; other options are ignored (RFC 4861 §4.3 "Receivers MUST
    /// silently ignore any options they do not recognize"). The checksum is
    /// not verified. Never fails for a checked view.
    #[inline]
    pub fn parse<T: AsRef<[u8]>>(p: &NeighborSolicit<T>) -> Result<SolicitRepr> {
        Ok(SolicitRepr {
            target: p.target(),
            source_ll: p.source_ll_addr(),
        })
    }

    /// [`HEADER_LEN`].
    #[inline]
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// 24 bytes, 32 with the link-layer address option.
    #[inline]
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
            + if self.source_ll.is_some() {
                LL_OPT_LEN
            } else {
                0
            }
    }

    /// Writes the whole message into `buf[..buffer_len()]`, checksum
    /// included for an IPv6 packet from `src` to `dst` (the caller sends it
    /// with Hop Limit [`HOP_LIMIT`], to [`solicited_node`]`(target)` or,
    /// to re-check a known neighbor, to its unicast address: §7.2.2), and
    /// returns the view over exactly those bytes.
    ///
    /// Errors, with nothing written: [`Error::Truncated`] if `buf` is
    /// shorter; [`Error::Malformed`] for a multicast target.
    #[inline]
    pub fn emit<'b>(
        &self,
        src: Ipv6Addr,
        dst: Ipv6Addr,
        buf: &'b mut [u8],
    ) -> Result<NeighborSolicit<&'b mut [u8]>> {
        let ll = self.source_ll.map(|m| (OPT_SOURCE_LL_ADDR, m));
        let n = emit_common(buf, TYPE_NEIGHBOR_SOLICIT, 0, self.target, ll, src, dst)?;
        Ok(NeighborSolicit {
            buffer: &mut buf[..n],
        })
    }
}

/// A Neighbor Advertisement (RFC 4861 §4.4) with at most an Ethernet
/// Target Link-Layer Address option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AdvertRepr {
    pub router: bool,
    pub solicited: bool,
    /// The O flag.
    pub override_flag: bool,
    pub target: Ipv6Addr,
    /// The target's MAC. RFC 4861 §4.4: it "MUST be included" in answer to
    /// a multicast solicitation (and podlb always includes it).
    pub target_ll: Option<MacAddr>,
}

impl AdvertRepr {
    /// The answer to a solicitation for `target`, an address this node
    /// owns at `mac` (RFC 4861 §7.2.4): solicited unless the solicitation
    /// came from the unspecified address (DAD: then it goes to all-nodes,
    /// S clear), with the Override flag set, not a router.
    #[inline]
    pub fn answer(target: Ipv6Addr, mac: MacAddr, solicitor: Ipv6Addr) -> AdvertRepr {
        AdvertRepr {
            router: false,
            solicited: !solicitor.is_unspecified(),
            override_flag: true,
            target,
            target_ll: Some(mac),
        }
    }

    /// Reads the flags, the target and the first Ethernet Target
    /// Link-Layer Address option; other options are ignored. The checksum
    /// is not verified. Never fails for a checked view.
    #[inline]
    pub fn parse<T: AsRef<[u8]>>(p: &NeighborAdvert<T>) -> Result<AdvertRepr> {
        Ok(AdvertRepr {
            router: p.router(),
            solicited: p.solicited(),
            override_flag: p.override_flag(),
            target: p.target(),
            target_ll: p.target_ll_addr(),
        })
    }

    /// [`HEADER_LEN`].
    #[inline]
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// 24 bytes, 32 with the link-layer address option.
    #[inline]
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
            + if self.target_ll.is_some() {
                LL_OPT_LEN
            } else {
                0
            }
    }

    /// Writes the whole message into `buf[..buffer_len()]`, checksum
    /// included for an IPv6 packet from `src` to `dst` (sent with Hop
    /// Limit [`HOP_LIMIT`]: §7.2.4), and returns the view over exactly those
    /// bytes. Errors as [`SolicitRepr::emit`].
    #[inline]
    pub fn emit<'b>(
        &self,
        src: Ipv6Addr,
        dst: Ipv6Addr,
        buf: &'b mut [u8],
    ) -> Result<NeighborAdvert<&'b mut [u8]>> {
        let flags = if self.router { FLAG_ROUTER } else { 0 }
            | if self.solicited { FLAG_SOLICITED } else { 0 }
            | if self.override_flag { FLAG_OVERRIDE } else { 0 };
        let ll = self.target_ll.map(|m| (OPT_TARGET_LL_ADDR, m));
        let n = emit_common(buf, TYPE_NEIGHBOR_ADVERT, flags, self.target, ll, src, dst)?;
        Ok(NeighborAdvert {
            buffer: &mut buf[..n],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipv6;

    #[test]
    fn eui64_link_local() {
        let mac = MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
        assert_eq!(link_local_of(mac), a("fe80::5054:ff:fe12:3456"));
    }

    /// A whole NS frame from `emit_frame` parses back: Ethernet to the
    /// solicited-node group's MAC, hop limit 255, checksum right.
    #[test]
    fn solicit_frame_round_trips() {
        let target = a("2001:2::21");
        let to = Envelope::solicit(MAC1, a("fe80::1"), target);
        let ns = SolicitRepr {
            target,
            source_ll: Some(MAC1),
        };
        let mut buf = [0u8; 128];
        let n = ns.emit_frame(&mut buf, &to).unwrap();
        assert_eq!(n, 14 + 40 + 32);
        assert_eq!(&buf[0..6], &[0x33, 0x33, 0xff, 0, 0, 0x21]);
        let ip = ipv6::Packet::new_checked(&buf[14..n]).unwrap();
        assert_eq!((ip.hop_limit(), ip.dst()), (255, a("ff02::1:ff00:21")));
        let p = NeighborSolicit::new_checked(ip.payload()).unwrap();
        assert!(p.valid_for(ip.src(), ip.dst(), 255) && p.verify_checksum(ip.src(), ip.dst()));
        assert_eq!(SolicitRepr::parse(&p).unwrap(), ns);
        assert_eq!(ns.emit_frame(&mut buf[..80], &to), Err(Error::Truncated));
        let na = AdvertRepr::unsolicited(target, MAC1);
        let n = na
            .emit_frame(&mut buf, &Envelope::all_nodes(MAC1, a("fe80::1")))
            .unwrap();
        let ip = ipv6::Packet::new_checked(&buf[14..n]).unwrap();
        let p = NeighborAdvert::new_checked(ip.payload()).unwrap();
        assert!(p.valid_for(ip.dst(), 255) && p.verify_checksum(ip.src(), ip.dst()));
        assert!(p.override_flag() && !p.solicited());
    }
    use etherparse::{Icmpv6Slice, Icmpv6Type, PacketBuilder};
    use proptest::prelude::*;

    fn a(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    const MAC1: MacAddr = MacAddr([0x02, 0x00, 0x5e, 0x10, 0x00, 0x01]);

    /// A Neighbor Solicitation from fe80::1 (MAC1) for fe80::2:3, written
    /// byte by byte from RFC 4861 §4.3 (independent of `emit`), with an
    /// unknown option (type 200, 16 octets) after the source link-layer
    /// address; checksum zero.
    fn ns_bytes() -> Vec<u8> {
        let mut v = vec![135, 0, 0, 0, 0, 0, 0, 0];
        v.extend(a("fe80::2:3").octets());
        v.extend([1, 1, 0x02, 0x00, 0x5e, 0x10, 0x00, 0x01]);
        v.extend([200, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        v
    }

    /// The checksum by etherparse's generic ICMPv6 code (it has no NDP types).
    fn etherparse_checksum(m: &[u8], src: Ipv6Addr, dst: Ipv6Addr) -> u16 {
        let ty = Icmpv6Type::Unknown {
            type_u8: m[0],
            code_u8: m[1],
            bytes5to8: [m[4], m[5], m[6], m[7]],
        };
        ty.calc_checksum(src.octets(), dst.octets(), &m[8..])
            .unwrap()
    }

    fn etherparse_valid(m: &[u8], src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        Icmpv6Slice::from_slice(m)
            .unwrap()
            .is_checksum_valid(src.octets(), dst.octets())
    }

    #[test]
    fn solicited_node_and_mac() {
        // RFC 4291 §2.7.1: the low 24 bits of the address.
        let x = a("2001:2::1:2345:6789");
        assert_eq!(solicited_node(x), a("ff02::1:ff45:6789"));
        assert!(is_solicited_node(solicited_node(x)));
        assert!(!is_solicited_node(x));
        assert!(!is_solicited_node(a("ff02::1:fe45:6789")));
        assert!(!is_solicited_node(a("ff02::2:ff45:6789")));
        assert_eq!(solicited_node(a("fe80::2:3")), a("ff02::1:ff02:3"));
        // RFC 2464 §7: 33:33 and the last four octets.
        assert_eq!(
            multicast_mac(a("ff02::1:ff45:6789")),
            MacAddr([0x33, 0x33, 0xff, 0x45, 0x67, 0x89])
        );
        assert_eq!(
            multicast_mac(a("ff02::1")),
            MacAddr([0x33, 0x33, 0, 0, 0, 1])
        );
        assert!(multicast_mac(a("ff02::1")).is_multicast());
    }

    #[test]
    fn parses_hand_built_solicit() {
        let (src, dst) = (a("fe80::1"), solicited_node(a("fe80::2:3")));
        let mut v = ns_bytes();
        let c = etherparse_checksum(&v, src, dst);
        v[2..4].copy_from_slice(&c.to_be_bytes());
        let p = NeighborSolicit::new_checked(&v[..]).unwrap();
        assert_eq!(p.checksum(), c);
        assert!(p.verify_checksum(src, dst));
        assert!(!p.verify_checksum(a("fe80::9"), dst));
        assert_eq!(p.target(), a("fe80::2:3"));
        assert_eq!(p.source_ll_addr(), Some(MAC1));
        let opts: Vec<_> = p.options().collect();
        assert_eq!(opts.len(), 2);
        assert_eq!(
            (opts[0].kind, opts[0].ll_addr()),
            (OPT_SOURCE_LL_ADDR, Some(MAC1))
        );
        assert_eq!(
            (opts[1].kind, opts[1].data.len(), opts[1].ll_addr()),
            (200, 14, None)
        );
        assert!(p.valid_for(src, dst, 255));
        assert!(!p.valid_for(src, dst, 254));
        // From the unspecified address: only DAD-shaped (no SLLA option).
        assert!(!p.valid_for(Ipv6Addr::UNSPECIFIED, dst, 255));
        let r = SolicitRepr::parse(&p).unwrap();
        assert_eq!(
            r,
            SolicitRepr {
                target: a("fe80::2:3"),
                source_ll: Some(MAC1)
            }
        );
        // emit writes the same bytes, less the unknown option.
        let mut out = [0xeeu8; 40];
        let q = r.emit(src, dst, &mut out).unwrap();
        assert_eq!(q.as_ref().len(), r.buffer_len());
        assert_eq!(r.buffer_len(), 32);
        let mut want = ns_bytes()[..32].to_vec();
        let c = etherparse_checksum(&want, src, dst);
        want[2..4].copy_from_slice(&c.to_be_bytes());
        assert_eq!(&out[..32], &want[..]);
        assert_eq!(out[32..], [0xee; 8], "nothing after the message");
        assert!(etherparse_valid(&out[..32], src, dst));
        // An NA view refuses it.
        assert_eq!(NeighborAdvert::new_checked(&v[..]), Err(Error::Unsupported));
    }

    #[test]
    fn dad_solicit() {
        let target = a("fe80::5");
        let r = SolicitRepr {
            target,
            source_ll: None,
        };
        let (src, dst) = (Ipv6Addr::UNSPECIFIED, solicited_node(target));
        let mut buf = [0u8; 24];
        let p = r.emit(src, dst, &mut buf).unwrap();
        assert!(p.valid_for(src, dst, 255));
        assert!(!p.valid_for(src, a("ff02::1"), 255));
        assert!(p.verify_checksum(src, dst));
        assert_eq!(p.source_ll_addr(), None);
        assert_eq!(p.options().count(), 0);
        assert!(etherparse_valid(&buf, src, dst));
        let p = NeighborSolicit::new_checked(&buf[..]).unwrap();
        assert_eq!(SolicitRepr::parse(&p), Ok(r));
    }

    #[test]
    fn advert_flags_and_emit() {
        // A solicited NA from fe80::2:3 back to fe80::1, written by hand
        // (RFC 4861 §4.4): S and O set, R clear.
        let (src, dst) = (a("fe80::2:3"), a("fe80::1"));
        let mut v = vec![136, 0, 0, 0, 0x60, 0, 0, 0];
        v.extend(a("fe80::2:3").octets());
        v.extend([2, 1, 0x02, 0x00, 0x5e, 0x10, 0x00, 0x01]);
        let c = etherparse_checksum(&v, src, dst);
        v[2..4].copy_from_slice(&c.to_be_bytes());
        let p = NeighborAdvert::new_checked(&v[..]).unwrap();
        assert!(!p.router() && p.solicited() && p.override_flag());
        assert_eq!(p.target(), a("fe80::2:3"));
        assert_eq!(p.target_ll_addr(), Some(MAC1));
        assert!(p.verify_checksum(src, dst));
        assert!(p.valid_for(dst, 255));
        assert!(!p.valid_for(a("ff02::1"), 255), "S set to multicast");
        assert!(!p.valid_for(dst, 64));
        let r = AdvertRepr::parse(&p).unwrap();
        assert_eq!(r, AdvertRepr::answer(a("fe80::2:3"), MAC1, dst));
        let mut out = [0u8; 32];
        let q = r.emit(src, dst, &mut out).unwrap();
        assert_eq!(q.checksum(), c);
        assert_eq!(&out[..], &v[..]);
        // All three flags; no option; the answer to DAD.
        let r = AdvertRepr {
            router: true,
            solicited: true,
            override_flag: false,
            target: a("2001:2::7"),
            target_ll: None,
        };
        let mut out = [0xffu8; 24];
        let q = r.emit(src, dst, &mut out).unwrap();
        assert_eq!(
            AdvertRepr::parse(&NeighborAdvert::new_checked(q.as_ref()).unwrap()),
            Ok(r)
        );
        assert_eq!(out[4..8], [0xc0, 0, 0, 0], "reserved bits zeroed");
        let dad = AdvertRepr::answer(a("fe80::5"), MAC1, Ipv6Addr::UNSPECIFIED);
        assert!(!dad.solicited && dad.override_flag && !dad.router);
        // The SLLA option in an NA is not a TLLA.
        let mut v2 = v.clone();
        v2[24] = OPT_SOURCE_LL_ADDR;
        let p = NeighborAdvert::new_checked(&v2[..]).unwrap();
        assert_eq!(p.target_ll_addr(), None);
        // fill_checksum on the views.
        let mut p = NeighborAdvert::new_checked(&mut v2[..]).unwrap();
        p.fill_checksum(src, dst);
        assert!(p.verify_checksum(src, dst));
        let mut v3 = ns_bytes();
        let mut p = NeighborSolicit::new_checked(&mut v3[..]).unwrap();
        p.fill_checksum(src, dst);
        assert!(p.verify_checksum(src, dst));
        assert!(etherparse_valid(&v3, src, dst));
    }

    #[test]
    fn rejects() {
        let v = ns_bytes();
        assert_eq!(
            NeighborSolicit::new_checked(&v[..23]),
            Err(Error::Truncated)
        );
        assert!(NeighborSolicit::new_checked(&v[..24]).is_ok());
        // A cut inside an option.
        for n in [25, 26, 31, 33, 47] {
            assert_eq!(
                NeighborSolicit::new_checked(&v[..n]),
                Err(Error::Truncated),
                "{n}"
            );
        }
        let bad = |at: usize, val: u8| {
            let mut b = v.clone();
            b[at] = val;
            NeighborSolicit::new_checked(&b[..]).err()
        };
        assert_eq!(bad(0, 128), Some(Error::Unsupported));
        assert_eq!(bad(1, 1), Some(Error::Malformed), "code");
        assert_eq!(bad(8, 0xff), Some(Error::Malformed), "multicast target");
        assert_eq!(bad(25, 0), Some(Error::Malformed), "zero-length option");
        assert_eq!(bad(33, 0), Some(Error::Malformed), "zero-length option");
        assert_eq!(bad(33, 3), Some(Error::Truncated), "option past the end");
        // Reserved bits are ignored (RFC 4861 §4.3 "MUST be ignored by the receiver").
        assert_eq!(bad(4, 0xff), None);
        // emit: a multicast target, a short buffer: nothing written.
        let r = SolicitRepr {
            target: a("ff02::1"),
            source_ll: Some(MAC1),
        };
        let mut buf = [0u8; 32];
        assert_eq!(
            r.emit(Ipv6Addr::UNSPECIFIED, a("ff02::1"), &mut buf).err(),
            Some(Error::Malformed)
        );
        let r = SolicitRepr {
            target: a("fe80::1"),
            ..r
        };
        assert_eq!(
            r.emit(Ipv6Addr::UNSPECIFIED, a("ff02::1"), &mut buf[..31])
                .err(),
            Some(Error::Truncated)
        );
        assert_eq!(buf, [0u8; 32], "nothing written");
        let na = AdvertRepr::answer(a("fe80::1"), MAC1, a("fe80::2"));
        assert_eq!(
            na.emit(a("fe80::1"), a("fe80::2"), &mut buf[..31]).err(),
            Some(Error::Truncated)
        );
        assert_eq!(buf, [0u8; 32], "nothing written");
        // The options iterator stops on unchecked garbage instead of panicking.
        let opts = Options {
            rest: &[1, 0, 2, 5, 0],
        };
        assert_eq!(opts.count(), 0);
        let opts = Options {
            rest: &[1, 1, 0, 0, 0, 0, 0, 0, 2, 9],
        };
        assert_eq!(opts.count(), 1);
    }

    /// A whole NS packet in IPv6 as etherparse writes it: the ICMPv6 view
    /// from the upper-layer walk, then the NDP view over the same bytes.
    #[test]
    fn in_ipv6_packet() {
        let (src, target) = (a("fe80::1"), a("fe80::2:3"));
        let dst = solicited_node(target);
        let m = ns_bytes();
        let mut v = Vec::new();
        PacketBuilder::ipv6(src.octets(), dst.octets(), 255)
            .icmpv6(Icmpv6Type::Unknown {
                type_u8: 135,
                code_u8: 0,
                bytes5to8: [0; 4],
            })
            .write(&mut v, &m[8..])
            .unwrap();
        let ip = ipv6::Packet::new_checked(&v[..]).unwrap();
        let u = ip.upper_layer().unwrap();
        assert_eq!(u.protocol, ipv6::PROTO_ICMPV6);
        let icmp = icmpv6::Packet::new_checked(&v[u.offset..u.offset + u.len]).unwrap();
        assert_eq!(icmp.msg_type(), icmpv6::TYPE_NEIGHBOR_SOLICIT);
        assert!(icmp.verify_checksum(ip.src(), ip.dst()));
        let ns = NeighborSolicit::new_checked(icmp.as_ref()).unwrap();
        assert!(ns.verify_checksum(ip.src(), ip.dst()));
        assert!(ns.valid_for(ip.src(), ip.dst(), ip.hop_limit()));
        assert_eq!(ns.target(), target);
        assert_eq!(
            multicast_mac(ip.dst()),
            MacAddr([0x33, 0x33, 0xff, 0x02, 0x00, 0x03])
        );
    }

    fn check_all(b: &[u8]) {
        let (s, d) = (a("fe80::1"), a("fe80::2"));
        if let Ok(p) = NeighborSolicit::new_checked(b) {
            let _ = (
                p.checksum(),
                p.verify_checksum(s, d),
                p.valid_for(s, d, 255),
            );
            let total: usize = p.options().map(|o| o.data.len() + 2).sum();
            assert_eq!(total + 24, b.len());
            let r = SolicitRepr::parse(&p).unwrap();
            let mut out = vec![0u8; r.buffer_len()];
            let q = r.emit(s, d, &mut out).unwrap();
            assert!(q.verify_checksum(s, d));
            assert_eq!(SolicitRepr::parse(&q), Ok(r));
        }
        if let Ok(p) = NeighborAdvert::new_checked(b) {
            let _ = (p.checksum(), p.verify_checksum(s, d), p.valid_for(d, 255));
            let total: usize = p.options().map(|o| o.data.len() + 2).sum();
            assert_eq!(total + 24, b.len());
            let r = AdvertRepr::parse(&p).unwrap();
            let mut out = vec![0u8; r.buffer_len()];
            let q = r.emit(s, d, &mut out).unwrap();
            assert!(q.verify_checksum(s, d));
            assert_eq!(AdvertRepr::parse(&q), Ok(r));
        }
        let _ = Options { rest: b }.count();
    }

    proptest! {
        #[test]
        fn never_panics(mut b in proptest::collection::vec(any::<u8>(), 0..120), na in any::<bool>()) {
            check_all(&b);
            // A valid-looking fixed part so that the options walk runs.
            if b.len() >= 24 {
                b[0] = if na { 136 } else { 135 };
                b[1] = 0;
                b[8] = 0xfe;
                check_all(&b);
            }
        }

        #[test]
        fn truncations_never_panic(n in 0usize..=48) {
            check_all(&ns_bytes()[..n]);
        }

        /// parse(emit(r)) == r; etherparse agrees on the checksum.
        #[test]
        fn repr_round_trip(target in any::<u128>(), mac in any::<Option<[u8; 6]>>(),
                           flags in any::<[bool; 3]>(), s in any::<u128>(), d in any::<u128>()) {
            let target = Ipv6Addr::from(target & !(0xff << 120)); // not multicast
            let (s, d) = (Ipv6Addr::from(s), Ipv6Addr::from(d));
            let ns = SolicitRepr { target, source_ll: mac.map(MacAddr) };
            let mut buf = [0u8; 32];
            let p = ns.emit(s, d, &mut buf).unwrap();
            prop_assert_eq!(SolicitRepr::parse(&p), Ok(ns));
            prop_assert!(etherparse_valid(&buf[..ns.buffer_len()], s, d));
            let na = AdvertRepr { router: flags[0], solicited: flags[1], override_flag: flags[2], target, target_ll: mac.map(MacAddr) };
            let p = na.emit(s, d, &mut buf).unwrap();
            prop_assert_eq!(AdvertRepr::parse(&p), Ok(na));
            prop_assert!(etherparse_valid(&buf[..na.buffer_len()], s, d));
        }
    }
}
