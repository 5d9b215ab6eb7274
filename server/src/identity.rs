//! A process's id (node or master): created on first start and kept in `{data_dir}/node-id`.

use ampstore_common::error::Error;
use ampstore_common::ids::NodeId;
use std::path::Path;

pub const NODE_ID_FILE: &str = "node-id";

/// Reads the node id from `data_dir`, creating a random one on first start.
pub fn load_or_create(data_dir: &Path) -> Result<NodeId, Error> {
    let path = data_dir.join(NODE_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => NodeId::new(text.trim()).map_err(|e| Error::invalid(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(data_dir)
                .map_err(|e| Error::unavailable(format!("cannot create {}: {e}", data_dir.display())))?;
            let id = NodeId::random();
            // Write then rename, so a crash never leaves a half-written id.
            let tmp = data_dir.join(format!("{NODE_ID_FILE}.tmp"));
            std::fs::write(&tmp, format!("{id}\n"))
                .and_then(|_| std::fs::rename(&tmp, &path))
                .map_err(|e| Error::unavailable(format!("cannot write {}: {e}", path.display())))?;
            Ok(id)
        }
        Err(e) => Err(Error::unavailable(format!("cannot read {}: {e}", path.display()))),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn created_once_then_kept() {
        let dir = tempfile::tempdir().unwrap();
        let a = super::load_or_create(dir.path()).unwrap();
        let b = super::load_or_create(dir.path()).unwrap();
        assert_eq!(a, b);
        std::fs::write(dir.path().join(super::NODE_ID_FILE), "bad id!").unwrap();
        assert!(super::load_or_create(dir.path()).is_err());
    }
}
