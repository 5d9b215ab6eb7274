//! Cluster secrets kept in a data directory: the RPC token and the gossip key, each in its
//! own file with mode 0600. `ampstore up` creates them once per cluster; the CLI finds them
//! in the data directory it is pointed at.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::Error;

pub const TOKEN_FILE: &str = "cluster.token";
pub const GOSSIP_KEY_FILE: &str = "gossip.key";

/// The paths of the token and gossip key files in `dir`, creating either file (with fresh
/// random contents, mode 0600) when it does not exist. Existing files are kept.
pub fn ensure(dir: &Path) -> Result<(PathBuf, PathBuf), Error> {
    std::fs::create_dir_all(dir).map_err(|e| Error::unavailable(format!("cannot create {}: {e}", dir.display())))?;
    let token = dir.join(TOKEN_FILE);
    let key = dir.join(GOSSIP_KEY_FILE);
    create_if_absent(&token)?;
    create_if_absent(&key)?;
    Ok((token, key))
}

/// The secret files present in `dir`, if any.
pub fn find(dir: &Path) -> (Option<PathBuf>, Option<PathBuf>) {
    let existing = |name: &str| Some(dir.join(name)).filter(|p| p.is_file());
    (existing(TOKEN_FILE), existing(GOSSIP_KEY_FILE))
}

fn create_if_absent(path: &Path) -> Result<(), Error> {
    let secret: [u8; 32] = rand::random();
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(mut f) => {
            f.write_all(format!("{hex}\n").as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(|e| Error::unavailable(format!("cannot write {}: {e}", path.display())))?;
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::unavailable(format!("cannot create {}: {e}", path.display()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn created_once_private_and_usable() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(find(dir.path()), (None, None));
        let (token, key) = ensure(dir.path()).unwrap();
        for p in [&token, &key] {
            assert_eq!(std::fs::metadata(p).unwrap().permissions().mode() & 0o777, 0o600, "{}", p.display());
        }
        let first = (std::fs::read_to_string(&token).unwrap(), std::fs::read_to_string(&key).unwrap());
        ensure(dir.path()).unwrap();
        let second = (std::fs::read_to_string(&token).unwrap(), std::fs::read_to_string(&key).unwrap());
        assert_eq!(first, second, "kept, not regenerated");
        assert_ne!(first.0, first.1);
        assert!(crate::config::parse_key_hex(&first.1).is_ok());
        let cfg =
            crate::config::ClusterConfig { token_file: Some(token), gossip_key_file: Some(key), ..Default::default() };
        assert_eq!(cfg.token().unwrap().unwrap().len(), 64);
        assert!(cfg.gossip_key().unwrap().is_some());
        assert!(find(dir.path()).0.is_some());
    }
}
