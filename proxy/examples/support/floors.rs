//! What the two floors (`floor.rs`, the hyper one, and `rawfloor.rs`, the one of no HTTP library)
//! share, so that they differ only in how they proxy a connection: their arguments, their runtime
//! and accept loop, and their random pick.

use std::cell::Cell;
use std::future::Future;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};

/// `LISTEN BLUE_ADDR GREEN_ADDR GREEN_BASIS_POINTS`, read from the command line.
pub struct Args {
    /// Where the floor listens.
    pub listen: SocketAddr,
    /// Blue's and green's one endpoint each.
    pub backends: [SocketAddr; 2],
    /// Green's weight in basis points, 0..=10000.
    pub green_bp: u64,
}

/// Reads the arguments; a usage error exits 2 naming the argument, prefixed by `name`.
pub fn args(name: &str) -> Args {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, blue, green, green_bp] = args.as_slice() else {
        eprintln!("usage: {name} LISTEN BLUE_ADDR GREEN_ADDR GREEN_BASIS_POINTS");
        std::process::exit(2);
    };
    let parse = |what: &str, text: &str| -> SocketAddr {
        text.parse().unwrap_or_else(|error| {
            eprintln!("{name}: {what} {text:?}: {error}");
            std::process::exit(2)
        })
    };
    let green_bp = match green_bp.parse() {
        Ok(bp) if bp <= 10_000 => bp,
        _ => {
            eprintln!("{name}: GREEN_BASIS_POINTS {green_bp:?}: expected 0..=10000");
            std::process::exit(2)
        }
    };
    Args {
        listen: parse("LISTEN", listen),
        backends: [parse("BLUE_ADDR", blue), parse("GREEN_ADDR", green)],
        green_bp,
    }
}

/// Listens on `listen` in one current-thread runtime and runs `serve` on each accepted
/// connection (`TCP_NODELAY` set) as a task of its own; never returns. A failed bind exits 1.
pub fn run<F, S>(name: &str, listen: SocketAddr, serve: S) -> !
where
    S: Fn(TcpStream) -> F + 'static,
    F: Future<Output = ()> + 'static,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let listener = TcpListener::bind(listen).await.unwrap_or_else(|error| {
            eprintln!("{name}: bind {listen}: {error}");
            std::process::exit(1)
        });
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::task::spawn_local(serve(stream));
        }
    })
}

thread_local! {
    static RNG: Cell<u64> = const { Cell::new(0x9e37_79b9_7f4a_7c15) };
}

/// A uniform draw in `0..n` (wyrand; Lemire's multiply-shift reduction).
pub fn rng_below(n: u64) -> u64 {
    RNG.with(|state| {
        let s = state.get().wrapping_add(0xa076_1d64_78bd_642f);
        state.set(s);
        let t = u128::from(s) * u128::from(s ^ 0xe703_7ed1_a0b4_28db);
        let r = ((t >> 64) as u64) ^ (t as u64);
        ((u128::from(r) * u128::from(n)) >> 64) as u64
    })
}
