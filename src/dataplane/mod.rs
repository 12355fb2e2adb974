//! Poll-mode workers.
