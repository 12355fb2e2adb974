//! Where each node's VXLAN tunnel endpoint is, from flannel's Node
//! annotations: `flannel.alpha.coreos.com/public-ip` (the VTEP address) and
//! `flannel.alpha.coreos.com/backend-data` (JSON with `VtepMAC` and, in
//! newer flannel, `VNI`). flannel's vxlan backend writes both when it
//! registers a node; podlb reads them to carry each endpoint's packets to
//! the node that runs it (issue 5, `mode = "vxlan"`).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde_json::Value;

use podlb_wire::MacAddr;

pub const ANNOTATION_PUBLIC_IP: &str = "flannel.alpha.coreos.com/public-ip";
pub const ANNOTATION_BACKEND_DATA: &str = "flannel.alpha.coreos.com/backend-data";
pub const ANNOTATION_BACKEND_TYPE: &str = "flannel.alpha.coreos.com/backend-type";

/// One node's tunnel endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vtep {
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
    /// The VNI flannel announces, when it does.
    pub vni: Option<u32>,
}

/// Why a node has no usable VTEP (for the Problem on the Service).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeProblem {
    pub node: String,
    pub message: String,
}

/// The VTEP of every node that has usable flannel annotations, by node
/// name, and a problem for each node whose annotations are there but
/// wrong. Nodes without any flannel annotation are simply absent.
pub fn vteps(nodes: &[Value]) -> (BTreeMap<String, Vtep>, Vec<NodeProblem>) {
    let mut out = BTreeMap::new();
    let mut problems = Vec::new();
    for n in nodes {
        let Some(name) = n.pointer("/metadata/name").and_then(Value::as_str) else {
            continue;
        };
        let ann = |k: &str| {
            n.pointer("/metadata/annotations")
                .and_then(|a| a.get(k))
                .and_then(Value::as_str)
        };
        let (ip, data) = match (ann(ANNOTATION_PUBLIC_IP), ann(ANNOTATION_BACKEND_DATA)) {
            (None, None) => continue,
            (Some(ip), Some(data)) => (ip, data),
            _ => {
                problems.push(NodeProblem {
                    node: name.to_string(),
                    message: format!(
                        "node {name} has only one of {ANNOTATION_PUBLIC_IP} and {ANNOTATION_BACKEND_DATA}"
                    ),
                });
                continue;
            }
        };
        if let Some(t) = ann(ANNOTATION_BACKEND_TYPE).filter(|t| *t != "vxlan") {
            problems.push(NodeProblem {
                node: name.to_string(),
                message: format!("node {name} uses flannel backend {t:?}, not vxlan"),
            });
            continue;
        }
        match parse_vtep(ip, data) {
            Ok(v) => {
                out.insert(name.to_string(), v);
            }
            Err(e) => problems.push(NodeProblem {
                node: name.to_string(),
                message: format!("node {name}: {e}"),
            }),
        }
    }
    (out, problems)
}

fn parse_vtep(ip: &str, data: &str) -> Result<Vtep, String> {
    let ip: Ipv4Addr = ip
        .trim()
        .parse()
        .map_err(|_| format!("{ANNOTATION_PUBLIC_IP} {ip:?} is not an IPv4 address"))?;
    let data: Value = serde_json::from_str(data)
        .map_err(|e| format!("{ANNOTATION_BACKEND_DATA} is not JSON: {e}"))?;
    let mac = data
        .get("VtepMAC")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{ANNOTATION_BACKEND_DATA} has no VtepMAC"))?;
    let mac: MacAddr = mac
        .parse()
        .map_err(|_| format!("VtepMAC {mac:?} is not a MAC address"))?;
    if !mac.is_unicast() || mac == MacAddr::ZERO {
        return Err(format!("VtepMAC {mac} is not a unicast MAC"));
    }
    let vni = match data.get("VNI").and_then(Value::as_u64) {
        None => None,
        Some(v) if v < 1 << 24 => u32::try_from(v).ok(),
        Some(v) => return Err(format!("VNI {v} does not fit in 24 bits (RFC 7348 §5)")),
    };
    Ok(Vtep { ip, mac, vni })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, ann: Value) -> Value {
        json!({ "apiVersion": "v1", "kind": "Node", "metadata": { "name": name, "annotations": ann } })
    }

    #[test]
    fn reads_flannel_annotations() {
        let nodes = vec![
            node(
                "n1",
                json!({
                    ANNOTATION_BACKEND_TYPE: "vxlan",
                    ANNOTATION_PUBLIC_IP: "198.19.0.11",
                    ANNOTATION_BACKEND_DATA: "{\"VNI\":1,\"VtepMAC\":\"02:00:00:00:01:0b\"}",
                }),
            ),
            node(
                "n2",
                json!({
                    ANNOTATION_PUBLIC_IP: "198.19.0.12",
                    ANNOTATION_BACKEND_DATA: "{\"VtepMAC\":\"02:00:00:00:01:0c\"}",
                }),
            ),
            node("plain", json!({ "other": "x" })),
            json!({ "metadata": {} }),
        ];
        let (v, problems) = vteps(&nodes);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(v.len(), 2);
        assert_eq!(
            v["n1"],
            Vtep {
                ip: Ipv4Addr::new(198, 19, 0, 11),
                mac: "02:00:00:00:01:0b".parse().unwrap(),
                vni: Some(1)
            }
        );
        assert_eq!(v["n2"].vni, None);
    }

    #[test]
    fn bad_annotations_are_problems_that_name_the_node() {
        let nodes = vec![
            node("a", json!({ ANNOTATION_PUBLIC_IP: "198.19.0.11" })),
            node(
                "b",
                json!({ ANNOTATION_PUBLIC_IP: "x", ANNOTATION_BACKEND_DATA: "{}" }),
            ),
            node(
                "c",
                json!({ ANNOTATION_PUBLIC_IP: "198.19.0.1", ANNOTATION_BACKEND_DATA: "{not json" }),
            ),
            node(
                "d",
                json!({ ANNOTATION_PUBLIC_IP: "198.19.0.1", ANNOTATION_BACKEND_DATA: "{\"VtepMAC\":\"01:00:5e:00:00:01\"}" }),
            ),
            node(
                "e",
                json!({ ANNOTATION_PUBLIC_IP: "198.19.0.1", ANNOTATION_BACKEND_DATA: "{\"VtepMAC\":\"02:00:00:00:00:01\",\"VNI\":16777216}" }),
            ),
            node(
                "f",
                json!({ ANNOTATION_BACKEND_TYPE: "host-gw", ANNOTATION_PUBLIC_IP: "198.19.0.1", ANNOTATION_BACKEND_DATA: "null" }),
            ),
        ];
        let (v, problems) = vteps(&nodes);
        assert!(v.is_empty());
        let names: Vec<&str> = problems.iter().map(|p| p.node.as_str()).collect();
        assert_eq!(names, ["a", "b", "c", "d", "e", "f"]);
        for p in &problems {
            assert!(p.message.contains(&format!("node {}", p.node)), "{p:?}");
        }
    }
}
