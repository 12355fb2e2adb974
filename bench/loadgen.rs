//! Open-loop HTTP/1.1 load generator for the latency benchmarks (`bench/netns_bench.py`).
//!
//! wrk is closed-loop: a connection sends its next request only when the previous answer is
//! in, so when the server stalls the requests that *would* have been sent are never sent and
//! the stall shows up once instead of in every request it delayed ("coordinated omission").
//! Here the k-th request of connection i (of N) is *scheduled* at
//! `start + (k·N + i) / R`, a fixed total rate R spread evenly over the connections, and its
//! latency runs from that scheduled time to the last byte of the answer. A request whose
//! connection is still busy waits, and the wait counts. That is wrk2's correction.
//!
//! Keep-alive GETs over N connections (no pipelining), driven by one mio event loop per
//! thread; a timerfd wakes the loop at the next scheduled send with nanosecond precision
//! (epoll's own timeout has millisecond granularity, which would add up to 1 ms to every
//! latency at low rates). Latencies go into a log-linear histogram (128 sub-buckets per
//! power of two: ≤ 0.8% relative error). The result is one JSON object on stdout.
//!
//! ```text
//! cargo run --release --example loadgen -- --rate 20000 --duration 5 198.18.0.21:80
//! ```

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream as StdTcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};

// ------------------------------------------------------------------------------------------
// histogram
// ------------------------------------------------------------------------------------------

/// Sub-bucket bits: 2^7 = 128 linear sub-buckets per power of two.
const SUB_BITS: u32 = 7;
const SUB: u64 = 1 << SUB_BITS;
/// Enough buckets for every u64 (see `Histogram::index`).
const BUCKETS: usize = ((64 - SUB_BITS as usize) << SUB_BITS) + SUB as usize;

/// Log-linear histogram of u64 values (nanoseconds here). Values below 128 are exact; above,
/// each power of two [2^e, 2^(e+1)) is cut into 128 equal sub-buckets.
#[derive(Clone)]
struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
    min: u64,
    sum: u128,
}

impl Histogram {
    fn new() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            max: 0,
            min: u64::MAX,
            sum: 0,
        }
    }

    /// Bucket of `v`: `shift = max(0, msb(v) - 7)`, index `shift·128 + (v >> shift)`. For a
    /// given shift s ≥ 1, `v >> s` lies in [128, 256), so the ranges of successive shifts
    /// follow each other without gap or overlap.
    fn index(v: u64) -> usize {
        let msb = 63u32.saturating_sub(v.leading_zeros());
        let shift = msb.saturating_sub(SUB_BITS);
        ((u64::from(shift) << SUB_BITS) + (v >> shift)) as usize
    }

    /// Smallest and largest value that fall in bucket `idx`.
    fn bounds(idx: usize) -> (u64, u64) {
        let idx = idx as u64;
        if idx < 2 * SUB {
            return (idx, idx);
        }
        let shift = (idx >> SUB_BITS) - 1;
        let m = idx - (shift << SUB_BITS);
        let lo = m << shift;
        (lo, lo + ((1u64 << shift) - 1))
    }

    fn record(&mut self, v: u64) {
        self.counts[Self::index(v)] += 1;
        self.total += 1;
        self.max = self.max.max(v);
        self.min = self.min.min(v);
        self.sum += u128::from(v);
    }

    fn merge(&mut self, o: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&o.counts) {
            *a += b;
        }
        self.total += o.total;
        self.max = self.max.max(o.max);
        self.min = self.min.min(o.min);
        self.sum += o.sum;
    }

    /// The value at quantile `q` (0..=1): the upper bound of the bucket holding the
    /// ⌈q·n⌉-th smallest value, capped at the largest value seen. 0 when empty.
    fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::bounds(i).1.min(self.max);
            }
        }
        self.max
    }

    fn mean(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.sum as f64 / self.total as f64
        }
    }
}

// ------------------------------------------------------------------------------------------
// schedule
// ------------------------------------------------------------------------------------------

