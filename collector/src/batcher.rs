//! The collector's batching, without I/O: items wait per destination (a range on a node)
//! until the window since the first of them has passed or their bytes reach the batch
//! limit; then they go out together as one batch.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ampstore_common::RangeId;

/// Where a batch goes: the range and the node serving it (as routing said).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Destination {
    pub node_addr: String,
    pub range_id: RangeId,
}

struct Open<T> {
    since: Instant,
    bytes: usize,
    items: Vec<T>,
}

pub struct Batcher<T> {
    window: Duration,
    bytes_max: usize,
    items_max: usize,
    open: HashMap<Destination, Open<T>>,
}

impl<T> Batcher<T> {
    pub fn new(window: Duration, bytes_max: usize, items_max: usize) -> Batcher<T> {
        debug_assert!(bytes_max > 0 && items_max > 0);
        Batcher { window, bytes_max, items_max, open: HashMap::new() }
    }

    /// Whether `waiting_max` items already wait (the caller refuses more).
    pub fn is_full(&self, waiting_max: usize) -> bool {
        self.waiting() >= waiting_max
    }

    /// Adds an item; returns the destination's batch at once when it is full.
    pub fn add(&mut self, dest: Destination, item: T, bytes: usize, now: Instant) -> Option<(Destination, Vec<T>)> {
        let open = self.open.entry(dest.clone()).or_insert_with(|| Open { since: now, bytes: 0, items: Vec::new() });
        open.bytes += bytes;
        open.items.push(item);
        if open.bytes >= self.bytes_max || open.items.len() >= self.items_max {
            let full = self.open.remove(&dest)?;
            return Some((dest, full.items));
        }
        None
    }

    /// The batches whose window has passed.
    pub fn due(&mut self, now: Instant) -> Vec<(Destination, Vec<T>)> {
        let due: Vec<Destination> = self
            .open
            .iter()
            .filter(|(_, o)| now.saturating_duration_since(o.since) >= self.window)
            .map(|(d, _)| d.clone())
            .collect();
        due.into_iter().filter_map(|d| self.open.remove(&d).map(|o| (d, o.items))).collect()
    }

    /// When the next batch is due (none open: `None`).
    pub fn next_due(&self) -> Option<Instant> {
        self.open.values().map(|o| o.since + self.window).min()
    }

    /// Items waiting, over all destinations.
    pub fn waiting(&self) -> usize {
        self.open.values().map(|o| o.items.len()).sum()
    }

    /// Everything open, at once (shutdown).
    pub fn drain(&mut self) -> Vec<(Destination, Vec<T>)> {
        self.open.drain().map(|(d, o)| (d, o.items)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(r: u64) -> Destination {
        Destination { node_addr: "n".into(), range_id: RangeId(r) }
    }

    #[test]
    fn batches_close_on_their_window_or_their_size() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut b = Batcher::new(ms(5), 100, 1000);
        assert!(b.add(dest(1), 'a', 40, t0).is_none());
        assert!(b.add(dest(2), 'x', 10, t0 + ms(2)).is_none());
        assert!(b.add(dest(1), 'b', 40, t0 + ms(3)).is_none());
        assert_eq!(b.next_due(), Some(t0 + ms(5)));
        assert_eq!(b.waiting(), 3);
        assert!(b.due(t0 + ms(4)).is_empty());
        assert_eq!(b.due(t0 + ms(5)), vec![(dest(1), vec!['a', 'b'])], "the window runs from the first item");
        assert_eq!(b.due(t0 + ms(7)), vec![(dest(2), vec!['x'])]);
        assert_eq!(b.next_due(), None);
        // Full by bytes: out at once, before its window.
        assert!(b.add(dest(3), 'c', 60, t0).is_none());
        assert_eq!(b.add(dest(3), 'd', 40, t0), Some((dest(3), vec!['c', 'd'])));
        assert_eq!(b.waiting(), 0);
        // Full by count.
        let mut b = Batcher::new(ms(5), 1 << 20, 2);
        assert!(b.add(dest(1), 1, 1, t0).is_none());
        assert_eq!(b.add(dest(1), 2, 1, t0), Some((dest(1), vec![1, 2])));
        assert!(b.add(dest(1), 3, 1, t0).is_none());
        assert!(b.is_full(1) && !b.is_full(2));
        assert_eq!(b.drain(), vec![(dest(1), vec![3])]);
        assert!(!b.is_full(1));
    }
}
