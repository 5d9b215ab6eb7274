//! The task queue (`ampstore_common::queue` has the layout): at-least-once delivery with
//! leases. A consumer dequeues tasks for a visibility timeout and acks each when done; a
//! task not acked in time is delivered again.

use std::time::Duration;

use ampstore_common::Error;
use ampstore_common::queue::{self, QUEUE_SHARDS, Task, TaskRef};
use ampstore_common::wire::Call;
use ampstore_common::wire::data::{Dequeue, Enqueue, TaskAck, TaskExtend, TaskNack};

use crate::client::Client;

impl Client {
    /// Adds a task to `queue` and returns its id (with lease 0). Retried until the call
    /// deadline; a retry never adds the task twice.
    ///
    /// ```no_run
    /// # async fn demo(client: ampstore_client::Client) -> Result<(), ampstore_client::Error> {
    /// use std::time::Duration;
    /// client.enqueue("emails", b"to=ann".to_vec()).await?;
    /// for task in client.dequeue("emails", 10, Duration::from_secs(30)).await? {
    ///     // ... send the email ...
    ///     client.ack("emails", task.task).await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn enqueue(&self, queue: &str, payload: impl Into<Vec<u8>>) -> Result<TaskRef, Error> {
        let id = self.push_id();
        let shard = (id.n % QUEUE_SHARDS as u64) as u16;
        self.enqueue_with_id(queue, shard, id, payload).await?;
        Ok(TaskRef { shard, id, lease: 0 })
    }

    /// Enqueues with a task id (and shard) the caller chose: enqueueing the same id again
    /// adds nothing (collectors use it to forward tasks).
    pub async fn enqueue_with_id(
        &self,
        queue: &str,
        shard: u16,
        id: ampstore_common::lists::PushId,
        payload: impl Into<Vec<u8>>,
    ) -> Result<(), Error> {
        let op = Enqueue { queue: queue.to_string(), shard, task_id: id, payload: payload.into() }.into_op();
        op.validate()?;
        let reply = match self.via_collector(&op).await {
            Some(r) => r?,
            None => self.keyed_until(&queue::task_key(queue, shard, id), op, self.deadline()).await?,
        };
        Enqueue::reply(reply).map(|_| ())
    }

    /// Leases up to `max` visible tasks of `queue` for `visibility`: until then nobody else
    /// gets them; after it, unacked ones are delivered again. Looks at every shard, starting
    /// at a random one, and returns what it found (possibly nothing).
    pub async fn dequeue(&self, queue: &str, max: u32, visibility: Duration) -> Result<Vec<Task>, Error> {
        let visibility_ms = visibility.as_millis().min(u64::MAX as u128) as u64;
        queue::validate_queue(queue)?;
        queue::validate_dequeue(max, visibility_ms)?;
        let first = rand::random::<u16>() % QUEUE_SHARDS;
        let mut tasks: Vec<Task> = Vec::new();
        for k in 0..QUEUE_SHARDS {
            let shard = (first + k) % QUEUE_SHARDS;
            let (mut start, _) = queue::shard_bounds(queue, shard);
            loop {
                let want = max - tasks.len() as u32;
                let req = Dequeue { queue: queue.to_string(), shard, start: start.clone(), max: want, visibility_ms };
                // Leases run from when the server made them: with tasks in hand, a slow or
                // failing shard must not hold them back (they would expire in our hands).
                let answer = if tasks.is_empty() {
                    self.keyed(&start, req).await?
                } else {
                    match self.keyed_once(&start, req).await {
                        Ok(a) => a,
                        Err(_) => return Ok(tasks),
                    }
                };
                tasks.extend(answer.tasks);
                if tasks.len() as u32 >= max {
                    return Ok(tasks);
                }
                match answer.resume {
                    Some(r) => start = r,
                    None => break,
                }
            }
        }
        Ok(tasks)
    }

    /// Removes a delivered task for good. `Conflict` when its lease expired and it was
    /// delivered again (the new holder acks it).
    pub async fn ack(&self, queue: &str, task: TaskRef) -> Result<(), Error> {
        self.settle(queue, TaskAck { queue: queue.to_string(), task }, task).await
    }

    /// Gives a delivered task back: visible again at once.
    pub async fn nack(&self, queue: &str, task: TaskRef) -> Result<(), Error> {
        self.settle(queue, TaskNack { queue: queue.to_string(), task }, task).await
    }

    /// Keeps a delivered task invisible for `visibility` more from now.
    pub async fn extend(&self, queue: &str, task: TaskRef, visibility: Duration) -> Result<(), Error> {
        let visibility_ms = visibility.as_millis().min(u64::MAX as u128) as u64;
        self.settle(queue, TaskExtend { queue: queue.to_string(), task, visibility_ms }, task).await
    }

    /// Acks, nacks or extends a task: each answers `Written`.
    async fn settle<C: Call<Reply = ampstore_common::Version>>(
        &self,
        queue: &str,
        req: C,
        task: TaskRef,
    ) -> Result<(), Error> {
        let op = req.into_op();
        op.validate()?;
        C::reply(self.keyed_until(&queue::task_key(queue, task.shard, task.id), op, self.deadline()).await?).map(|_| ())
    }
}
