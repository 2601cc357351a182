//! Coalescer runs at most one batch per key at a time; items that arrive while a batch
//! runs wait and form the next batch, so that a storm of one problem costs one write per
//! batch instead of one per signal. It knows nothing of Kubernetes.

use std::{
    collections::HashMap,
    future::Future,
    hash::Hash,
    pin::Pin,
    sync::{Arc, Mutex},
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

/// Refused says why an item was not processed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("too many items in flight (limit {limit})")]
    Overloaded { limit: usize },
    /// The batch ended without an answer for this item.
    #[error("the batch ended without an answer")]
    Dropped,
}

struct Waiter<T, R> {
    item: T,
    reply: oneshot::Sender<R>,
    _permit: OwnedSemaphorePermit,
}

/// Batch is the items of one key taken together; answer each with `reply`.
pub struct Batch<T, R> {
    waiters: Vec<Waiter<T, R>>,
}

impl<T, R> Batch<T, R> {
    /// items are the batch's items in arrival order.
    pub fn items(&self) -> impl Iterator<Item = &T> {
        self.waiters.iter().map(|w| &w.item)
    }

    /// len is the number of items.
    #[must_use]
    pub fn len(&self) -> usize {
        self.waiters.len()
    }

    /// cancelled reports whether every caller of the batch has gone away.
    #[must_use]
    pub fn cancelled(&self) -> bool {
        self.waiters.iter().all(|w| w.reply.is_closed())
    }

    /// reply answers every item; `answer` gets each item's index in the batch.
    pub fn reply(self, mut answer: impl FnMut(usize, &T) -> R) {
        for (i, w) in self.waiters.into_iter().enumerate() {
            let _ = w.reply.send(answer(i, &w.item));
        }
    }
}

type Run<K, T, R> =
    dyn Fn(K, Batch<T, R>) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync;

/// Coalescer queues items per key and runs their batches one at a time per key.
pub struct Coalescer<K, T, R> {
    queued: Mutex<HashMap<K, Vec<Waiter<T, R>>>>,
    permits: Arc<Semaphore>,
    limit: usize,
    run: Box<Run<K, T, R>>,
}

impl<K, T, R> Coalescer<K, T, R>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    T: Send + 'static,
    R: Send + 'static,
{
    /// new builds a coalescer that holds at most `limit` items queued or running, and
    /// runs each batch with `run`.
    #[must_use]
    pub fn new<F, Fut>(limit: usize, run: F) -> Arc<Self>
    where
        F: Fn(K, Batch<T, R>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Arc::new(Coalescer {
            queued: Mutex::new(HashMap::new()),
            permits: Arc::new(Semaphore::new(limit)),
            limit,
            run: Box::new(move |k, b| Box::pin(run(k, b))),
        })
    }

    /// submit queues `item` under `key` and returns its answer.
    pub async fn submit(self: &Arc<Self>, key: K, item: T) -> Result<R, Refused> {
        let permit = Arc::clone(&self.permits)
            .try_acquire_owned()
            .map_err(|_| Refused::Overloaded { limit: self.limit })?;
        let (reply, answer) = oneshot::channel();
        let waiter = Waiter {
            item,
            reply,
            _permit: permit,
        };
        let lead = {
            let mut queued = self.queued.lock().unwrap_or_else(|p| p.into_inner());
            match queued.get_mut(&key) {
                Some(waiting) => {
                    waiting.push(waiter);
                    false
                }
                None => {
                    queued.insert(key.clone(), vec![waiter]);
                    true
                }
            }
        };
        if lead {
            // The batches run on their own task, so that a caller that goes away does
            // not abandon the other items of its batch.
            tokio::spawn(Arc::clone(self).drain(key));
        }
        answer.await.map_err(|_| Refused::Dropped)
    }

    /// drain runs batches for `key` until nothing is queued.
    async fn drain(self: Arc<Self>, key: K) {
        // Should a batch panic, the guard removes the key so that its waiters get
        // `Dropped` and later items start a new drain.
        let mut guard = DrainGuard {
            coalescer: Arc::clone(&self),
            key: key.clone(),
            armed: true,
        };
        loop {
            let waiters = {
                let mut queued = self.queued.lock().unwrap_or_else(|p| p.into_inner());
                let taken = queued.get_mut(&key).map(std::mem::take).unwrap_or_default();
                if taken.is_empty() {
                    queued.remove(&key);
                    guard.armed = false;
                    return;
                }
                taken
            };
            (self.run)(key.clone(), Batch { waiters }).await;
        }
    }
}

struct DrainGuard<K: Hash + Eq, T, R> {
    coalescer: Arc<Coalescer<K, T, R>>,
    key: K,
    armed: bool,
}

