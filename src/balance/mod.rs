//! Backend selection, connection table and the forward pipeline.

pub mod hash;
pub mod maglev;
