//! Backend selection, connection table and the forward pipeline.
