//! Network-namespace tests.
