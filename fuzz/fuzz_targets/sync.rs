//! Connection-sync datagrams (both wire versions): `decode` never panics,
//! a decoded datagram re-encodes to the same bytes, and applying it to the
//! two families' tables never panics either.
#![no_main]
use libfuzzer_sys::fuzz_target;
use podlb_core::flow::{FlowTable, Timeouts};
use podlb_core::sync::{self, ApplyCounts, Encoder, Resolved, SyncEvent};

const T: Timeouts = Timeouts {
    syn_ms: 10_000,
    established_ms: 3_600_000,
    fin_ms: 60_000,
    close_ms: 10_000,
    udp_unanswered_ms: 30_000,
    udp_answered_ms: 120_000,
};

fn res<A>(_: A, _: u16, _: u8, _: A, _: u16) -> Option<Resolved> {
    Some(Resolved {
        service: 0,
        stat: sync::NO_STAT,
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(d) = sync::decode(data) else {
        return;
    };
    let (v4, v6): (Vec<SyncEvent>, Vec<SyncEvent<u128>>) =
        (d.events().collect(), d.events6().collect());
    assert_eq!(v4.len() + v6.len(), d.len());
    assert!(v4.is_empty() || v6.is_empty(), "one family per datagram");

    // Entries re-encode to the bytes they came from (the proto travels in
    // the state byte, so nothing is lost).
    if !d.is_empty() {
        let mut enc = Encoder::new(d.sender);
        let mut out = Vec::new();
        for e in &v4 {
            out.extend(enc.push(e));
        }
        for e in &v6 {
            out.extend(enc.push(e));
        }
        out.extend(enc.flush());
        let body: Vec<u8> = out.iter().flat_map(|g| g[16..].to_vec()).collect();
        assert_eq!(body, data[16..]);
        assert!(out.iter().all(|g| g.len() <= sync::MAX_DATAGRAM));
    } else {
        assert_eq!(data.len(), 16);
    }

    let (t, t6) = (FlowTable::<u32>::new(64, T), FlowTable::<u128>::new(64, T));
    let mut c = ApplyCounts::default();
    sync::apply_all(&t, &d, res, 1000, &mut c);
    sync::apply_all(&t6, &d, res, 1000, &mut c);
});
