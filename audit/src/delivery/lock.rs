//! One writer per chain. A chain's buffers and tail may outlive a process (a pod's claim), and
//! the process that takes them over must not start while the one before still seals records:
//! both would go on from the same tail and seal two different records under one sequence
//! number, a fork no verifier accepts. A StatefulSet promises one pod per name, but not after a
//! force delete: the replacement can start within the seconds the old container is given to stop.
//!
//! The lock is the kernel's (`flock`), so it is released whenever its holder dies, SIGKILL
//! included: a lock left behind means a live process holds it.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::DeliveryError;

/// How often a waiting process looks again, and how often it says it is still waiting.
const RETRY: Duration = Duration::from_millis(100);
const REPORT_EVERY: Duration = Duration::from_secs(5);

/// Held for as long as this process writes the chain in `dir`; released on drop or death.
#[derive(Debug)]
pub struct ChainLock {
    _file: File,
    path: PathBuf,
}

impl ChainLock {
    /// Takes the lock of the chain kept in `dir`, waiting up to `patience` for a process that
    /// still holds it (the pod this one replaces, in its last seconds) to stop.
    pub async fn acquire(dir: &Path, patience: Duration) -> Result<Self, DeliveryError> {
        std::fs::create_dir_all(dir).map_err(|source| DeliveryError::File {
            what: "the audit buffer directory",
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join("chain.lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| DeliveryError::File {
                what: "the audit chain's lock file",
                path: path.clone(),
                source,
            })?;
        let started = tokio::time::Instant::now();
        let mut reported = started;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(source)) => {
                    return Err(DeliveryError::File {
                        what: "the audit chain's lock file",
                        path,
                        source,
                    });
                }
            }
            let waited = started.elapsed();
            if waited >= patience {
                return Err(DeliveryError::setup(
                    format!("the audit chain in {}", dir.display()),
                    format!(
                        "another process has held it for {}s and still runs: two processes \
                         must never write one chain; give each node its own audit buffer \
                         directory (each pod its own claim)",
                        waited.as_secs()
                    ),
                ));
            }
            if reported.elapsed() >= REPORT_EVERY || reported == started {
                tracing::warn!(
                    dir = %dir.display(),
                    waited_s = waited.as_secs(),
                    "the audit chain is still held by another process (the pod this one replaces is stopping); waiting for it to exit"
                );
                reported = tokio::time::Instant::now();
            }
            tokio::time::sleep(RETRY).await;
        }
        Ok(Self { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_writer_waits_until_the_first_lets_go() {
        let dir = tempfile::tempdir().expect("dir");
        let first = ChainLock::acquire(dir.path(), Duration::ZERO)
            .await
            .expect("the first writer takes the chain");
        let second = tokio::spawn({
            let dir = dir.path().to_path_buf();
            async move { ChainLock::acquire(&dir, Duration::from_secs(30)).await }
        });
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(
            !second.is_finished(),
            "a second writer must not start while the first holds the chain"
        );
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(5), second)
            .await
            .expect("the second writer goes on once the first is gone")
            .expect("task")
            .expect("lock");
        assert_eq!(second.path(), dir.path().join("chain.lock"));
    }

    #[tokio::test]
    async fn a_writer_that_never_lets_go_is_named_after_the_patience_runs_out() {
        let dir = tempfile::tempdir().expect("dir");
        let _held = ChainLock::acquire(dir.path(), Duration::ZERO)
            .await
            .expect("first");
        let refused = ChainLock::acquire(dir.path(), Duration::from_millis(300))
            .await
            .expect_err("still held");
        let message = refused.to_string();
        assert!(
            message.contains("another process") && message.contains("its own audit buffer"),
            "{message}"
        );
    }
}
