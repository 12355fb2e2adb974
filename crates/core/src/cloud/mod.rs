//! The cloud address mover, sans-IO (docs/cloud.md); the EC2 calls and the
//! exec provider are `podlb::cloud`.

pub mod mover;
