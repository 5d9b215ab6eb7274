//! Cluster secrets kept in a data directory: the cluster (data) token, the admin token and
//! the gossip key, each in its own file with mode 0600. `ampstore up` creates them once per
//! cluster; the CLI finds them in the data directory it is pointed at. App servers get only
//! `cluster.token`; `admin.token` stays with the cluster's own processes and its operators.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ampstore_common::error::Error;

pub const TOKEN_FILE: &str = "cluster.token";
pub const ADMIN_TOKEN_FILE: &str = "admin.token";
pub const GOSSIP_KEY_FILE: &str = "gossip.key";

/// Where each secret of a data directory is (`None`: absent, from [`find`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecretFiles<P> {
    pub token: P,
    pub admin_token: P,
    pub gossip_key: P,
}

/// The paths of the secret files in `dir`, creating each file that does not exist (fresh
/// random contents, mode 0600). Existing files are kept.
pub fn ensure(dir: &Path) -> Result<SecretFiles<PathBuf>, Error> {
    std::fs::create_dir_all(dir).map_err(|e| Error::unavailable(format!("cannot create {}: {e}", dir.display())))?;
    let files = SecretFiles {
        token: dir.join(TOKEN_FILE),
        admin_token: dir.join(ADMIN_TOKEN_FILE),
        gossip_key: dir.join(GOSSIP_KEY_FILE),
    };
    create_if_absent(&files.token)?;
    create_if_absent(&files.admin_token)?;
    create_if_absent(&files.gossip_key)?;
    Ok(files)
}

/// The secret files present in `dir`.
pub fn find(dir: &Path) -> SecretFiles<Option<PathBuf>> {
    let existing = |name: &str| Some(dir.join(name)).filter(|p| p.is_file());
    SecretFiles {
        token: existing(TOKEN_FILE),
        admin_token: existing(ADMIN_TOKEN_FILE),
        gossip_key: existing(GOSSIP_KEY_FILE),
    }
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
        assert_eq!(find(dir.path()), SecretFiles::default());
        let files = ensure(dir.path()).unwrap();
        let paths = [&files.token, &files.admin_token, &files.gossip_key];
        for p in paths {
            assert_eq!(std::fs::metadata(p).unwrap().permissions().mode() & 0o777, 0o600, "{}", p.display());
        }
        let read = || paths.map(|p| std::fs::read_to_string(p).unwrap());
        let first = read();
        ensure(dir.path()).unwrap();
        assert_eq!(first, read(), "kept, not regenerated");
        assert_ne!(first[0], first[1], "the admin token is not the cluster token");
        assert_ne!(first[0], first[2]);
        assert!(crate::config::parse_key_hex(&first[2]).is_ok());
        let cfg = crate::config::ClusterConfig {
            token_file: Some(files.token.clone()),
            admin_token_file: Some(files.admin_token.clone()),
            gossip_key_file: Some(files.gossip_key.clone()),
            ..Default::default()
        };
        let (cluster, admin) = cfg.server_tokens().unwrap();
        assert_eq!(cluster.unwrap().len(), 64);
        assert_eq!(admin.unwrap().len(), 64);
        assert!(cfg.gossip_key().unwrap().is_some());
        let found = find(dir.path());
        assert_eq!(found.token.as_ref(), Some(&files.token));
        assert_eq!(found.admin_token.as_ref(), Some(&files.admin_token));
        assert_eq!(found.gossip_key.as_ref(), Some(&files.gossip_key));
    }

    /// A data directory from before the admin token gets one on the next `up`, and keeps its
    /// cluster token (app servers hold it).
    #[test]
    fn an_older_directory_gains_an_admin_token() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(TOKEN_FILE), "old\n").unwrap();
        assert!(find(dir.path()).admin_token.is_none());
        let files = ensure(dir.path()).unwrap();
        assert_eq!(std::fs::read_to_string(&files.token).unwrap(), "old\n");
        assert!(find(dir.path()).admin_token.is_some());
    }
}
