//! In-process tests of the proxy with real sockets on 127.0.0.1:0 and tiny hyper backends.
//! One binary, one module per scenario (STYLE §8).

mod access_log;
mod admin;
mod answered_early;
mod balance;
mod breaker;
mod client_abort;
mod early;
mod ejections;
mod errors;
mod forwarding;
mod grpc;
mod h2raw;
mod head_limits;
mod hostile;
mod http10;
mod idle;
mod keepalive;
mod limits;
mod linger;
mod local_replies;
mod overflow;
mod paths;
mod pool;
mod probes;
mod request_headers;
mod shadow;
mod shutdown;
mod stale;
mod support;
mod swap;
mod tls;
mod unread;
mod upgrade;
mod uploads;
mod via;