/// Scheduled send time, in ns after the start, of request `k` of connection `conn` when
/// `conns` connections share a total rate of `rate` requests per second: the global request
/// number is `k·conns + conn`, and global requests are `1/rate` apart.
fn scheduled_ns(k: u64, conn: usize, conns: usize, rate: f64) -> u64 {
    let j = k as f64 * conns as f64 + conn as f64;
    (j * 1e9 / rate).round() as u64
}

/// How many requests the schedule holds for connection `conn` in `[0, end_ns)`.
fn requests_in_window(conn: usize, conns: usize, rate: f64, end_ns: u64) -> u64 {
    // smallest k with scheduled_ns(k) >= end_ns, found without float drift at the edge
    let mut k = ((end_ns as f64 * rate / 1e9 - conn as f64) / conns as f64)
        .ceil()
        .max(0.0) as u64;
    while k > 0 && scheduled_ns(k - 1, conn, conns, rate) >= end_ns {
        k -= 1;
    }
    while scheduled_ns(k, conn, conns, rate) < end_ns {
        k += 1;
    }
    k
}

// ------------------------------------------------------------------------------------------
// HTTP response parsing
// ------------------------------------------------------------------------------------------

#[derive(Debug, PartialEq)]
enum Parsed {
    /// Not all of it yet.
    Partial,
    /// A whole response of `len` bytes; `status`; the server will close (`Connection: close`).
    Done {
        len: usize,
        status: u16,
        close: bool,
    },
    /// Not something this tool can read (no Content-Length, bad status line).
    Bad(&'static str),
}

fn parse_response(buf: &[u8]) -> Parsed {
    let Some(hdr_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > 64 * 1024 {
            Parsed::Bad("header too long")
        } else {
            Parsed::Partial
        };
    };
    let head = &buf[..hdr_end];
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let status_line = lines.next().unwrap_or_default();
    let status = match status_line.split(|&b| b == b' ').nth(1) {
        Some(s) if status_line.starts_with(b"HTTP/1.") => {
            match std::str::from_utf8(s).ok().and_then(|s| s.parse().ok()) {
                Some(v) => v,
                None => return Parsed::Bad("bad status code"),
            }
        }
        _ => return Parsed::Bad("bad status line"),
    };
    let mut clen = None;
    let mut close = false;
    for l in lines {
        let Some(colon) = l.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&l[..colon], l[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"content-length") {
            clen = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<usize>().ok());
            if clen.is_none() {
                return Parsed::Bad("bad Content-Length");
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            close = value.eq_ignore_ascii_case(b"close");
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return Parsed::Bad("chunked responses are not supported");
        }
    }
    let Some(clen) = clen else {
        return Parsed::Bad("no Content-Length");
    };
    let len = hdr_end + 4 + clen;
    if buf.len() < len {
        Parsed::Partial
    } else {
        Parsed::Done { len, status, close }
    }
}

// ------------------------------------------------------------------------------------------
// the event loop
// ------------------------------------------------------------------------------------------

#[derive(Clone)]
struct Opts {
    /// Connection i goes to `addrs[i % len]` (several VIPs: issue 6's scale case).
    addrs: Vec<SocketAddr>,
    /// `Connection: close`: every request on a new connection (new flows per second).
    close: bool,
    host: String,
    path: String,
    conns: usize,
    rate: f64,
    duration: Duration,
    threads: usize,
    timeout: Duration,
}

#[derive(Default)]
struct Counters {
    completed: u64,
    errors: u64,
    timeouts: u64,
    non2xx: u64,
    unsent: u64,
    reconnects: u64,
    last_done_ns: u64,
}

struct Conn {
    /// Global connection number (0..N): fixes its slots in the schedule.
    id: usize,
    stream: Option<TcpStream>,
    /// Next request number on this connection.
    next_k: u64,
    /// Requests this connection has in the schedule window.
    total_k: u64,
    /// (scheduled ns, actual send ns) of the request in flight.
    inflight: Option<(u64, u64)>,
    /// Bytes of the request still to write (partial write).
    wpos: usize,
    buf: Vec<u8>,
    /// While disconnected: retry connecting at this time.
    retry_ns: u64,
}

const TIMER: Token = Token(usize::MAX);

fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = StdTcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    s.set_nodelay(true)?;
    s.set_nonblocking(true)?;
    Ok(TcpStream::from_std(s))
}