impl<K: Hash + Eq, T, R> Drop for DrainGuard<K, T, R> {
    fn drop(&mut self) {
        if self.armed {
            let mut queued = self
                .coalescer
                .queued
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            queued.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::{Notify, mpsc};

    type Gated = Arc<Coalescer<&'static str, u32, (usize, usize)>>;

    /// gated is a coalescer whose batches report their items and then wait for `open`.
    fn gated(limit: usize, open: Arc<Notify>) -> (Gated, mpsc::UnboundedReceiver<Vec<u32>>) {
        let (seen, batches) = mpsc::unbounded_channel();
        let c = Coalescer::new(limit, move |_key, batch: Batch<u32, (usize, usize)>| {
            let seen = seen.clone();
            let open = Arc::clone(&open);
            async move {
                let _ = seen.send(batch.items().copied().collect());
                open.notified().await;
                let n = batch.len();
                batch.reply(|i, _| (i, n));
            }
        });
        (c, batches)
    }

    #[tokio::test]
    async fn items_arriving_during_a_batch_form_the_next_batch() {
        let open = Arc::new(Notify::new());
        let (c, mut batches) = gated(16, Arc::clone(&open));
        let first = tokio::spawn({
            let c = Arc::clone(&c);
            async move { c.submit("fp", 0).await }
        });
        assert_eq!(batches.recv().await, Some(vec![0]));
        let mut later = Vec::new();
        for i in 1..=3 {
            let c = Arc::clone(&c);
            later.push(tokio::spawn(async move { c.submit("fp", i).await }));
        }
        // The three wait behind the running batch; let it finish.
        while c.queued.lock().unwrap().get("fp").map_or(0, Vec::len) < 3 {
            tokio::task::yield_now().await;
        }
        open.notify_one();
        assert_eq!(first.await.unwrap(), Ok((0, 1)));
        assert_eq!(batches.recv().await, Some(vec![1, 2, 3]));
        open.notify_one();
        let mut answers = Vec::new();
        for h in later {
            answers.push(h.await.unwrap());
        }
        assert_eq!(answers, vec![Ok((0, 3)), Ok((1, 3)), Ok((2, 3))]);
        assert_eq!(c.permits.available_permits(), 16, "permits are returned");
    }

    #[tokio::test]
    async fn different_keys_run_at_the_same_time() {
        let open = Arc::new(Notify::new());
        let (c, mut batches) = gated(16, Arc::clone(&open));
        let a = tokio::spawn({
            let c = Arc::clone(&c);
            async move { c.submit("a", 1).await }
        });
        let b = tokio::spawn({
            let c = Arc::clone(&c);
            async move { c.submit("b", 2).await }
        });
        let mut seen = vec![batches.recv().await, batches.recv().await];
        seen.sort();
        assert_eq!(seen, vec![Some(vec![1]), Some(vec![2])]);
        open.notify_one();
        open.notify_one();
        assert!(a.await.unwrap().is_ok() && b.await.unwrap().is_ok());
    }

    #[tokio::test]
    async fn the_limit_refuses_items_beyond_it() {
        let open = Arc::new(Notify::new());
        let (c, mut batches) = gated(1, Arc::clone(&open));
        let first = tokio::spawn({
            let c = Arc::clone(&c);
            async move { c.submit("a", 1).await }
        });
        assert!(batches.recv().await.is_some());
        assert_eq!(
            c.submit("b", 2).await,
            Err(Refused::Overloaded { limit: 1 })
        );
        open.notify_one();
        assert!(first.await.unwrap().is_ok());
    }

    #[tokio::test]
    async fn a_batch_that_panics_drops_its_items_and_the_key_recovers() {
        let c = Coalescer::new(4, |_key: u8, batch: Batch<bool, bool>| async move {
            assert!(!batch.items().any(|explode| *explode), "boom");
            batch.reply(|_, _| true);
        });
        assert_eq!(c.submit(1, true).await, Err(Refused::Dropped));
        assert_eq!(c.submit(1, false).await, Ok(true));
    }

    #[tokio::test]
    async fn a_batch_sees_when_all_its_callers_left() {
        let (started_tx, mut started) = mpsc::unbounded_channel();
        let (cancelled_tx, mut cancelled) = mpsc::unbounded_channel();
        let c = Coalescer::new(4, move |_key: u8, batch: Batch<(), ()>| {
            let (started_tx, cancelled_tx) = (started_tx.clone(), cancelled_tx.clone());
            async move {
                let _ = started_tx.send(());
                while !batch.cancelled() {
                    tokio::task::yield_now().await;
                }
                let _ = cancelled_tx.send(());
            }
        });
        let caller = tokio::spawn({
            let c = Arc::clone(&c);
            async move { c.submit(7, ()).await }
        });
        assert_eq!(started.recv().await, Some(()), "the batch starts");
        caller.abort();
        let seen = tokio::time::timeout(std::time::Duration::from_secs(10), cancelled.recv()).await;
        assert_eq!(
            seen,
            Ok(Some(())),
            "the batch must see that its caller left"
        );
    }
}
