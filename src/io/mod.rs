//! Sockets and devices. The only module that holds `unsafe` code.
