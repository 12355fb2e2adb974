//! ARP view (the Ethernet payload) and its emitters.
#![no_main]
use libfuzzer_sys::fuzz_target;
use podlb_wire::{arp, ethernet, MacAddr};

fuzz_target!(|data: &[u8]| {
    let Ok(p) = arp::Packet::new_checked(data) else {
        return;
    };
    let (op, sha, spa, tha, tpa) = (
        p.operation(),
        p.sender_hw(),
        p.sender_ip(),
        p.target_hw(),
        p.target_ip(),
    );
    assert!(op == arp::OP_REQUEST || op == arp::OP_REPLY);
    assert_eq!(p.as_ref(), data);

    // emit(parse(x)) is the first 28 bytes of x: the view accepts nothing
    // the emitter would write differently.
    let repr = arp::Repr::parse(&p).unwrap();
    assert_eq!(
        repr,
        arp::Repr {
            operation: op,
            sender_hw: sha,
            sender_ip: spa,
            target_hw: tha,
            target_ip: tpa
        }
    );
    let mut out = [0u8; arp::LEN];
    let q = repr.emit(&mut out).unwrap();
    assert_eq!(arp::Repr::parse(&q), Ok(repr));
    assert_eq!(&out[..], &data[..arp::LEN]);
    assert!(repr.emit(&mut out[..27]).is_err());

    // The whole-frame emitter round-trips through both views.
    let mut frame = [0xa5u8; 64];
    let n = repr.emit_frame(&mut frame).unwrap();
    assert_eq!(n, arp::FRAME_LEN);
    let e = ethernet::Frame::new_checked(&frame[..n]).unwrap();
    assert_eq!(e.ethertype(), ethernet::ETHERTYPE_ARP);
    assert_eq!((e.dst(), e.src()), (repr.eth_dst(), sha));
    let q = arp::Packet::new_checked(e.payload()).unwrap();
    assert_eq!(
        (
            q.operation(),
            q.sender_hw(),
            q.sender_ip(),
            q.target_hw(),
            q.target_ip()
        ),
        (op, sha, spa, tha, tpa)
    );
    assert!(
        e.payload()[arp::LEN..].iter().all(|&b| b == 0),
        "zero padding"
    );
    assert_eq!(&frame[n..], &[0xa5; 4], "nothing written past the frame");

    // A request turned into a reply in place, as the forward path does.
    let mut buf = data.to_vec();
    let mut r = arp::Packet::new_checked(&mut buf[..]).unwrap();
    let me = MacAddr([2, 0, 0, 0, 0, 1]);
    r.set_operation(arp::OP_REPLY);
    r.set_target_hw(sha);
    r.set_target_ip(spa);
    r.set_sender_hw(me);
    r.set_sender_ip(tpa);
    let r = arp::Packet::new_checked(&buf[..]).unwrap();
    assert_eq!(
        (
            r.operation(),
            r.sender_hw(),
            r.sender_ip(),
            r.target_hw(),
            r.target_ip()
        ),
        (arp::OP_REPLY, me, tpa, sha, spa)
    );
    // Announcements and requests parse back to what was asked.
    let mut g = [0u8; 60];
    assert_eq!(arp::Repr::gratuitous(sha, spa).emit_frame(&mut g), Ok(60));
    let q = arp::Packet::new_checked(&g[14..]).unwrap();
    assert_eq!(
        (q.sender_ip(), q.target_ip(), q.target_hw()),
        (spa, spa, MacAddr::ZERO)
    );
    assert!(arp::Repr::request(sha, spa, tpa)
        .emit_frame(&mut g[..59])
        .is_err());
});
