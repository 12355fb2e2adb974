//! Control plane.

pub mod demo;
pub mod netns;
