//! VRRP unicast peers from the EndpointSlices of the headless peers Service.

use std::net::Ipv4Addr;

use serde_json::Value;

use super::objects;

/// Name of the headless Service whose endpoints are the podlb Pods.
pub const DEFAULT_PEERS_SERVICE: &str = "podlb-peers";

/// The ready addresses of the peers Service `service_name` in `namespace`
/// (podlb's own namespace: a Service of that name elsewhere must not inject
/// peers), without `own_ip`, sorted and deduplicated. Only `IPv4` slices
/// count (VRRP peers are IPv4; a dual-stack cluster's `IPv6` slices of the
/// same Service are left out); an endpoint is ready when `conditions.ready` is true or absent and
/// it is not terminating.
pub fn peers_from_slice(
    slices: &[Value],
    namespace: &str,
    service_name: &str,
    own_ip: Ipv4Addr,
) -> Vec<Ipv4Addr> {
    let mut peers: Vec<Ipv4Addr> = objects::parse_slices(slices)
        .iter()
        .filter(|s| {
            s.address_type == "IPv4"
                && s.metadata.namespace == namespace
                && s.service_name() == Some(service_name)
        })
        .flat_map(|s| s.endpoints.iter())
        .filter(|e| e.is_ready())
        .filter_map(|e| e.ipv4())
        .filter(|ip| *ip != own_ip)
        .collect();
    peers.sort();
    peers.dedup();
    peers
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn slice(ns: &str, svc: &str, name: &str, endpoints: Value) -> Value {
        json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": name,
                "namespace": ns,
                "labels": {
                    "kubernetes.io/service-name": svc,
                    "service.kubernetes.io/headless": "",
                    "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"
                }
            },
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": null
        })
    }

    fn ep(ip: &str, conditions: Value) -> Value {
        json!({
            "addresses": [ip],
            "conditions": conditions,
            "nodeName": "node-1",
            "targetRef": {"kind": "Pod", "namespace": "podlb", "name": format!("podlb-{ip}")}
        })
    }

    #[test]
    fn ready_peers_without_self_sorted_and_deduplicated() {
        let ready = json!({"ready": true, "serving": true, "terminating": false});
        let slices = vec![
            slice(
                "podlb",
                "podlb-peers",
                "podlb-peers-abc",
                json!([
                    ep("10.244.1.7", ready.clone()),
                    ep("10.244.0.5", ready.clone()),
                    ep("10.244.2.9", json!({})), // no `ready`: counts as ready
                    ep("10.244.3.3", json!({"ready": false, "serving": false})),
                    ep(
                        "10.244.4.4",
                        json!({"ready": false, "serving": true, "terminating": true})
                    ),
                ]),
            ),
            // A second slice repeating one address (controller transition).
            slice(
                "podlb",
                "podlb-peers",
                "podlb-peers-def",
                json!([
                    ep("10.244.1.7", ready.clone()),
                    ep("10.244.5.5", ready.clone())
                ]),
            ),
            // Same Service name in another namespace: not ours.
            slice(
                "evil",
                "podlb-peers",
                "podlb-peers-x",
                json!([ep("10.9.9.9", ready.clone())]),
            ),
            // Another Service in our namespace.
            slice(
                "podlb",
                "other",
                "other-x",
                json!([ep("10.8.8.8", ready.clone())]),
            ),
            // In a dual-stack cluster the peers Service has an IPv6 slice
            // too: VRRP peers stay IPv4, so it is left out.
            {
                let mut s = slice(
                    "podlb",
                    "podlb-peers",
                    "podlb-peers-v6",
                    json!([ep("2001:2::7", ready)]),
                );
                s["addressType"] = json!("IPv6");
                s
            },
        ];
        let own = Ipv4Addr::new(10, 244, 0, 5);
        assert_eq!(
            peers_from_slice(&slices, "podlb", DEFAULT_PEERS_SERVICE, own),
            vec![
                Ipv4Addr::new(10, 244, 1, 7),
                Ipv4Addr::new(10, 244, 2, 9),
                Ipv4Addr::new(10, 244, 5, 5),
            ]
        );
        assert!(peers_from_slice(&slices, "podlb", "nope", own).is_empty());
    }
}
