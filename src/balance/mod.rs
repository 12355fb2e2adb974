//! Backend selection, connection table and the forward pipeline. Sans-IO:
//! nothing here touches a socket, a thread or the clock.

pub mod flow;
pub mod forward;
pub mod hash;
pub mod maglev;
pub mod neighbor;
pub mod service;
pub mod stats;
