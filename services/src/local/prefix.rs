//! Longest-prefix lookup over destination digits, for rate decks and route tables.
//!
//! Hand-written rather than taken from a crate: the keys are decimal digits only, so a trie with ten
//! children per node, kept in one flat vector, answers a lookup in one step per digit with no hashing and
//! no allocation. Measured against probing a `HashMap` once per prefix length, and against a sorted table
//! with binary search: see `lookup_speed` below (`cargo test --release -p rtc-services lookup_speed --
//! --ignored --nocapture`) and the figures in conf/README.md.

/// Index meaning "no child" / "no value". The root is node 0 and never anyone's child, so 0 is free too,
/// but `NONE` keeps the intent readable.
const NONE: u32 = u32::MAX;

/// One trie node: a child per digit and the value of the prefix ending here.
#[derive(Clone, Debug)]
struct Node {
    /// Child node index per digit 0–9, `NONE` when absent.
    children: [u32; 10],
    /// Index into `values` of the prefix ending at this node, `NONE` when no prefix ends here.
    value: u32,
}

const EMPTY: Node = Node {
    children: [NONE; 10],
    value: NONE,
};

/// A map from digit-string prefixes to values, answering "the longest key that prefixes this number".
#[derive(Clone, Debug)]
pub struct PrefixMap<V> {
    /// Trie nodes; node 0 is the root (the empty prefix).
    nodes: Vec<Node>,
    /// Values, referred to by the nodes.
    values: Vec<V>,
}

impl<V> Default for PrefixMap<V> {
    fn default() -> Self {
        PrefixMap {
            nodes: vec![EMPTY],
            values: Vec::new(),
        }
    }
}

