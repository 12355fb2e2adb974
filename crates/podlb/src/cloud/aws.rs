//! The EC2 side of the mover: the four Query API actions as signed POSTs
//! (with credentials from [`super::credentials`], fetched again before they
//! expire), the ENI lookup in the instance metadata, and their answers read
//! back into [`Outcome`]s.
//!
//! Losing mastership does not call `UnassignPrivateIpAddresses` or
//! `DisassociateAddress`: the new master's `AllowReassignment=true` /
//! `AllowReassociation=true` moves the address in one call, while an
//! ex-master's release could only race it (a late unassign can remove the
//! address after the new master got it, if both name the same IP) and
//! leaves a window with the address nowhere. See docs/decisions.md.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant, SystemTime};

use super::credentials::{CredentialCache, Imds, Provider};
use super::http::{self, Endpoint};
use super::mover::{ApiError, Call, Outcome};
use super::sigv4::{self, Credentials};
use super::xml;

/// One HTTP exchange is bounded by this (connect, and each read/write).
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// `AWS_REGION`, else `AWS_DEFAULT_REGION`.
pub fn region_from_env() -> Option<String> {
    ["AWS_REGION", "AWS_DEFAULT_REGION"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
}

/// What to move where.
#[derive(Debug, Clone)]
pub struct AwsTarget {
    /// `None` until found in the instance metadata.
    pub network_interface_id: Option<String>,
    pub allocation_id: Option<String>,
    /// Associate the Elastic IP with this private IP of the ENI (`None`:
    /// the ENI's primary address).
    pub associate_private_ip: Option<Ipv4Addr>,
}

/// The Query parameters of `call` (after `Action` and `Version`).
pub fn params(call: &Call, t: &AwsTarget) -> Vec<(&'static str, String)> {
    let eni = t.network_interface_id.clone().unwrap_or_default();
    let alloc = t.allocation_id.clone().unwrap_or_default();
    match call {
        Call::AssignPrivateIp(ip) => vec![
            ("NetworkInterfaceId", eni),
            ("PrivateIpAddress.1", ip.to_string()),
            ("AllowReassignment", "true".into()),
        ],
        Call::AssociateAddress => {
            let mut v = vec![
                ("AllocationId", alloc),
                ("NetworkInterfaceId", eni),
                ("AllowReassociation", "true".into()),
            ];
            if let Some(ip) = t.associate_private_ip {
                v.push(("PrivateIpAddress", ip.to_string()));
            }
            v
        }
        Call::DescribeAddresses => vec![("AllocationId.1", alloc)],
        Call::DescribeNetworkInterfaces => vec![("NetworkInterfaceId.1", eni)],
        Call::FindInterface => vec![],
    }
}

/// Reads an answer: an EC2 error document (or a non-2xx status) is an
/// [`ApiError`] with the API's Code and Message; otherwise the outcome.
pub fn parse(call: &Call, status: u16, body: &str) -> Result<Outcome, ApiError> {
    if let Some((code, message)) = xml::error(body) {
        return Err(ApiError { code, message });
    }
    if !(200..300).contains(&status) {
        let snippet: String = body.chars().take(200).collect();
        return Err(ApiError {
            code: format!("HTTP{status}"),
            message: snippet,
        });
    }
    match call {
        Call::AssignPrivateIp(_) | Call::AssociateAddress => {
            // `<return>false</return>` would be a refusal without an error.
            if xml::first(body, "return").as_deref() == Some("false") {
                return Err(ApiError {
                    code: "Refused".into(),
                    message: format!("{} returned false", call.action()),
                });
            }
            Ok(Outcome::Done)
        }
        Call::DescribeAddresses => {
            let Some(set) = xml::first(body, "addressesSet") else {
                return Err(ApiError {
                    code: "BadResponse".into(),
                    message: "DescribeAddresses without addressesSet".into(),
                });
            };
            if xml::first(&set, "allocationId").is_none() && xml::first(&set, "publicIp").is_none()
            {
                return Err(ApiError {
                    code: "NotFound".into(),
                    message: "the Elastic IP is not in DescribeAddresses".into(),
                });
            }
            Ok(Outcome::EipOwner(
                xml::first(&set, "networkInterfaceId").filter(|s| !s.is_empty()),
            ))
        }
        Call::DescribeNetworkInterfaces => {
            let Some(set) = xml::first(body, "networkInterfaceSet") else {
                return Err(ApiError {
                    code: "BadResponse".into(),
                    message: "DescribeNetworkInterfaces without networkInterfaceSet".into(),
                });
            };
            let ips = xml::all(&set, "privateIpAddress")
                .iter()
                .filter_map(|s| s.parse().ok())
                .collect();
            Ok(Outcome::Ips(ips))
        }
        Call::FindInterface => Err(ApiError {
            code: "BadCall".into(),
            message: "FindInterface is not an EC2 call".into(),
        }),
    }
}

/// Signs and sends EC2 Query calls; asks the instance metadata.
pub struct AwsClient {
    pub endpoint: Endpoint,
    pub region: String,
    pub provider: Provider,
    pub imds: Imds,
    pub credentials: CredentialCache<Credentials>,
    pub target: AwsTarget,
}

impl AwsClient {
    /// Fetches credentials now; on success the cache holds them, on
    /// failure it backs off (and keeps what it holds while usable).
    pub fn fetch_credentials(&mut self) -> Result<Option<Duration>, ApiError> {
        match self.provider.fetch(&mut self.imds) {
            Ok(f) => {
                self.credentials
                    .on_fetched(Instant::now(), f.creds, f.valid_for);
                Ok(f.valid_for)
            }
            Err(e) => {
                self.credentials.on_failed(Instant::now());
                Err(e)
            }
        }
    }

    pub fn call(&mut self, call: &Call) -> Result<Outcome, ApiError> {
        if *call == Call::FindInterface {
            return self.imds.interface_id().map(Outcome::Interface);
        }
        let Some(creds) = self.credentials.usable(Instant::now()) else {
            return Err(ApiError {
                code: "NoCredentials".into(),
                message: format!("no usable credentials from {}", self.provider.source.name()),
            });
        };
        let p = params(call, &self.target);
        let p: Vec<(&str, &str)> = p.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let body = sigv4::ec2_body(call.action(), &p);
        let date = sigv4::amz_date(SystemTime::now());
        let headers = sigv4::ec2_headers(
            creds,
            &self.region,
            &self.endpoint.host_header(),
            &body,
            &date,
        );
        let r =
            http::post(&self.endpoint, &headers, &body, HTTP_TIMEOUT).map_err(|e| ApiError {
                code: "Transport".into(),
                message: e,
            })?;
        parse(call, r.status, &r.body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> AwsTarget {
        AwsTarget {
            network_interface_id: Some("eni-0a".into()),
            allocation_id: Some("eipalloc-1".into()),
            associate_private_ip: None,
        }
    }

    #[test]
    fn call_parameters() {
        let ip = Ipv4Addr::new(10, 0, 0, 9);
        let p = params(&Call::AssignPrivateIp(ip), &target());
        assert_eq!(
            p,
            [
                ("NetworkInterfaceId", "eni-0a".to_string()),
                ("PrivateIpAddress.1", "10.0.0.9".into()),
                ("AllowReassignment", "true".into())
            ]
        );
        let mut t = target();
        t.associate_private_ip = Some(ip);
        let p = params(&Call::AssociateAddress, &t);
        assert_eq!(p[0], ("AllocationId", "eipalloc-1".to_string()));
        assert_eq!(p[2], ("AllowReassociation", "true".to_string()));
        assert_eq!(p[3], ("PrivateIpAddress", "10.0.0.9".to_string()));
        assert_eq!(
            params(&Call::DescribeAddresses, &t),
            [("AllocationId.1", "eipalloc-1".to_string())]
        );
        assert_eq!(
            params(&Call::DescribeNetworkInterfaces, &t),
            [("NetworkInterfaceId.1", "eni-0a".to_string())]
        );
    }

    #[test]
    fn errors_carry_code_and_message() {
        let body = "<?xml version=\"1.0\"?><Response><Errors><Error><Code>UnauthorizedOperation</Code>\
                    <Message>You are not authorized to perform this operation.</Message></Error></Errors>\
                    <RequestID>r</RequestID></Response>";
        let e = parse(&Call::AssociateAddress, 403, body).unwrap_err();
        assert_eq!(e.code, "UnauthorizedOperation");
        assert_eq!(
            e.message,
            "You are not authorized to perform this operation."
        );
        let e = parse(&Call::AssociateAddress, 502, "<html>bad gateway</html>").unwrap_err();
        assert_eq!(e.code, "HTTP502");
        let e = parse(&Call::DescribeAddresses, 200, "<x/>").unwrap_err();
        assert_eq!(e.code, "BadResponse");
    }

    #[test]
    fn claims_and_describes() {
        let ok =
            "<AssignPrivateIpAddressesResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\">\
                  <requestId>r</requestId><return>true</return></AssignPrivateIpAddressesResponse>";
        assert_eq!(
            parse(&Call::AssignPrivateIp(Ipv4Addr::LOCALHOST), 200, ok),
            Ok(Outcome::Done)
        );
        let refused = ok.replace("true", "false");
        assert!(parse(&Call::AssociateAddress, 200, &refused).is_err());

        let addr = |eni: &str| {
            format!(
                "<DescribeAddressesResponse><requestId>r</requestId><addressesSet><item>\
                 <publicIp>203.0.113.5</publicIp><allocationId>eipalloc-1</allocationId><domain>vpc</domain>\
                 {eni}<privateIpAddress>10.0.0.4</privateIpAddress></item></addressesSet></DescribeAddressesResponse>"
            )
        };
        assert_eq!(
            parse(
                &Call::DescribeAddresses,
                200,
                &addr("<associationId>eipassoc-1</associationId><networkInterfaceId>eni-0a</networkInterfaceId>")
            ),
            Ok(Outcome::EipOwner(Some("eni-0a".into())))
        );
        assert_eq!(
            parse(&Call::DescribeAddresses, 200, &addr("")),
            Ok(Outcome::EipOwner(None))
        );
        assert_eq!(
            parse(
                &Call::DescribeAddresses,
                200,
                "<DescribeAddressesResponse><addressesSet/></DescribeAddressesResponse>"
            )
            .unwrap_err()
            .code,
            "BadResponse"
        );

        let eni = "<DescribeNetworkInterfacesResponse><networkInterfaceSet><item>\
                   <networkInterfaceId>eni-0a</networkInterfaceId><privateIpAddress>10.0.0.4</privateIpAddress>\
                   <privateIpAddressesSet><item><privateIpAddress>10.0.0.4</privateIpAddress><primary>true</primary></item>\
                   <item><privateIpAddress>10.0.0.100</privateIpAddress><primary>false</primary></item>\
                   </privateIpAddressesSet></item></networkInterfaceSet></DescribeNetworkInterfacesResponse>";
        match parse(&Call::DescribeNetworkInterfaces, 200, eni) {
            Ok(Outcome::Ips(v)) => assert!(v.contains(&Ipv4Addr::new(10, 0, 0, 100))),
            o => panic!("{o:?}"),
        }
    }
}
