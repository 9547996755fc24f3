//! The recent anomalies and audit records the API lists, newest last:
//! bounded in count and bytes, and each message listed once however often
//! it arrives (an edge sends again until its receipt comes; in a cluster
//! every member hears every site's, and a site's owner may change).

use std::collections::{HashSet, VecDeque};
use vigil_core::envelope::Seq;

/// Most bytes of messages one list holds (besides its count, `recent`).
pub const MAX_BYTES: usize = 32 << 20;

/// The message an item came in: site, stream and number.
type Key = (String, String, u64);

/// Recent items, oldest first.
#[derive(Debug)]
pub struct Recent<T> {
    max_items: usize,
    max_bytes: usize,
    bytes: usize,
    /// Each item with its message's key (none when unsequenced) and size.
    items: VecDeque<(Option<Key>, usize, T)>,
    keys: HashSet<Key>,
}

impl<T> Recent<T> {
    /// At most `max_items` items and `max_bytes` of the messages they came in.
    pub fn new(max_items: usize, max_bytes: usize) -> Self {
        Self {
            max_items: max_items.max(1),
            max_bytes,
            bytes: 0,
            items: VecDeque::new(),
            keys: HashSet::new(),
        }
    }

    /// Lists `item`, which came from `site` in a message of `bytes` numbered
    /// `seq`, unless that message is listed already; the oldest go beyond
    /// the bounds. Returns whether it was listed.
    pub fn push(&mut self, site: &str, seq: Option<&Seq>, bytes: usize, item: T) -> bool {
        let key = seq.map(|s| (site.to_string(), s.stream.clone(), s.n));
        if let Some(k) = &key {
            if !self.keys.insert(k.clone()) {
                return false;
            }
        }
        self.items.push_back((key, bytes, item));
        self.bytes += bytes;
        while self.items.len() > self.max_items
            || (self.bytes > self.max_bytes && self.items.len() > 1)
        {
            if let Some((key, b, _)) = self.items.pop_front() {
                self.bytes -= b;
                if let Some(k) = key {
                    self.keys.remove(&k);
                }
            }
        }
        true
    }

    /// The items, oldest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &T> {
        self.items.iter().map(|(_, _, item)| item)
    }

    /// How many are listed.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(stream: &str, n: u64) -> Seq {
        Seq {
            stream: stream.into(),
            n,
            floor: 1,
        }
    }

    #[test]
    fn lists_each_message_once_and_keeps_the_newest_within_its_bounds() {
        let mut r = Recent::new(3, 1000);
        assert!(r.push("a", Some(&seq("x", 1)), 10, 1));
        assert!(!r.push("a", Some(&seq("x", 1)), 10, 1), "sent again");
        assert!(r.push("b", Some(&seq("x", 1)), 10, 2), "another site");
        assert!(r.push("a", Some(&seq("y", 1)), 10, 3), "another stream");
        assert!(r.push("a", None, 10, 4), "unsequenced: always");
        assert!(r.push("a", None, 10, 4));
        assert_eq!(r.iter().copied().collect::<Vec<_>>(), [3, 4, 4]);
        // What fell out is forgotten with it: a late copy is listed again.
        assert!(r.push("a", Some(&seq("x", 1)), 10, 1));
        assert_eq!(r.iter().copied().collect::<Vec<_>>(), [4, 4, 1]);
        assert_eq!(r.keys.len(), 1, "keys leave with their items");
    }

    #[test]
    fn bytes_bound_the_list_but_the_newest_item_stays() {
        let mut r = Recent::new(100, 25);
        for i in 0..5 {
            r.push("a", Some(&seq("x", i)), 10, i);
        }
        assert_eq!(r.iter().copied().collect::<Vec<_>>(), [3, 4]);
        r.push("a", Some(&seq("x", 9)), 40, 9);
        assert_eq!(r.iter().copied().collect::<Vec<_>>(), [9]);
        assert_eq!(r.len(), 1);
        assert_eq!(r.bytes, 40);
    }
}
