//! The task queue (`ampstore_common::queue` has the layout): at-least-once delivery with
//! leases. A consumer dequeues tasks for a visibility timeout and acks each when done; a
//! task not acked in time is delivered again.

use std::time::Duration;

use ampstore_common::Error;
use ampstore_common::protocol::{Op, Reply};
use ampstore_common::queue::{self, QUEUE_SHARDS, Task, TaskRef};

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
        let op = Op::Enqueue { queue: queue.to_string(), shard, task_id: id, payload: payload.into() };
        op.validate()?;
        if let Some(r) = self.via_collector(&op).await {
            return r.map(|_| ());
        }
        self.keyed(&queue::task_key(queue, shard, id), op).await?;
        Ok(())
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
                let op =
                    Op::Dequeue { queue: queue.to_string(), shard, start: start.clone(), max: want, visibility_ms };
                // Leases run from when the server made them: with tasks in hand, a slow or
                // failing shard must not hold them back (they would expire in our hands).
                let answer = if tasks.is_empty() {
                    self.keyed(&start, op).await?
                } else {
                    match self.keyed_once(&start, op).await {
                        Ok(a) => a,
                        Err(_) => return Ok(tasks),
                    }
                };
                match answer {
                    Reply::Tasks { tasks: got, resume } => {
                        tasks.extend(got);
                        if tasks.len() as u32 >= max {
                            return Ok(tasks);
                        }
                        match resume {
                            Some(r) => start = r,
                            None => break,
                        }
                    }
                    other => return Err(Error::internal(format!("dequeue answered {other:?}"))),
                }
            }
        }
        Ok(tasks)
    }

    /// Removes a delivered task for good. `Conflict` when its lease expired and it was
    /// delivered again (the new holder acks it).
    pub async fn ack(&self, queue: &str, task: TaskRef) -> Result<(), Error> {
        self.settle(queue, Op::TaskAck { queue: queue.to_string(), task }, task).await
    }

    /// Gives a delivered task back: visible again at once.
    pub async fn nack(&self, queue: &str, task: TaskRef) -> Result<(), Error> {
        self.settle(queue, Op::TaskNack { queue: queue.to_string(), task }, task).await
    }

    /// Keeps a delivered task invisible for `visibility` more from now.
    pub async fn extend(&self, queue: &str, task: TaskRef, visibility: Duration) -> Result<(), Error> {
        let visibility_ms = visibility.as_millis().min(u64::MAX as u128) as u64;
        self.settle(queue, Op::TaskExtend { queue: queue.to_string(), task, visibility_ms }, task).await
    }

    async fn settle(&self, queue: &str, op: Op, task: TaskRef) -> Result<(), Error> {
        op.validate()?;
        match self.keyed(&queue::task_key(queue, task.shard, task.id), op).await? {
            Reply::Written { .. } => Ok(()),
            other => Err(Error::internal(format!("task settle answered {other:?}"))),
        }
    }
}
