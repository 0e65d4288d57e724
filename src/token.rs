//! The admin API's bearer token on the command line: `--admin-token-file FILE` or the environment
//! variable `CROSSFADE_ADMIN_TOKEN`, read the same way by the servers (`run`, `proxy`) and by the
//! commands that call them (`status`, `pause`, ...).

use std::path::PathBuf;

use anyhow::Context;
use crossfade_proxy::admin::AdminAuth;
use crossfade_proxy::files;

/// The environment variable holding the token itself.
pub const TOKEN_ENV: &str = "CROSSFADE_ADMIN_TOKEN";

/// Where the admin API's bearer token comes from.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct TokenArgs {
    /// File holding the admin API's bearer token (surrounding whitespace ignored). Without it the
    /// token is read from CROSSFADE_ADMIN_TOKEN. Required when the admin API is bound to a
    /// non-loopback address.
    #[arg(long, env = "CROSSFADE_ADMIN_TOKEN_FILE", value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
}

impl TokenArgs {
    /// The token and where it came from (a file name or `CROSSFADE_ADMIN_TOKEN`), or `None`.
    ///
    /// # Errors
    /// When the file cannot be read or the variable is not UTF-8.
    pub fn load(&self) -> anyhow::Result<Option<(String, String)>> {
        if let Some(path) = &self.admin_token_file {
            let text = files::read_bounded_string(path, files::MAX_SECRET_BYTES)
                .with_context(|| format!("cannot read the admin token file {}", path.display()))?;
            return Ok(Some((text.trim().to_owned(), path.display().to_string())));
        }
        match std::env::var(TOKEN_ENV) {
            Ok(token) => Ok(Some((token.trim().to_owned(), TOKEN_ENV.to_owned()))),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => {
                anyhow::bail!("{TOKEN_ENV} is not valid UTF-8")
            }
        }
    }

    /// The token to present to an admin API (`status`, `pause`, `migrate`, ...), held to the
    /// rule the server holds its own token to ([`AdminAuth::with_token`]: not empty, RFC 6750
    /// `b64token` characters), or `None` when none is set. An empty token file (or
    /// `CROSSFADE_ADMIN_TOKEN=`) was sent as `Bearer` with no token, and the server's `400`
    /// read as `not an answer of the admin API of crossfade run` (session 41).
    ///
    /// # Errors
    /// As [`TokenArgs::load`], and `the admin token from FILE is not valid: it is empty`.
    pub fn for_request(&self) -> anyhow::Result<Option<(String, String)>> {
        let token = self.load()?;
        if let Some((token, source)) = &token {
            AdminAuth::with_token(token, source)?;
        }
        Ok(token)
    }

    /// The admin API's authentication for a listener on `addr` (see [`AdminAuth::for_listener`]).
    ///
    /// # Errors
    /// When the token cannot be read or is invalid, or `addr` is not loopback and no token is set.
    pub fn auth_for(&self, addr: std::net::SocketAddr) -> anyhow::Result<AdminAuth> {
        let token = self.load()?;
        let token = token.as_ref().map(|(t, s)| (t.as_str(), s.as_str()));
        Ok(AdminAuth::for_listener(addr, token)?)
    }
}