struct Worker {
    o: Opts,
    start: Instant,
    end_ns: u64,
    req: Vec<u8>,
    poll: Poll,
    timer: TimerFd,
    armed_ns: Option<u64>,
    conns: Vec<Conn>,
    hist: Histogram,
    c: Counters,
}

impl Worker {
    fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn due(&self, c: &Conn) -> Option<u64> {
        (c.inflight.is_none() && c.next_k < c.total_k)
            .then(|| scheduled_ns(c.next_k, c.id, self.o.conns, self.o.rate))
    }

    fn drop_conn(&mut self, i: usize) {
        if let Some(mut s) = self.conns[i].stream.take() {
            let _ = self.poll.registry().deregister(&mut s);
        }
        self.conns[i].buf.clear();
        self.conns[i].wpos = 0;
        self.conns[i].retry_ns = 0;
    }

    /// A request failed (error, timeout): count it, skip it, drop the connection.
    fn fail(&mut self, i: usize, timeout: bool) {
        if self.conns[i].inflight.take().is_some() {
            self.conns[i].next_k += 1;
        }
        if timeout {
            self.c.timeouts += 1;
        } else {
            self.c.errors += 1;
        }
        self.drop_conn(i);
    }

    fn ensure_connected(&mut self, i: usize, now: u64) -> bool {
        if self.conns[i].stream.is_some() {
            return true;
        }
        if now < self.conns[i].retry_ns {
            return false;
        }
        let id = self.conns[i].id;
        // Non-blocking: the request is written once the handshake completes (the socket
        // turns writable); a lost SYN then stalls this connection only, and the request
        // times out like any other.
        match TcpStream::connect(self.o.addrs[id % self.o.addrs.len()]) {
            Ok(mut s) => {
                let _ = s.set_nodelay(true);
                let r = self.poll.registry().register(
                    &mut s,
                    Token(i),
                    Interest::READABLE | Interest::WRITABLE,
                );
                if r.is_err() {
                    self.c.errors += 1;
                    return false;
                }
                self.c.reconnects += 1;
                self.conns[i].stream = Some(s);
                true
            }
            Err(_) => {
                self.c.errors += 1;
                self.conns[i].retry_ns = now + 100_000_000;
                false
            }
        }
    }

    /// Sends the next request of connection `i` if it is due and the connection idle.
    fn maybe_send(&mut self, i: usize, now: u64) {
        let Some(t) = self.due(&self.conns[i]) else {
            return;
        };
        if t > now || !self.ensure_connected(i, now) {
            return;
        }
        self.conns[i].inflight = Some((t, now));
        self.conns[i].wpos = 0;
        self.flush(i);
    }

    fn flush(&mut self, i: usize) {
        let c = &mut self.conns[i];
        if c.inflight.is_none() || c.wpos >= self.req.len() {
            return;
        }
        let Some(s) = c.stream.as_mut() else { return };
        loop {
            match s.write(&self.req[c.wpos..]) {
                Ok(0) => return self.fail(i, false),
                Ok(n) => {
                    c.wpos += n;
                    if c.wpos >= self.req.len() {
                        return;
                    }
                }
                // still connecting: written when the socket turns writable
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::NotConnected
                    ) =>
                {
                    return
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.fail(i, false),
            }
        }
    }

