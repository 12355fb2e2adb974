//! The cloud address mover, sans-IO (docs/cloud.md): what to claim when
//! ([`mover`]) and which AWS credentials to sign with, fetched when
//! ([`credentials`]). The EC2, STS and instance-metadata calls and the exec
//! provider are `podlb::cloud`.

pub mod credentials;
pub mod mover;
