//! Local-directory backend: the embedded default (`-r /path`).
//!
//! Objects are files under the root. Writes go to a temporary file in the same
//! directory, are fsynced, and renamed into place, so a crash never leaves a partial
//! object under its final name.

use std::io::ErrorKind;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::AsyncWriteExt;

use super::error::{BackendError, BackendResult};
use super::object_store::{Backend, ObjectInfo};

#[derive(Debug, Clone)]
pub struct LocalBackend {
    root: PathBuf,
}

impl LocalBackend {
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    fn io_error(&self, what: &str, key: &str, err: std::io::Error) -> BackendError {
        match err.kind() {
            ErrorKind::NotFound => BackendError::NotFound {
                key: key.to_string(),
            },
            ErrorKind::PermissionDenied => BackendError::AccessDenied {
                what: format!("{what} {}", self.path(key).display()),
                detail: err.to_string(),
            },
            _ => BackendError::Io {
                what: format!("{what} {}", self.path(key).display()),
                detail: err.to_string(),
                retryable: matches!(err.kind(), ErrorKind::Interrupted | ErrorKind::TimedOut),
            },
        }
    }

    /// Writes `data` to a temporary sibling of `path` and fsyncs it; returns the temp path.
    async fn write_temp(&self, key: &str, path: &Path, data: &[u8]) -> BackendResult<PathBuf> {
        let dir = path
            .parent()
            .expect("object keys always have a parent directory");
        create_private_dir(dir)
            .await
            .map_err(|e| self.io_error("creating directory for", key, e))?;
        let tmp = dir.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        let result = async {
            // Owner-only: key slots live here too, and nobody else needs to read backups.
            let mut file = tokio::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .await?;
            file.write_all(data).await?;
            file.sync_all().await
        }
        .await;
        if let Err(e) = result {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(self.io_error("writing", key, e));
        }
        Ok(tmp)
    }
}

/// `mkdir -p` with mode 0700 for the directories it creates.
async fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
    })
    .await
    .expect("mkdir task panicked")
}

#[async_trait]
impl Backend for LocalBackend {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    async fn check_reachable(&self) -> BackendResult<()> {
        match tokio::fs::metadata(&self.root).await {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(BackendError::Io {
                what: format!("opening repository {}", self.root.display()),
                detail: "not a directory".into(),
                retryable: false,
            }),
            Err(e) => Err(self.io_error("opening repository", "", e)),
        }
    }

    async fn create_container(&self) -> BackendResult<()> {
        create_private_dir(&self.root)
            .await
            .map_err(|e| self.io_error("creating repository directory", "", e))
    }