    fn read(&mut self, i: usize) {
        let mut tmp = [0u8; 16 * 1024];
        loop {
            let Some(s) = self.conns[i].stream.as_mut() else {
                return;
            };
            match s.read(&mut tmp) {
                Ok(0) => return self.fail(i, false),
                Ok(n) => {
                    self.conns[i].buf.extend_from_slice(&tmp[..n]);
                    if !self.complete(i) {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.fail(i, false),
            }
        }
    }

    /// Takes a complete response off the buffer; false when the connection was dropped.
    fn complete(&mut self, i: usize) -> bool {
        match parse_response(&self.conns[i].buf) {
            Parsed::Partial => true,
            Parsed::Bad(_) => {
                self.fail(i, false);
                false
            }
            Parsed::Done { len, status, close } => {
                let now = self.now();
                let c = &mut self.conns[i];
                c.buf.drain(..len);
                let Some((sched, _)) = c.inflight.take() else {
                    // an answer nobody asked for
                    self.fail(i, false);
                    return false;
                };
                c.next_k += 1;
                self.hist.record(now.saturating_sub(sched));
                self.c.completed += 1;
                self.c.last_done_ns = now;
                if !(200..300).contains(&status) {
                    self.c.non2xx += 1;
                }
                if close {
                    self.drop_conn(i);
                    return false;
                }
                self.maybe_send(i, now);
                true
            }
        }
    }

    fn arm(&mut self, at_ns: Option<u64>) {
        if at_ns == self.armed_ns {
            return;
        }
        self.armed_ns = at_ns;
        let r = match at_ns {
            Some(t) => {
                let at = (self.start + Duration::from_nanos(t))
                    .saturating_duration_since(Instant::now());
                // 0 would disarm the timer: fire after 1 ns instead
                let at = at.max(Duration::from_nanos(1));
                self.timer.set(
                    Expiration::OneShot(TimeSpec::from_duration(at)),
                    TimerSetTimeFlags::empty(),
                )
            }
            None => self.timer.unset(),
        };
        r.expect("timerfd_settime");
    }

    fn run(mut self) -> (Histogram, Counters) {
        let mut events = Events::with_capacity(256);
        let fd = self.timer.as_fd().as_raw_fd();
        self.poll
            .registry()
            .register(&mut SourceFd(&fd), TIMER, Interest::READABLE)
            .expect("register timerfd");
        for i in 0..self.conns.len() {
            if let Some(s) = self.conns[i].stream.as_mut() {
                self.poll
                    .registry()
                    .register(s, Token(i), Interest::READABLE | Interest::WRITABLE)
                    .expect("register socket");
            }
        }
        let hard_end = self.end_ns + self.o.timeout.as_nanos() as u64;
        let timeout_ns = self.o.timeout.as_nanos() as u64;
        loop {
            let now = self.now();
            let mut next: Option<u64> = None;
            let mut busy = false;
            for i in 0..self.conns.len() {
                self.maybe_send(i, now);
                let c = &self.conns[i];
                if let Some((_, sent)) = c.inflight {
                    if now.saturating_sub(sent) > timeout_ns {
                        self.fail(i, true);
                        continue;
                    }
                    busy = true;
                    next = Some(next.map_or(sent + timeout_ns, |n: u64| n.min(sent + timeout_ns)));
                } else if let Some(t) = self.due(c) {
                    busy = true;
                    let t = if c.stream.is_none() {
                        t.max(c.retry_ns)
                    } else {
                        t
                    };
                    next = Some(next.map_or(t, |n: u64| n.min(t)));
                }
            }
            if !busy {
                break;
            }
            if now >= hard_end {
                for i in 0..self.conns.len() {
                    let c = &self.conns[i];
                    self.c.unsent += c.total_k - c.next_k - u64::from(c.inflight.is_some());
                    if c.inflight.is_some() {
                        self.fail(i, true);
                    }
                }
                break;
            }
            let next = next.map(|n| n.min(hard_end));
            // Closer than 20 µs: poll without sleeping rather than arm the timer.
            let spin = next.is_some_and(|n| n <= now + 20_000);
            if !spin {
                self.arm(next);
            }
            let t = if spin { Some(Duration::ZERO) } else { None };
            if let Err(e) = self.poll.poll(&mut events, t) {
                if e.kind() != io::ErrorKind::Interrupted {
                    panic!("poll: {e}");
                }
            }
            for ev in events.iter() {
                if ev.token() == TIMER {
                    let _ = self.timer.wait(); // non-blocking read: clears the expiry
                    self.armed_ns = None;
                    continue;
                }
                let i = ev.token().0;
                if ev.is_writable() {
                    self.flush(i);
                }
                if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                    self.read(i);
                }
            }
        }
        (self.hist, self.c)
    }
}

// ------------------------------------------------------------------------------------------
// main
// ------------------------------------------------------------------------------------------

const USAGE: &str = "usage: loadgen [--rate R] [--duration S] [--connections N] [--threads T] \
[--timeout S] [--path P] [--close] HOST:PORT[,HOST:PORT...]
  open-loop HTTP/1.1 keep-alive GETs at R req/s in total (default 1000) for S seconds
  (default 5) over N connections (default 32) in T threads (default 1); latency from each
  request's scheduled send time; prints JSON. Several targets: connection i goes to target
  i mod count. --close: `Connection: close`, a new connection (non-blocking connect, counted
  in the latency) for every request";

fn parse_args() -> Result<Opts, String> {
    let mut a = std::env::args().skip(1);
    let (mut rate, mut dur, mut conns, mut threads, mut timeout) = (1000.0, 5.0, 32, 1, 2.0);
    let mut path = "/".to_string();
    let mut close = false;
    let mut target = None;
    while let Some(x) = a.next() {
        let mut val = |name: &str| a.next().ok_or(format!("{name} needs a value"));
        let num = |s: String, name: &str| {
            s.parse::<f64>()
                .map_err(|_| format!("{name}: not a number: {s}"))
        };
        match x.as_str() {
            "--rate" | "-R" => rate = num(val("--rate")?, "--rate")?,
            "--duration" | "-d" => dur = num(val("--duration")?, "--duration")?,
            "--connections" | "-c" => conns = num(val("--connections")?, "--connections")? as usize,
            "--threads" | "-t" => threads = num(val("--threads")?, "--threads")? as usize,
            "--timeout" => timeout = num(val("--timeout")?, "--timeout")?,
            "--path" => path = val("--path")?,
            "--close" => close = true,
            "-h" | "--help" => return Err(USAGE.to_string()),
            s if s.starts_with('-') => return Err(format!("unknown option {s}\n{USAGE}")),
            s => target = Some(s.to_string()),
        }
    }
    let target = target.ok_or(USAGE.to_string())?;
    let mut addrs = Vec::new();
    for t in target.split(',') {
        let a = t
            .to_socket_addrs()
            .map_err(|e| format!("{t}: {e}"))?
            .next()
            .ok_or(format!("{t}: no address"))?;
        addrs.push(a);
    }
    if !(rate > 0.0 && dur > 0.0 && timeout > 0.0) || conns == 0 || threads == 0 {
        return Err(
            "--rate, --duration, --timeout, --connections and --threads must be > 0".into(),
        );
    }
    let first = target.split(',').next().unwrap_or_default();
    let host = first
        .rsplit_once(':')
        .map_or(first.to_string(), |(h, _)| h.to_string());
    Ok(Opts {
        addrs,
        close,
        host,
        path,
        conns,
        rate,
        duration: Duration::from_secs_f64(dur),
        threads: threads.min(conns),
        timeout: Duration::from_secs_f64(timeout),
    })
}

fn main() {
    let o = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: podlb-loadgen\r\n{}\r\n",
        o.path,
        o.host,
        if o.close { "Connection: close\r\n" } else { "" }
    )
    .into_bytes();
    let mut streams = Vec::with_capacity(o.conns);
    for i in 0..o.conns {
        let addr = o.addrs[i % o.addrs.len()];
        match connect(addr) {
            Ok(s) => streams.push(Some(s)),
            Err(e) if i + 1 == o.conns && streams.iter().all(Option::is_none) => {
                eprintln!("connect {addr}: {e}");
                std::process::exit(1);
            }
            Err(e) => {
                // the worker connects it again (and counts the failure) when it is due
                eprintln!("connect {addr}: {e} (retried)");
                streams.push(None);
            }
        }
    }
    let end_ns = o.duration.as_nanos() as u64;
    let start = Instant::now() + Duration::from_millis(20);
    let mut per_thread: Vec<Vec<Conn>> = (0..o.threads).map(|_| Vec::new()).collect();
    for (id, s) in streams.into_iter().enumerate() {
        per_thread[id % o.threads].push(Conn {
            id,
            stream: s,
            next_k: 0,
            total_k: requests_in_window(id, o.conns, o.rate, end_ns),
            inflight: None,
            wpos: 0,
            buf: Vec::with_capacity(4096),
            retry_ns: 0,
        });
    }
    let handles: Vec<_> = per_thread
        .into_iter()
        .map(|conns| {
            let o = o.clone();
            let req = req.clone();
            std::thread::spawn(move || {
                let w = Worker {
                    poll: Poll::new().expect("epoll"),
                    timer: TimerFd::new(ClockId::CLOCK_MONOTONIC, TimerFlags::TFD_NONBLOCK)
                        .expect("timerfd"),
                    armed_ns: None,
                    hist: Histogram::new(),
                    c: Counters::default(),
                    o,
                    start,
                    end_ns,
                    req,
                    conns,
                };
                while Instant::now() < start {
                    std::thread::sleep(start - Instant::now());
                }
                w.run()
            })
        })
        .collect();
    let mut h = Histogram::new();
    let mut c = Counters::default();
    for t in handles {
        let (th, tc) = t.join().expect("worker thread panicked");
        h.merge(&th);
        c.completed += tc.completed;
        c.errors += tc.errors;
        c.timeouts += tc.timeouts;
        c.non2xx += tc.non2xx;
        c.unsent += tc.unsent;
        c.reconnects += tc.reconnects;
        c.last_done_ns = c.last_done_ns.max(tc.last_done_ns);
    }
    let elapsed = (c.last_done_ns as f64 / 1e9).max(o.duration.as_secs_f64());
    let us = |ns: u64| ns as f64 / 1e3;
    let out = serde_json::json!({
        "targets": o.addrs.len(),
        "first_target": o.addrs[0].to_string(),
        "close": o.close,
        "connections": o.conns,
        "threads": o.threads,
        "target_rate": o.rate,
        "duration_s": o.duration.as_secs_f64(),
        "elapsed_s": elapsed,
        "requests": c.completed,
        "achieved_rate": c.completed as f64 / elapsed,
        "p50_us": us(h.quantile(0.50)),
        "p90_us": us(h.quantile(0.90)),
        "p99_us": us(h.quantile(0.99)),
        "p999_us": us(h.quantile(0.999)),
        "max_us": us(h.max),
        "min_us": us(if h.total == 0 { 0 } else { h.min }),
        "mean_us": h.mean() / 1e3,
        "errors": c.errors,
        "timeouts": c.timeouts,
        "non2xx": c.non2xx,
        "unsent": c.unsent,
        "reconnects": c.reconnects,
    });
    println!("{out}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_values_are_exact() {
        for v in 0..256u64 {
            let i = Histogram::index(v);
            assert_eq!(Histogram::bounds(i), (v, v), "value {v}");
        }
    }

