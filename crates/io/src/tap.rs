//! TAP attachment: podlb creates a TAP device, enslaves it to a bridge (the
//! node's cbr0) and becomes its own L2 host on it, with its own MAC.
//!
//! The device is opened with IFF_VNET_HDR and TSO/checksum offloads, so the
//! kernel hands over whole GSO frames with partial checksums and takes them
//! back the same way. With several workers it is a multi-queue device: each
//! worker owns one queue and the kernel spreads flows over them.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use crate::sys::{self, VirtioNetHdr, VNET_F_NEEDS_CSUM, VNET_HDR_LEN};
use crate::{BatchStats, Device, Injector};
use podlb_wire::PacketMeta;

/// Frames read per `poll` at most (each is one read(2)).
const BATCH: usize = 64;
const BUF: usize = 65536 + 128;

/// One queue of a TAP device.
pub struct TapQueue {
    fd: OwnedFd,
    buf: Box<[u8]>,
}

fn open_queue(name: &str, multi_queue: bool) -> io::Result<OwnedFd> {
    // SAFETY: open(2) of a constant NUL-terminated path; checked below.
    let fd = unsafe {
        libc::open(
            c"/dev/net/tun".as_ptr(),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("/dev/net/tun: {e} (needs CAP_NET_ADMIN and the tun module)"),
        ));
    }
    // SAFETY: fd is new and owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut ifr = sys::ifreq_with_name(name)?;
    let mut flags = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR;
    if multi_queue {
        flags |= libc::IFF_MULTI_QUEUE;
    }
    ifr.ifr_ifru.ifru_flags = flags as libc::c_short;
    // SAFETY: TUNSETIFF reads (and may write back the name of) a valid ifreq.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut ifr) } < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("TUNSETIFF {name}: {e}")));
    }
    let off = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6;
    // SAFETY: TUNSETOFFLOAD takes its argument by value.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETOFFLOAD, off as libc::c_ulong) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// Creates TAP device `name` with `queues` queues, sets it up and enslaves
/// it to `bridge`. The device disappears when every queue is closed.
pub fn create(name: &str, bridge: &str, queues: usize) -> io::Result<Vec<TapQueue>> {
    let mq = queues > 1;
    let mut out = Vec::with_capacity(queues);
    for _ in 0..queues.max(1) {
        out.push(TapQueue {
            fd: open_queue(name, mq)?,
            buf: vec![0u8; BUF].into_boxed_slice(),
        });
    }
    sys::bridge_add(bridge, name)?;
    sys::set_up(name)?;
    Ok(out)
}

impl TapQueue {
    /// An injector writing into this device.
    pub fn injector(&self) -> io::Result<TapInjector> {
        Ok(TapInjector {
            fd: self.fd.try_clone()?,
        })
    }
}

impl Device for TapQueue {
    fn poll<F: FnMut(&mut [u8], PacketMeta) -> bool>(
        &mut self,
        f: &mut F,
    ) -> io::Result<BatchStats> {
        let mut st = BatchStats::default();
        for _ in 0..BATCH {
            // SAFETY: buf is a valid writable buffer of its length.
            let n = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr() as *mut libc::c_void,
                    self.buf.len(),
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => break,
                    _ => return Err(e),
                }
            }
            let n = n as usize;
            st.rx += 1;
            if n < VNET_HDR_LEN {
                st.malformed += 1;
                continue;
            }
            st.rx_bytes += (n - VNET_HDR_LEN) as u64;
            let (hdr, frame) = self.buf[..n].split_at_mut(VNET_HDR_LEN);
            let vh = VirtioNetHdr::read(hdr);
            let csum_partial = vh.is_some_and(|h| h.flags & VNET_F_NEEDS_CSUM != 0);
            if f(
                frame,
                PacketMeta {
                    csum_partial,
                    tx_keeps_partial: true,
                    gso_size: vh.map_or(0, |h| h.gso()),
                    ..Default::default()
                },
            ) {
                // SAFETY: buf[..n] is initialised and valid for reads.
                let w = unsafe {
                    libc::write(
                        self.fd.as_raw_fd(),
                        self.buf.as_ptr() as *const libc::c_void,
                        n,
                    )
                };
                if w == n as isize {
                    st.tx += 1;
                } else {
                    st.tx_errors += 1;
                }
            }
        }
        Ok(st)
    }

    fn injector(&self) -> io::Result<Box<dyn Injector>> {
        self.injector().map(|i| Box::new(i) as Box<dyn Injector>)
    }

    fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        sys::wait_readable(self.fd.as_raw_fd(), timeout).map(|_| ())
    }
}

/// Writes control-plane frames into the TAP device (prefixed with an empty
/// virtio-net header).
pub struct TapInjector {
    fd: OwnedFd,
}

impl Injector for TapInjector {
    fn inject(&self, frame: &[u8]) -> io::Result<()> {
        let hdr = [0u8; VNET_HDR_LEN];
        let iov = [
            libc::iovec {
                iov_base: hdr.as_ptr() as *mut libc::c_void,
                iov_len: hdr.len(),
            },
            libc::iovec {
                iov_base: frame.as_ptr() as *mut libc::c_void,
                iov_len: frame.len(),
            },
        ];
        // SAFETY: both iovecs describe initialised buffers that outlive the
        // call; writev only reads them.
        let w = unsafe { libc::writev(self.fd.as_raw_fd(), iov.as_ptr(), 2) };
        if w < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}
