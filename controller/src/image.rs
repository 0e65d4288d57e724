//! What a backend runs, named as a container image is: a reference and a content digest. In local
//! mode the "image" is the workload's program (its resolved path) and the digest is the SHA-256 of
//! that file, `sha256:<64 hex>` as in an OCI image digest, so the same question ("which build
//! serves what share of traffic?") has the same answer shape in both modes.
//!
//! Hashing a program (a debug `crossfade` binary is ~100 MiB) takes a fraction of a second, so it
//! runs once per program file (keyed by path, size and modification time) on a blocking thread;
//! until it is done the digest reads as empty.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::spec::WorkloadSpec;

/// A backend's image reference and digest (both empty for static endpoints, which Crossfade does not
/// start and so cannot name).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRef {
    /// The image reference; in local mode the program's resolved path.
    pub image: String,
    /// `sha256:<hex>` of the image (local mode: of the program file); empty while not yet computed
    /// or when the file cannot be read.
    pub image_digest: String,
}

/// Identifies one version of a file: path, size in bytes, modification time.
type FileKey = (PathBuf, u64, Option<SystemTime>);

/// Digests computed (or being computed: `None`), per file version.
fn cache() -> &'static Mutex<HashMap<FileKey, Option<String>>> {
    static CACHE: OnceLock<Mutex<HashMap<FileKey, Option<String>>>> = OnceLock::new();
    CACHE.get_or_init(Mutex::default)
}

/// The program `spec` starts, resolved as the driver resolves it (`PATH` lookup for a bare name);
/// `None` for static endpoints or a program that cannot be found.
pub fn program(spec: &WorkloadSpec) -> Option<PathBuf> {
    let command = spec.command.as_deref()?;
    spec.find_command(command).ok()
}

/// The image of `spec` as known now: the program path and its digest when it has been computed.
/// The first call for a program file starts computing the digest in the background (on tokio's
/// blocking pool when called inside a runtime, else right away).
pub fn of(spec: &WorkloadSpec) -> ImageRef {
    let Some(path) = program(spec) else {
        return ImageRef::default();
    };
    ImageRef {
        image: path.display().to_string(),
        image_digest: digest(&path).unwrap_or_default(),
    }
}

/// The digest of the file at `path` if known; starts computing it otherwise.
pub fn digest(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    let key: FileKey = (path.to_owned(), meta.len(), meta.modified().ok());
    {
        let mut cache = cache().lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(known) = cache.get(&key) {
            return known.clone();
        }
        cache.insert(key.clone(), None);
    }
    let compute = move || {
        let digest = hash_file(&key.0);
        let mut cache = cache().lock().unwrap_or_else(PoisonError::into_inner);
        match digest {
            Some(d) => cache.insert(key, Some(d)),
            // Unreadable: forget it so that a later call tries again.
            None => cache.remove(&key),
        };
    };
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn_blocking(compute);
            None
        }
        Err(_) => {
            compute();
            let cache = cache().lock().unwrap_or_else(PoisonError::into_inner);
            cache
                .get(&(path.to_owned(), meta.len(), meta.modified().ok()))?
                .clone()
        }
    }
}

/// The digest of the file at `path`, computed here and now when not known yet (blocking: a
/// fraction of a second for a large binary), and kept for [`digest`] and [`of`]; `None` when it
/// cannot be read. For the record of a rollout's start, which must name the build it tries
/// whatever the background hashing has reached.
pub fn digest_now(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    let key: FileKey = (path.to_owned(), meta.len(), meta.modified().ok());
    if let Some(Some(known)) = cache()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&key)
    {
        return Some(known.clone());
    }
    let digest = hash_file(path)?;
    let mut cache = cache().lock().unwrap_or_else(PoisonError::into_inner);
    cache.insert(key, Some(digest.clone()));
    Some(digest)
}

/// `sha256:<hex>` of the file's bytes; `None` when it cannot be read.
pub fn hash_file(path: &Path) -> Option<String> {
    let mut file = std::fs::File::open(path).ok()?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).ok()?;
    let hex: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Some(format!("sha256:{hex}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_program_digest_is_the_sha256_of_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app");
        std::fs::write(&path, b"abc").unwrap();
        // sha256("abc"), FIPS 180-2 appendix B.1.
        let abc = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(hash_file(&path).as_deref(), Some(abc));
        // Outside a runtime it is computed at once and then cached.
        assert_eq!(digest(&path).as_deref(), Some(abc));
        assert_eq!(digest(&path).as_deref(), Some(abc));
    }

    #[test]
    fn static_endpoints_have_no_image() {
        let spec = WorkloadSpec {
            endpoints: vec!["127.0.0.1:1".parse().unwrap()],
            ..WorkloadSpec::default()
        };
        assert_eq!(of(&spec), ImageRef::default());
    }

    #[test]
    fn a_bare_command_is_named_by_its_resolved_path() {
        let spec = WorkloadSpec {
            command: Some("sh".into()),
            ..WorkloadSpec::default()
        };
        let image = of(&spec);
        assert!(image.image.ends_with("/sh"), "{image:?}");
        assert!(image.image_digest.starts_with("sha256:"), "{image:?}");
    }
}
