//! Blobs as files under one directory. A blob name is a relative path (checked by
//! `validate::blob_name`). `put_if_absent` writes a temporary file, fsyncs it and hard-links
//! it into place: `link` fails if the name exists, so the check and the publish are one
//! atomic step, and a reader never sees a partial file.

use async_trait::async_trait;
use bytes::Bytes;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use crate::{BlobStore, StoreError, StoreResult, validate};
use ampstore_common::error::Error;
use ampstore_common::limits::BLOB_LIST_NAMES_MAX;

const TMP_DIR: &str = ".tmp";

pub struct FileBlobStore {
    root: PathBuf,
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Unavailable(format!("{what} {}: {e}", path.display()))
}

impl FileBlobStore {
    pub fn open(root: &Path) -> Result<FileBlobStore, Error> {
        std::fs::create_dir_all(root.join(TMP_DIR))
            .map_err(|e| Error::unavailable(format!("cannot create blob directory {}: {e}", root.display())))?;
        Ok(FileBlobStore { root: root.to_path_buf() })
    }

    fn put_blocking(root: &Path, name: &str, data: &[u8]) -> StoreResult<()> {
        let path = root.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io_err("cannot create", parent, e))?;
        }
        let tmp = root.join(TMP_DIR).join(format!("{:016x}", rand::random::<u64>()));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            f.write_all(data)?;
            f.sync_all()
        };
        if let Err(e) = write() {
            let _ = std::fs::remove_file(&tmp);
            return Err(io_err("cannot write", &tmp, e));
        }
        let linked = std::fs::hard_link(&tmp, &path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                return Err(StoreError::AlreadyExists { name: name.to_string() });
            }
            Err(e) => return Err(io_err("cannot publish", &path, e)),
        }
        // Make the new directory entry durable.
        if let Some(parent) = path.parent()
            && let Ok(dir) = std::fs::File::open(parent)
        {
            dir.sync_all().map_err(|e| io_err("cannot sync", parent, e))?;
        }
        Ok(())
    }

    fn list_blocking(root: &Path, prefix: &str, start_after: Option<&str>) -> StoreResult<Vec<String>> {
        // Only walk below the deepest directory the prefix names.
        let base = match prefix.rfind('/') {
            Some(i) => &prefix[..i],
            None => "",
        };
        let mut names = Vec::new();
        let mut stack = vec![base.to_string()];
        while let Some(rel) = stack.pop() {
            let dir = if rel.is_empty() { root.to_path_buf() } else { root.join(&rel) };
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("cannot list", &dir, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| io_err("cannot list", &dir, e))?;
                let Ok(file_name) = entry.file_name().into_string() else {
                    continue;
                };
                if rel.is_empty() && file_name == TMP_DIR {
                    continue;
                }
                let name = if rel.is_empty() { file_name } else { format!("{rel}/{file_name}") };
                let file_type = entry.file_type().map_err(|e| io_err("cannot stat", &entry.path(), e))?;
                if file_type.is_dir() {
                    stack.push(name);
                } else if name.starts_with(prefix) && start_after.is_none_or(|after| name.as_str() > after) {
                    names.push(name);
                }
            }
        }
        names.sort_unstable();
        names.truncate(BLOB_LIST_NAMES_MAX);
        Ok(names)
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> StoreResult<T> + Send + 'static) -> StoreResult<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| StoreError::Unavailable(format!("blob task failed: {e}")))?
}

#[async_trait]
impl BlobStore for FileBlobStore {
    async fn put_if_absent(&self, name: &str, data: Bytes) -> StoreResult<()> {
        validate::blob_name(name)?;
        validate::blob_size(data.len())?;
        let (root, name) = (self.root.clone(), name.to_string());
        blocking(move || Self::put_blocking(&root, &name, &data)).await
    }

    async fn get(&self, name: &str) -> StoreResult<Option<Bytes>> {
        validate::blob_name(name)?;
        let path = self.root.join(name);
        blocking(move || match std::fs::read(&path) {
            Ok(data) => Ok(Some(Bytes::from(data))),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("cannot read", &path, e)),
        })
        .await
    }

    async fn list(&self, prefix: &str, start_after: Option<&str>) -> StoreResult<Vec<String>> {
        validate::blob_prefix(prefix)?;
        let (root, prefix, after) = (self.root.clone(), prefix.to_string(), start_after.map(str::to_string));
        blocking(move || Self::list_blocking(&root, &prefix, after.as_deref())).await
    }

    async fn delete(&self, name: &str) -> StoreResult<()> {
        validate::blob_name(name)?;
        let path = self.root.join(name);
        blocking(move || match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("cannot delete", &path, e)),
        })
        .await
    }
}