    async fn put(&self, key: &str, data: Bytes) -> BackendResult<()> {
        let path = self.path(key);
        let tmp = self.write_temp(key, &path, &data).await?;
        tokio::fs::rename(&tmp, &path)
            .await
            .map_err(|e| self.io_error("renaming into place", key, e))
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> BackendResult<()> {
        let path = self.path(key);
        let tmp = self.write_temp(key, &path, &data).await?;
        // hard_link fails if the destination exists: an atomic create-if-absent.
        let linked = tokio::fs::hard_link(&tmp, &path).await;
        let _ = tokio::fs::remove_file(&tmp).await;
        match linked {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Err(BackendError::AlreadyExists {
                key: key.to_string(),
            }),
            Err(e) => Err(self.io_error("creating", key, e)),
        }
    }

    async fn get(&self, key: &str) -> BackendResult<Bytes> {
        tokio::fs::read(self.path(key))
            .await
            .map(Bytes::from)
            .map_err(|e| self.io_error("reading", key, e))
    }

    async fn get_range(&self, key: &str, offset: u64, len: u64) -> BackendResult<Bytes> {
        // One blocking call with a positioned read: tokio's File would copy the data
        // again through its own buffer, in several thread hops.
        let path = self.path(key);
        let read = tokio::task::spawn_blocking(move || -> std::io::Result<Bytes> {
            use std::os::unix::fs::FileExt;
            let file = std::fs::File::open(path)?;
            let size = file.metadata()?.len();
            let len = len.min(size.saturating_sub(offset));
            let mut buf = vec![0u8; len as usize];
            file.read_exact_at(&mut buf, offset)?;
            Ok(Bytes::from(buf))
        });
        read.await
            .expect("read task panicked")
            .map_err(|e| self.io_error("reading", key, e))
    }

    async fn size(&self, key: &str) -> BackendResult<Option<u64>> {
        match tokio::fs::metadata(self.path(key)).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io_error("inspecting", key, e)),
        }
    }

    async fn list(&self, prefix: &str) -> BackendResult<Vec<ObjectInfo>> {
        // Keys are at most two directory levels deep (`data/ab/…`): walk iteratively.
        let mut out = Vec::new();
        let mut dirs = vec![self.path(prefix.trim_end_matches('/'))];
        while let Some(dir) = dirs.pop() {
            let mut entries = match tokio::fs::read_dir(&dir).await {
                Ok(entries) => entries,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(self.io_error("listing", prefix, e)),
            };
            while let Some(entry) = entries
                .next_entry()
                .await
                .map_err(|e| self.io_error("listing", prefix, e))?
            {
                let name = entry.file_name();
                if name.to_string_lossy().starts_with(".tmp-") {
                    continue;
                }
                let meta = entry
                    .metadata()
                    .await
                    .map_err(|e| self.io_error("listing", prefix, e))?;
                if meta.is_dir() {
                    dirs.push(entry.path());
                } else {
                    let rel = entry
                        .path()
                        .strip_prefix(&self.root)
                        .expect("listed paths are under the root")
                        .to_string_lossy()
                        .replace(std::path::MAIN_SEPARATOR, "/");
                    out.push(ObjectInfo {
                        key: rel,
                        size: meta.len(),
                        modified: meta.modified().ok(),
                    });
                }
            }
        }
        Ok(out)
    }

    async fn delete(&self, key: &str) -> BackendResult<()> {
        match tokio::fs::remove_file(self.path(key)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io_error("deleting", key, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_get_list_delete_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path().to_path_buf());
        b.put("data/ab/abcd", Bytes::from_static(b"hello world"))
            .await
            .unwrap();
        assert_eq!(b.get("data/ab/abcd").await.unwrap(), &b"hello world"[..]);
        assert_eq!(
            b.get_range("data/ab/abcd", 6, 100).await.unwrap(),
            &b"world"[..]
        );
        assert_eq!(b.size("data/ab/abcd").await.unwrap(), Some(11));
        assert!(b.get("data/ab/nope").await.unwrap_err().is_not_found());
        let listed = b.list("data/").await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(
            (listed[0].key.as_str(), listed[0].size),
            ("data/ab/abcd", 11)
        );
        assert!(listed[0].modified.is_some());
        assert!(b.list("index/").await.unwrap().is_empty());
        b.delete("data/ab/abcd").await.unwrap();
        b.delete("data/ab/abcd").await.unwrap();
        assert_eq!(b.size("data/ab/abcd").await.unwrap(), None);
    }

    #[tokio::test]
    async fn objects_and_directories_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path().join("repo"));
        b.create_container().await.unwrap();
        b.put("keys/0011", Bytes::from_static(b"slot"))
            .await
            .unwrap();
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join("repo")), 0o700);
        assert_eq!(mode(&dir.path().join("repo/keys")), 0o700);
        assert_eq!(mode(&dir.path().join("repo/keys/0011")), 0o600);
    }

    #[tokio::test]
    async fn put_if_absent_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path().to_path_buf());
        b.put_if_absent("locks/gc", Bytes::from_static(b"one"))
            .await
            .unwrap();
        let err = b
            .put_if_absent("locks/gc", Bytes::from_static(b"two"))
            .await
            .unwrap_err();
        assert!(matches!(err, BackendError::AlreadyExists { .. }));
        assert_eq!(b.get("locks/gc").await.unwrap(), &b"one"[..]);
    }
}
