//! The ports `{port}` instances are given: a free one from the kernel's ephemeral range, or from
//! the spec's `port_range`.

use std::net::Ipv4Addr;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU32, Ordering};

/// Hands out free ports on 127.0.0.1 for `{port}` instances; shared by every workload a driver
/// starts, so that instances started one after the other do not get the same port before the
/// first has bound it.
#[derive(Debug, Default)]
pub struct Ports {
    /// The spec's `port_range`; `None`: the kernel's ephemeral range.
    range: Option<RangeInclusive<u16>>,
    /// Where the next scan of `range` starts (an offset into it): past the last port handed out.
    next: AtomicU32,
}

impl Ports {
    /// Ports from `range` (the spec's `port_range`), or from the kernel's ephemeral range when
    /// `None`.
    pub fn new(range: Option<RangeInclusive<u16>>) -> Ports {
        Ports {
            range,
            next: AtomicU32::new(0),
        }
    }

    /// A port no one listens on now, other than those in `given` (handed out to instances that
    /// may not have bound theirs yet). In a range, the scan starts past the port handed out last
    /// and goes round once. The port is released before the instance binds it; another process
    /// could take it in between, which the readiness probe then reports.
    ///
    /// # Errors
    /// When every port of the range is taken (`every port of port_range 25100-25101 is taken
    /// (2 tried on 127.0.0.1): widen port_range or free one`), or the kernel gives no port.
    pub fn pick(&self, given: &[u16]) -> Result<u16, String> {
        let Some(range) = &self.range else {
            return ephemeral().map_err(|e| format!("cannot find a free port: {e}"));
        };
        let (from, to) = (*range.start(), *range.end());
        let len = u32::from(to - from) + 1;
        let start = self.next.load(Ordering::Relaxed) % len;
        for step in 0..len {
            let offset = (start + step) % len;
            // `offset < len`, so `from + offset <= to`.
            let Ok(port) = u16::try_from(u32::from(from) + offset) else {
                continue;
            };
            if !given.contains(&port) && is_free(port) {
                self.next.store(offset + 1, Ordering::Relaxed);
                return Ok(port);
            }
        }
        Err(format!(
            "every port of port_range {from}-{to} is taken ({len} tried on 127.0.0.1): widen \
             port_range or free one"
        ))
    }
}

/// Whether 127.0.0.1:`port` can be bound now.
pub(super) fn is_free(port: u16) -> bool {
    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// A free port the kernel picks (bind port 0, read it, release it).
fn ephemeral() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_skips_taken_ports_and_ports_given_and_says_when_all_are_taken() {
        // Two ports the kernel holds for this test: a range of one port each.
        let held = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let port = held.local_addr().expect("addr").port();
        let taken = Ports::new(Some(port..=port));
        let message = taken.pick(&[]).expect_err("the only port is held");
        assert_eq!(
            message,
            format!(
                "every port of port_range {port}-{port} is taken (1 tried on 127.0.0.1): widen \
                 port_range or free one"
            )
        );
        drop(held);
        let free = Ports::new(Some(port..=port));
        assert_eq!(free.pick(&[]), Ok(port), "free once released");
        assert!(
            free.pick(&[port]).is_err(),
            "a port given out is not given twice"
        );
        assert!(Ports::new(None).pick(&[]).is_ok_and(|p| p > 0));
    }
}