/// Whether `text` is a non-empty string of decimal digits, the only keys a [`PrefixMap`] holds.
pub fn is_digits(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

/// The digits of a destination as the tables see them: a leading `+` is dropped.
pub fn destination_digits(destination: &str) -> &str {
    destination.strip_prefix('+').unwrap_or(destination)
}

impl<V> PrefixMap<V> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of prefixes held.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the table has no prefix.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The value slot for `prefix`, created with `make` when absent. `None` when `prefix` is not all
    /// digits (callers validate first and report the field).
    pub fn entry(&mut self, prefix: &str, make: impl FnOnce() -> V) -> Option<&mut V> {
        if !is_digits(prefix) {
            return None;
        }
        let mut node = 0usize;
        for b in prefix.bytes() {
            let digit = usize::from(b - b'0');
            let child = self.nodes[node].children[digit];
            node = if child == NONE {
                let new = u32::try_from(self.nodes.len()).ok()?;
                self.nodes.push(EMPTY);
                self.nodes[node].children[digit] = new;
                new as usize
            } else {
                child as usize
            };
        }
        if self.nodes[node].value == NONE {
            let index = u32::try_from(self.values.len()).ok()?;
            self.values.push(make());
            self.nodes[node].value = index;
        }
        let index = self.nodes[node].value as usize;
        self.values.get_mut(index)
    }

    /// The value of the exact prefix, if present.
    pub fn get(&self, prefix: &str) -> Option<&V> {
        match self.longest_match(prefix) {
            Some((len, v)) if len == prefix.len() => Some(v),
            _ => None,
        }
    }

    /// The value of the longest key that is a prefix of `digits`, with that key's length. The walk stops
    /// at the first non-digit, so `4420*99` matches as `4420` would.
    #[inline]
    pub fn longest_match(&self, digits: &str) -> Option<(usize, &V)> {
        let mut node = 0usize;
        let mut best = None;
        for (i, b) in digits.bytes().enumerate() {
            let digit = b.wrapping_sub(b'0');
            if digit > 9 {
                break;
            }
            let child = self.nodes[node].children[usize::from(digit)];
            if child == NONE {
                break;
            }
            node = child as usize;
            let value = self.nodes[node].value;
            if value != NONE {
                best = Some((i + 1, value));
            }
        }
        best.and_then(|(len, v)| self.values.get(v as usize).map(|v| (len, v)))
    }

    /// The values, in insertion order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.values.iter()
    }

    /// Approximate bytes held by the trie itself (not counting what the values point to).
    pub fn heap_bytes(&self) -> usize {
        self.nodes.capacity() * std::mem::size_of::<Node>()
            + self.values.capacity() * std::mem::size_of::<V>()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Instant;

    use super::*;

    #[test]
    fn longest_prefix_wins() {
        let mut map = PrefixMap::new();
        for (p, v) in [("44", 1), ("4420", 2), ("442079", 3), ("1", 4)] {
            *map.entry(p, || 0).unwrap() = v;
        }
        assert_eq!(map.longest_match("442071234567"), Some((4, &2)));
        assert_eq!(map.longest_match("442079460000"), Some((6, &3)));
        assert_eq!(map.longest_match("447700900123"), Some((2, &1)));
        assert_eq!(map.longest_match("4"), None);
        assert_eq!(map.longest_match("33123"), None);
        assert_eq!(map.longest_match(""), None);
        assert_eq!(map.longest_match("4420#1"), Some((4, &2)));
        assert_eq!(map.longest_match("44a20"), Some((2, &1)));
        assert_eq!(map.get("4420"), Some(&2));
        assert_eq!(map.get("442"), None);
        assert_eq!(map.len(), 4);
        assert!(map.entry("4x", || 0).is_none());
        assert!(map.entry("", || 0).is_none());
        assert_eq!(destination_digits("+4420"), "4420");
    }

    proptest::proptest! {
        #[test]
        fn agrees_with_a_linear_scan(
            keys in proptest::collection::vec("[0-9]{1,6}", 0..40),
            probes in proptest::collection::vec("[0-9]{0,9}", 1..40),
        ) {
            let mut map = PrefixMap::new();
            for (i, k) in keys.iter().enumerate() {
                map.entry(k, || i);
            }
            for probe in &probes {
                let expected = keys
                    .iter()
                    .filter(|k| probe.starts_with(k.as_str()))
                    .max_by_key(|k| k.len())
                    .map(|k| (k.len(), keys.iter().position(|x| x == k).unwrap()));
                let got = map.longest_match(probe).map(|(len, v)| (len, *v));
                proptest::prop_assert_eq!(got, expected);
            }
        }
    }

    /// A tiny deterministic generator, so the measurement needs no extra crate.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            self.0 >> 33
        }
        fn digits(&mut self, len: usize) -> String {
            (0..len)
                .map(|_| char::from(b'0' + (self.next() % 10) as u8))
                .collect()
        }
    }

    /// Compares the trie with per-length hash probing and a sorted table on a 50,000-prefix deck.
    #[test]
    #[ignore = "measurement; run in release with --ignored --nocapture"]
    fn lookup_speed() {
        let mut rng = Lcg(7);
        let keys: Vec<String> = (0..50_000)
            .map(|_| {
                let len = 2 + (rng.next() % 7) as usize;
                rng.digits(len)
            })
            .collect();
        // Half the probes extend a deck prefix (as real traffic does), half are random numbers.
        let probes: Vec<String> = (0..200_000)
            .map(|i| {
                if i % 2 == 0 {
                    let k = &keys[(rng.next() as usize) % keys.len()];
                    let tail = rng.digits(12 - k.len());
                    format!("{k}{tail}")
                } else {
                    rng.digits(12)
                }
            })
            .collect();

        // Keys held inline (no pointer to chase) in the two alternatives, to compare fairly.
        type Key = [u8; 16];
        let key = |s: &str| -> Key {
            let mut k = [0u8; 16];
            k[..s.len().min(16)].copy_from_slice(&s.as_bytes()[..s.len().min(16)]);
            k
        };
        let number = |s: &str| -> u64 {
            s.bytes()
                .fold(s.len() as u64, |n, b| n * 10 + u64::from(b - b'0'))
        };
        let mut trie = PrefixMap::new();
        let mut hash: HashMap<u64, u32> = HashMap::new();
        let mut first: HashMap<&str, u32> = HashMap::new();
        for (i, k) in keys.iter().enumerate() {
            trie.entry(k, || i as u32);
            first.entry(k.as_str()).or_insert(i as u32);
        }
        for (k, v) in &first {
            hash.insert(number(k), *v);
        }
        let max_len = keys.iter().map(String::len).max().unwrap_or(0);
        // Sorted table: each entry keeps the index of its longest proper prefix in the table.
        let mut sorted: Vec<(Key, u8, u32)> = first
            .iter()
            .map(|(k, v)| (key(k), k.len() as u8, *v))
            .collect();
        sorted.sort_unstable();
        let prefix_of = |short: &(Key, u8, u32), long: &Key| {
            short.0[..usize::from(short.1)] == long[..usize::from(short.1)]
        };
        let mut parent = vec![u32::MAX; sorted.len()];
        let mut stack: Vec<usize> = Vec::new();
        for i in 0..sorted.len() {
            while let Some(&top) = stack.last() {
                if prefix_of(&sorted[top], &sorted[i].0) {
                    break;
                }
                stack.pop();
            }
            parent[i] = stack.last().map_or(u32::MAX, |&t| t as u32);
            stack.push(i);
        }

        let rounds = 5;
        let time = |name: &str, f: &dyn Fn(&str) -> Option<u32>| {
            let start = Instant::now();
            let mut found = 0u64;
            for _ in 0..rounds {
                for p in &probes {
                    found += u64::from(f(p).is_some());
                }
            }
            let ns = start.elapsed().as_nanos() as f64 / (rounds * probes.len()) as f64;
            println!("{name}: {ns:.1} ns/lookup ({found} found)");
            found
        };
        let a = time("trie", &|p| trie.longest_match(p).map(|(_, v)| *v));
        let b = time("hash probe per length", &|p| {
            (1..=max_len.min(p.len()))
                .rev()
                .find_map(|l| hash.get(&number(&p[..l])).copied())
        });
        let c = time("sorted table", &|p| {
            let probe = key(p);
            let mut i = match sorted.binary_search_by(|(k, _, _)| k.cmp(&probe)) {
                Ok(i) => return Some(sorted[i].2),
                Err(0) => return None,
                Err(i) => i - 1,
            };
            loop {
                if prefix_of(&sorted[i], &probe) {
                    return Some(sorted[i].2);
                }
                if parent[i] == u32::MAX {
                    return None;
                }
                i = parent[i] as usize;
            }
        });
        println!(
            "trie heap: {} bytes for {} prefixes",
            trie.heap_bytes(),
            trie.len()
        );
        assert_eq!(a, b);
        assert_eq!(a, c);
    }
}
