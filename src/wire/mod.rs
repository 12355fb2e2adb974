//! Zero-copy packet views and emitters.
