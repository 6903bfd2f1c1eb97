//! Free loopback ports for the services and stacks the tests and benches start.
//!
//! They are chosen below the kernel's ephemeral range. A port read from `bind(127.0.0.1:0)`
//! is in that range and is released before the child binds it; in between, any outbound
//! connection on the machine may take it as its source port, and the child fails with
//! "Address already in use" (a bench run lost its start-up step to this on 2026-12-05). The
//! kernel hands out no port below the range; a bind check skips the ones something listens on.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

pub const LOW: u32 = 10_000;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The lower end of `net.ipv4.ip_local_port_range` (32768 by default).
pub fn ephemeral_low() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

pub fn listenable(port: u32) -> bool {
    u16::try_from(port).is_ok_and(|p| TcpListener::bind(("127.0.0.1", p)).is_ok())
}

/// The first of `n` consecutive loopback ports nothing listens on.
pub fn free_run(n: u16) -> u16 {
    let n = u32::from(n);
    let high = ephemeral_low();
    if high < LOW + 1_000 {
        // A machine whose ephemeral range starts low: fall back to the kernel's choice.
        loop {
            let p = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            if (1..n).all(|i| listenable(u32::from(p) + i)) {
                return p;
            }
        }
    }
    for _ in 0..high - LOW - n {
        let p = candidate(NEXT.fetch_add(n, Ordering::Relaxed), n, high);
        if (0..n).all(|i| listenable(p + i)) {
            return p as u16;
        }
    }
    panic!("no {n} consecutive free loopback ports in {LOW}..{high}");
}

/// The `k`th port this process tries for a run of `n` below `high`. Each process starts
/// somewhere of its own, so test binaries and benches spread out; within a process the ports
/// tried advance.
fn candidate(k: u32, n: u32, high: u32) -> u32 {
    let start = std::process::id().wrapping_mul(7_919);
    LOW + start.wrapping_add(k) % (high - LOW - n)
}

pub fn free_port() -> u16 {
    free_run(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ports the harness gives the services and stacks it starts are below the kernel's
    /// ephemeral range, so no outbound connection can take one between the check and the
    /// child's bind; none is handed out twice, and one something listens on is skipped.
    ///
    /// It does not re-check a handed-out port afterwards: any other process on the machine may
    /// listen on it by then (CI's run of 2026-12-07 saw that once), which says nothing of the
    /// harness. Only this test calls `free_port` in this binary, so the port it holds is the
    /// very one the next call would have handed out.
    #[test]
    fn harness_ports_cannot_be_taken_by_outbound_connections() {
        let low = ephemeral_low();
        assert!(
            low >= LOW + 1_000,
            "this machine's ephemeral range starts at {low}: the harness falls back to the kernel's ports"
        );
        // Hold some outbound connections open meanwhile, as the stack's clients do.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let outbound: Vec<_> = (0..50)
            .map(|_| std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap())
            .collect();
        for c in &outbound {
            let source = u32::from(c.local_addr().unwrap().port());
            assert!(source >= low, "outbound source port {source} below {low}");
        }
        let mut seen = std::collections::HashSet::new();
        for round in 0..200 {
            // Every tenth round, listen on the port the next call would try first.
            let held = (round % 10 == 0).then(|| {
                let next = candidate(NEXT.load(Ordering::Relaxed), 1, low);
                let held = TcpListener::bind(("127.0.0.1", next as u16));
                (next, held)
            });
            let p = free_port();
            assert!(u32::from(p) < low, "{p} is in the ephemeral range");
            assert!(seen.insert(p), "{p} handed out twice");
            if let Some((next, _listener)) = held {
                assert_ne!(u32::from(p), next, "{next} is listened on, yet handed out");
            }
        }
        let r = free_run(3);
        assert!((0..3).all(|i| listenable(u32::from(r) + i)));
        assert!(u32::from(r) + 2 < low);
    }
}
