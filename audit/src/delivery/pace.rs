//! The rhythm every sink's delivery loop shares: read the next records from the sink's spool,
//! wait for new ones when there are none, and back off after a failure. The sinks differ only
//! in how they send and what counts as delivered.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::spool::Spool;

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Even without a wake-up, the spool is looked at this often.
const IDLE_WAIT: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct Pace {
    wake: Arc<Notify>,
    backoff: Duration,
}

impl Pace {
    /// `wake` is notified when a record is appended to the spool.
    pub fn new(wake: Arc<Notify>) -> Self {
        Self {
            wake,
            backoff: FIRST_BACKOFF,
        }
    }

    /// Up to `max` records after `offset`. With none, waits for a new one (or a while) and
    /// returns none, so the caller can look after what it has in flight.
    pub async fn batch(&self, spool: &Spool, offset: u64, max: usize) -> Vec<(u64, String)> {
        let lines = spool.read_from(offset, max).unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot read the audit spool");
            Vec::new()
        });
        if lines.is_empty() {
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(IDLE_WAIT) => {}
            }
        }
        lines
    }

    /// After a failure: waits, twice as long as the last time, up to [`MAX_BACKOFF`].
    pub async fn back_off(&mut self) {
        tokio::time::sleep(self.backoff).await;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    /// After a success: the next failure waits briefly again.
    pub fn recovered(&mut self) {
        self.backoff = FIRST_BACKOFF;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn backoff_doubles_up_to_its_cap_and_resets_after_a_success() {
        let mut pace = Pace::new(Arc::new(Notify::new()));
        let mut waited = Vec::new();
        for _ in 0..8 {
            let started = tokio::time::Instant::now();
            pace.back_off().await;
            waited.push(started.elapsed().as_millis());
        }
        assert_eq!(waited, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        pace.recovered();
        let started = tokio::time::Instant::now();
        pace.back_off().await;
        assert_eq!(started.elapsed(), FIRST_BACKOFF);
    }

    #[tokio::test(start_paused = true)]
    async fn an_empty_spool_waits_for_a_new_record() {
        let dir = tempfile::tempdir().expect("dir");
        let spool = Spool::open(dir.path(), "sink-1").expect("spool");
        let wake = Arc::new(Notify::new());
        let pace = Pace::new(wake.clone());
        let started = tokio::time::Instant::now();
        assert!(pace.batch(&spool, 0, 10).await.is_empty());
        assert_eq!(
            started.elapsed(),
            IDLE_WAIT,
            "nothing new: it waited a while"
        );
        spool.append("{\"seq\":1}").expect("append");
        wake.notify_one();
        let lines = pace.batch(&spool, 0, 10).await;
        assert_eq!(lines.len(), 1);
    }
}
