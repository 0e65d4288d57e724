//! Sample-app backends as child processes (`crossfade sample-app`), for `crossfade proxy` scenarios
//! whose backends are static endpoints.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::{free_addr, wait_until, Admin, Crossfade};

/// A running `crossfade sample-app`, stopped when dropped.
pub struct SampleApp {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its `X-Instance` value.
    pub instance: String,
    /// The process.
    pub child: Crossfade,
}

impl SampleApp {
    /// Starts `crossfade sample-app --version POOL --pool POOL --instance INSTANCE FLAGS...` on a free
    /// port and waits until it accepts connections (its `/healthz` may still answer 503 on purpose).
    ///
    /// # Panics
    /// When it does not listen within 10 s.
    pub async fn start(dir: &Path, pool: &str, instance: &str, flags: &[&str]) -> SampleApp {
        let app = SampleApp::spawn(dir, pool, instance, flags);
        app.wait_listening().await;
        app
    }

    /// `n` instances of `pool`, named `POOL-0`, `POOL-1`..., started together.
    pub async fn start_many(dir: &Path, pool: &str, n: usize) -> Vec<SampleApp> {
        SampleApp::start_many_with(dir, pool, n, &[]).await
    }

    /// [`SampleApp::start_many`], each instance with `flags` (`--latency 50`).
    pub async fn start_many_with(
        dir: &Path,
        pool: &str,
        n: usize,
        flags: &[&str],
    ) -> Vec<SampleApp> {
        let apps: Vec<_> = (0..n)
            .map(|i| SampleApp::spawn(dir, pool, &format!("{pool}-{i}"), flags))
            .collect();
        for app in &apps {
            app.wait_listening().await;
        }
        apps
    }

    /// Starts `crossfade ARGS` (a `sample-app` command line, e.g. a manifest's container args)
    /// with `env`, listening on `addr` (which `args` must name), and waits until it accepts
    /// connections.
    pub async fn start_args(
        dir: &Path,
        instance: &str,
        addr: SocketAddr,
        args: &[String],
        env: &[(&str, &str)],
    ) -> SampleApp {
        let log = format!("sample-{instance}.log");
        let app = SampleApp {
            addr,
            instance: instance.to_owned(),
            child: Crossfade::spawn_env(dir, &log, args, env),
        };
        app.wait_listening().await;
        app
    }

    /// The addresses of `apps`.
    pub fn addrs(apps: &[SampleApp]) -> Vec<SocketAddr> {
        apps.iter().map(|a| a.addr).collect()
    }

    fn spawn(dir: &Path, pool: &str, instance: &str, flags: &[&str]) -> SampleApp {
        let addr = free_addr();
        let port = addr.port().to_string();
        let mut args = vec![
            "sample-app",
            "--port",
            &port,
            "--version",
            pool,
            "--pool",
            pool,
            "--instance",
            instance,
        ];
        args.extend_from_slice(flags);
        let child = Crossfade::spawn(dir, &format!("sample-{instance}.log"), args);
        SampleApp {
            addr,
            instance: instance.to_owned(),
            child,
        }
    }

    async fn wait_listening(&self) {
        let what = format!("sample-app {} on {}", self.instance, self.addr);
        let admin = Admin::new(self.addr);
        wait_until(Duration::from_secs(10), &what, || async {
            admin.get_text("/healthz").await.ok().map(drop)
        })
        .await;
    }
}