    #[test]
    fn buckets_are_contiguous_and_cover_u64() {
        let mut prev_hi = Histogram::bounds(0).1;
        for i in 1..BUCKETS {
            let (lo, hi) = Histogram::bounds(i);
            assert_eq!(lo, prev_hi + 1, "bucket {i}");
            assert!(hi >= lo);
            prev_hi = hi;
        }
        assert_eq!(prev_hi, u64::MAX);
        assert_eq!(Histogram::index(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn values_fall_in_their_bucket_within_relative_error() {
        let mut v = 1u64;
        while v < u64::MAX / 4 {
            for x in [v, v + 1, v * 3 / 2, v * 2 - 1] {
                let (lo, hi) = Histogram::bounds(Histogram::index(x));
                assert!(lo <= x && x <= hi, "{x} not in [{lo}, {hi}]");
                assert!(
                    (hi - lo) as f64 <= x as f64 / 128.0,
                    "{x}: bucket [{lo}, {hi}] too wide"
                );
            }
            v = (v / 3).saturating_mul(7) + 1 + v % 3;
        }
    }

    #[test]
    fn quantiles_of_a_uniform_set() {
        let mut h = Histogram::new();
        for v in 1..=100_000u64 {
            h.record(v * 1000); // 1 µs .. 100 ms
        }
        for (q, want) in [
            (0.5, 50_000_000.0),
            (0.9, 90_000_000.0),
            (0.99, 99_000_000.0),
        ] {
            let got = h.quantile(q) as f64;
            assert!((got - want).abs() / want < 0.01, "q{q}: {got} vs {want}");
            assert!(got >= want, "quantile is the bucket's upper bound");
        }
        assert_eq!(h.quantile(1.0), 100_000_000);
        assert!((1000..=1008).contains(&h.quantile(0.0)));
        assert_eq!(h.total, 100_000);
        assert!((h.mean() - 50_000_500.0).abs() < 1.0);
    }

    #[test]
    fn merge_adds_up() {
        let (mut a, mut b) = (Histogram::new(), Histogram::new());
        for v in 0..1000 {
            a.record(v);
            b.record(v + 1_000_000);
        }
        a.merge(&b);
        assert_eq!(a.total, 2000);
        assert_eq!(a.max, 1_000_999);
        assert_eq!(a.min, 0);
        assert_eq!(a.quantile(0.5), 999);
        assert!(a.quantile(0.75) >= 1_000_499 && a.quantile(0.75) < 1_000_499 + 1_000_499 / 128);
        assert_eq!(Histogram::new().quantile(0.99), 0);
    }

    #[test]
    fn schedule_spreads_the_rate_over_connections() {
        // 1000 req/s over 4 connections: global requests 1 ms apart, connection i at i ms,
        // then every 4 ms
        assert_eq!(scheduled_ns(0, 0, 4, 1000.0), 0);
        assert_eq!(scheduled_ns(0, 3, 4, 1000.0), 3_000_000);
        assert_eq!(scheduled_ns(1, 0, 4, 1000.0), 4_000_000);
        assert_eq!(scheduled_ns(10, 2, 4, 1000.0), 42_000_000);
        // all connections together: every slot exactly once, in order
        let mut all: Vec<u64> = (0..4)
            .flat_map(|c| (0..25).map(move |k| scheduled_ns(k, c, 4, 1000.0)))
            .collect();
        all.sort_unstable();
        assert_eq!(all, (0..100).map(|j| j * 1_000_000).collect::<Vec<_>>());
        // fractional spacing: 3 req/s, 1 connection
        assert_eq!(scheduled_ns(1, 0, 1, 3.0), 333_333_333);
        assert_eq!(scheduled_ns(2, 0, 1, 3.0), 666_666_667);
    }

    #[test]
    fn window_holds_rate_times_duration() {
        for (rate, conns, secs) in [
            (1000.0, 4, 1.0),
            (100_000.0, 32, 5.0),
            (3.0, 1, 2.0),
            (7777.0, 32, 0.5),
        ] {
            let end = (secs * 1e9) as u64;
            let n: u64 = (0..conns)
                .map(|c| requests_in_window(c, conns, rate, end))
                .sum();
            assert_eq!(
                n,
                (rate * secs).ceil() as u64,
                "rate {rate} conns {conns} secs {secs}"
            );
            for c in 0..conns {
                let k = requests_in_window(c, conns, rate, end);
                assert!(scheduled_ns(k, c, conns, rate) >= end);
                assert!(k == 0 || scheduled_ns(k - 1, c, conns, rate) < end);
            }
        }
    }

    #[test]
    fn parses_responses() {
        let r = b"HTTP/1.1 200 OK\r\nServer: nginx\r\ncontent-length: 3\r\n\r\nok\n";
        assert_eq!(
            parse_response(r),
            Parsed::Done {
                len: r.len(),
                status: 200,
                close: false
            }
        );
        assert_eq!(parse_response(&r[..r.len() - 1]), Parsed::Partial);
        assert_eq!(parse_response(&r[..20]), Parsed::Partial);
        let mut two = r.to_vec();
        two.extend_from_slice(r);
        assert_eq!(
            parse_response(&two),
            Parsed::Done {
                len: r.len(),
                status: 200,
                close: false
            }
        );
        let c = b"HTTP/1.1 503 x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(
            parse_response(c),
            Parsed::Done {
                len: c.len(),
                status: 503,
                close: true
            }
        );
        assert!(matches!(
            parse_response(b"HTTP/1.1 200 OK\r\n\r\n"),
            Parsed::Bad(_)
        ));
        assert!(matches!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Parsed::Bad(_)
        ));
        assert!(matches!(parse_response(b"SSH-2.0\r\n\r\n"), Parsed::Bad(_)));
    }
}
