//! In-memory time-series store with Prometheus's data model: a series is a label set (including
//! `__name__`) and a time-ordered list of `(timestamp_ms, f64)` samples. Counters and histogram
//! buckets are stored cumulatively, exactly as a scrape would record them.
//!
//! Samples are kept in compressed chunks (delta-of-delta timestamps, XOR'ed float bits, both
//! varint-coded) because the mesh samples every series every second for 30 minutes: at 1,000
//! VirtualServices a plain `(i64, f64)` ring would cost hundreds of megabytes. Whole chunks older
//! than the retention window are dropped; a series with no sample left is forgotten.
use std::collections::HashMap;
use std::sync::Arc;

/// One label pair; strings are interned so the many series of a workload share them.
pub type Label = (Arc<str>, Arc<str>);

/// A label set sorted by name, including `__name__` for stored series. Cheap to clone.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Labels(pub Arc<[Label]>);

impl Labels {
    /// Builds a sorted label set; empty values are dropped (Prometheus treats them as absent).
    pub fn from_pairs<K: AsRef<str>, V: AsRef<str>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let mut v: Vec<Label> = pairs
            .into_iter()
            .filter(|(_, val)| !val.as_ref().is_empty())
            .map(|(k, val)| (Arc::from(k.as_ref()), Arc::from(val.as_ref())))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v.dedup_by(|a, b| a.0 == b.0);
        Labels(v.into())
    }

    pub fn from_vec(mut v: Vec<Label>) -> Self {
        v.retain(|(_, val)| !val.is_empty());
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v.dedup_by(|a, b| a.0 == b.0);
        Labels(v.into())
    }

    /// Value of label `name`, "" when absent (as PromQL matchers see it).
    pub fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| &**k == name)
            .map(|(_, v)| &**v)
            .unwrap_or("")
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (&**k, &**v))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A copy keeping only the labels for which `keep` is true.
    pub fn filtered(&self, mut keep: impl FnMut(&str) -> bool) -> Labels {
        if self.0.iter().all(|(k, _)| keep(k)) {
            return self.clone();
        }
        Labels(self.0.iter().filter(|(k, _)| keep(k)).cloned().collect())
    }

    pub fn without_name(&self) -> Labels {
        self.filtered(|k| k != "__name__")
    }
}

/// Samples per chunk: two minutes at the default one-second sampling, so dropping expired chunks
/// keeps the retention window accurate to a couple of minutes.
const CHUNK_SAMPLES: u32 = 120;

#[derive(Debug)]
struct Chunk {
    first_ts: i64,
    last_ts: i64,
    last_delta: i64,
    last_bits: u64,
    /// Last increase when the last two values were exact integers (0 otherwise).
    last_vdelta: i64,
    count: u32,
    data: Vec<u8>,
}

/// Value tags above the XOR range: integer counter whose increase repeats the previous one, or
/// differs from it by a zigzag varint that follows.
const TAG_SAME_INCREASE: u8 = 65;
const TAG_INCREASE_DOD: u8 = 66;

/// The value as an exact integer, when the float round-trips through one (not -0.0, < 2^53).
fn exact_int(v: f64) -> Option<i64> {
    if v.fract() != 0.0 || v.abs() >= 9_007_199_254_740_992.0 {
        return None;
    }
    let i = v as i64;
    ((i as f64).to_bits() == v.to_bits()).then_some(i)
}

fn next_vdelta(prev_bits: u64, bits: u64) -> i64 {
    match (
        exact_int(f64::from_bits(prev_bits)),
        exact_int(f64::from_bits(bits)),
    ) {
        (Some(a), Some(b)) => b.wrapping_sub(a),
        _ => 0,
    }
}

impl Chunk {
    fn new(ts: i64, v: f64) -> Chunk {
        let mut data = Vec::with_capacity(64);
        put_varint(&mut data, v.to_bits());
        Chunk {
            first_ts: ts,
            last_ts: ts,
            last_delta: 0,
            last_bits: v.to_bits(),
            last_vdelta: 0,
            count: 1,
            data,
        }
    }

    /// Appends one sample as a header byte (bit 7: a non-zero delta-of-delta timestamp
    /// follows; bits 0-6: the value tag) and its payload. Value tags: 0 = unchanged; 1..=64 =
    /// trailing-zero count + 1 of the XOR with the previous value's bits, which follows shifted
    /// right; 65/66 = integer counter increase equal to the previous one / differing by a
    /// varint. A steadily scraped counter costs one or two bytes per sample.
    fn push(&mut self, ts: i64, v: f64) {
        let delta = ts - self.last_ts;
        let dod = delta - self.last_delta;
        let bits = v.to_bits();
        let x = bits ^ self.last_bits;
        let mut payload: Option<u64> = None;
        let tag = if x == 0 {
            0
        } else if let (Some(a), Some(b)) = (exact_int(f64::from_bits(self.last_bits)), exact_int(v))
        {
            let dd = b.wrapping_sub(a).wrapping_sub(self.last_vdelta);
            if dd == 0 {
                TAG_SAME_INCREASE
            } else {
                payload = Some(zigzag(dd));
                TAG_INCREASE_DOD
            }
        } else {
            // tz < 64 because x != 0, so the tag fits in 7 bits.
            let tz = x.trailing_zeros();
            payload = Some(x >> tz);
            tz as u8 + 1
        };
        self.data.push(tag | if dod != 0 { 0x80 } else { 0 });
        if dod != 0 {
            put_varint(&mut self.data, zigzag(dod));
        }
        if let Some(p) = payload {
            put_varint(&mut self.data, p);
        }
        self.last_vdelta = next_vdelta(self.last_bits, bits);
        self.last_ts = ts;
        self.last_delta = delta;
        self.last_bits = bits;
        self.count += 1;
        if self.count == CHUNK_SAMPLES {
            self.data.shrink_to_fit();
        }
    }

    /// Decodes every sample with `mint <= ts <= maxt` into `out`.
    fn decode_into(&self, mint: i64, maxt: i64, out: &mut Vec<(i64, f64)>) {
        let mut pos = 0;
        let Some(first_bits) = get_varint(&self.data, &mut pos) else {
            return;
        };
        let mut ts = self.first_ts;
        let mut bits = first_bits;
        let mut delta = 0i64;
        let mut vdelta = 0i64;
        if ts >= mint && ts <= maxt {
            out.push((ts, f64::from_bits(bits)));
        }
        for _ in 1..self.count {
            let Some(&head) = self.data.get(pos) else {
                return;
            };
            pos += 1;
            if head & 0x80 != 0 {
                let Some(dod) = get_varint(&self.data, &mut pos) else {
                    return;
                };
                delta += unzigzag(dod);
            }
            ts += delta;
            let prev = bits;
            match head & 0x7f {
                0 => {}
                tag @ (TAG_SAME_INCREASE | TAG_INCREASE_DOD) => {
                    let dd = if tag == TAG_INCREASE_DOD {
                        let Some(z) = get_varint(&self.data, &mut pos) else {
                            return;
                        };
                        unzigzag(z)
                    } else {
                        0
                    };
                    let Some(a) = exact_int(f64::from_bits(bits)) else {
                        return;
                    };
                    bits = (a.wrapping_add(vdelta).wrapping_add(dd) as f64).to_bits();
                }
                tag => {
                    let Some(x) = get_varint(&self.data, &mut pos) else {
                        return;
                    };
                    bits ^= x.checked_shl(u32::from(tag - 1)).unwrap_or(0);
                }
            }
            vdelta = next_vdelta(prev, bits);
            if ts > maxt {
                return;
            }
            if ts >= mint {
                out.push((ts, f64::from_bits(bits)));
            }
        }
    }

    fn bytes(&self) -> usize {
        self.data.capacity() + std::mem::size_of::<Chunk>()
    }
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(data: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    let mut shift = 0u32;
    loop {
        let b = *data.get(*pos)?;
        *pos += 1;
        if shift >= 64 {
            return None;
        }
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
        shift += 7;
    }
}

#[derive(Debug)]
struct Series {
    labels: Labels,
    chunks: std::collections::VecDeque<Chunk>,
}

impl Series {
    fn last_ts(&self) -> Option<i64> {
        self.chunks.back().map(|c| c.last_ts)
    }
}

/// Handle to a stored series, for appenders that write the same series every sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SeriesRef(usize);

/// The store. Not synchronised: the mesh wraps it in a lock.
#[derive(Debug)]
pub struct Tsdb {
    series: Vec<Option<Series>>,
    by_labels: HashMap<Labels, usize>,
    /// label name → value → series holding that pair (an inverted index for equality matchers).
    postings: HashMap<Arc<str>, HashMap<Arc<str>, Vec<usize>>>,
    interned: HashMap<Arc<str>, ()>,
    retention_ms: i64,
    live: usize,
}

/// What a selection returns: one entry per matching series with its samples in the window.
pub type Selected = Vec<(Labels, Vec<(i64, f64)>)>;

impl Tsdb {
    pub fn new(retention: std::time::Duration) -> Tsdb {
        Tsdb {
            series: Vec::new(),
            by_labels: HashMap::new(),
            postings: HashMap::new(),
            interned: HashMap::new(),
            retention_ms: i64::try_from(retention.as_millis()).unwrap_or(i64::MAX),
            live: 0,
        }
    }

    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some((k, _)) = self.interned.get_key_value(s) {
            return k.clone();
        }
        let a: Arc<str> = Arc::from(s);
        self.interned.insert(a.clone(), ());
        a
    }

    /// Returns the series with exactly these labels (which must include `__name__`), creating it.
    pub fn series_ref(&mut self, labels: &Labels) -> SeriesRef {
        if let Some(&i) = self.by_labels.get(labels) {
            return SeriesRef(i);
        }
        let pairs: Vec<Label> = labels
            .0
            .iter()
            .map(|(k, v)| (self.intern(k), self.intern(v)))
            .collect();
        let labels = Labels(pairs.into());
        let idx = self.series.len();
        for (k, v) in labels.0.iter() {
            self.postings
                .entry(k.clone())
                .or_default()
                .entry(v.clone())
                .or_default()
                .push(idx);
        }
        self.series.push(Some(Series {
            labels: labels.clone(),
            chunks: Default::default(),
        }));
        self.by_labels.insert(labels, idx);
        self.live += 1;
        SeriesRef(idx)
    }

    /// Appends a sample. Out-of-order or duplicate timestamps are ignored, as Prometheus does.
    pub fn append(&mut self, r: SeriesRef, ts: i64, v: f64) {
        let Some(Some(s)) = self.series.get_mut(r.0) else {
            return;
        };
        match s.chunks.back_mut() {
            Some(c) if ts <= c.last_ts => {}
            Some(c) if c.count < CHUNK_SAMPLES => c.push(ts, v),
            _ => s.chunks.push_back(Chunk::new(ts, v)),
        }
    }

    /// Convenience for tests and one-off writers.
    pub fn add(&mut self, labels: &Labels, ts: i64, v: f64) {
        let r = self.series_ref(labels);
        self.append(r, ts, v);
    }

    /// Drops chunks entirely older than `now - retention` and series left empty. Returns true
    /// when series were removed (their refs are then invalid and must be re-resolved).
    pub fn gc(&mut self, now: i64) -> bool {
        let cutoff = now.saturating_sub(self.retention_ms);
        let mut removed = false;
        for slot in &mut self.series {
            let Some(s) = slot else { continue };
            while s.chunks.front().is_some_and(|c| c.last_ts < cutoff) {
                s.chunks.pop_front();
            }
            if s.chunks.is_empty() {
                removed = true;
                self.by_labels.remove(&s.labels);
                *slot = None;
                self.live -= 1;
            }
        }
        if removed {
            let series = &self.series;
            self.postings.retain(|_, values| {
                values.retain(|_, ids| {
                    ids.retain(|&i| series.get(i).is_some_and(Option::is_some));
                    !ids.is_empty()
                });
                !values.is_empty()
            });
        }
        removed
    }

    /// Whether a ref still points to a live series.
    pub fn is_live(&self, r: SeriesRef) -> bool {
        self.series.get(r.0).is_some_and(Option::is_some)
    }

    /// Series whose labels satisfy `matches` and contain every `(name, value)` pair of `hints`
    /// (non-empty values; used to start from the smallest posting list), with their samples in
    /// `[mint, maxt]` (both inclusive). Series with no sample in the window are left out.
    pub fn select(
        &self,
        hints: &[(&str, &str)],
        mint: i64,
        maxt: i64,
        mut matches: impl FnMut(&Labels) -> bool,
    ) -> Selected {
        let mut out = Vec::new();
        let mut visit = |s: &Series| {
            if s.last_ts().is_none_or(|t| t < mint) || !matches(&s.labels) {
                return;
            }
            let mut samples = Vec::new();
            for c in &s.chunks {
                if c.last_ts < mint || c.first_ts > maxt {
                    continue;
                }
                c.decode_into(mint, maxt, &mut samples);
            }
            if !samples.is_empty() {
                out.push((s.labels.clone(), samples));
            }
        };
        let smallest = hints
            .iter()
            .map(|(k, v)| {
                self.postings
                    .get(*k)
                    .and_then(|m| m.get(*v))
                    .map_or(&[][..], Vec::as_slice)
            })
            .min_by_key(|ids| ids.len());
        match smallest {
            Some(ids) => {
                for &i in ids {
                    if let Some(Some(s)) = self.series.get(i)
                        && hints.iter().all(|(k, v)| s.labels.get(k) == *v)
                    {
                        visit(s);
                    }
                }
            }
            None => self.series.iter().flatten().for_each(visit),
        }
        out
    }

    pub fn num_series(&self) -> usize {
        self.live
    }

    /// Approximate heap bytes held by samples (for the benchmark's memory figure).
    pub fn sample_bytes(&self) -> usize {
        self.series
            .iter()
            .flatten()
            .map(|s| s.chunks.iter().map(Chunk::bytes).sum::<usize>())
            .sum()
    }

    pub fn num_samples(&self) -> usize {
        self.series
            .iter()
            .flatten()
            .map(|s| s.chunks.iter().map(|c| c.count as usize).sum::<usize>())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::time::Duration;

    fn l(pairs: &[(&str, &str)]) -> Labels {
        Labels::from_pairs(pairs.iter().copied())
    }

    #[test]
    fn round_trips_arbitrary_floats_and_irregular_timestamps() {
        let mut db = Tsdb::new(Duration::from_secs(3600));
        let s = l(&[("__name__", "x")]);
        let vals = [
            0.0,
            1.0,
            1.0,
            -3.5,
            f64::NAN,
            f64::INFINITY,
            1e300,
            123.456,
            f64::MIN_POSITIVE,
            -0.0,
        ];
        let mut ts = 1000;
        let mut expect = Vec::new();
        for (i, v) in vals.iter().cycle().take(500).enumerate() {
            ts += 1000 + (i as i64 % 7) * 13 - 20;
            db.add(&s, ts, *v);
            expect.push((ts, *v));
        }
        let got = db.select(&[("__name__", "x")], 0, i64::MAX, |_| true);
        assert_eq!(got.len(), 1);
        let got = &got[0].1;
        assert_eq!(got.len(), expect.len());
        for (a, b) in got.iter().zip(&expect) {
            assert_eq!(a.0, b.0);
            assert_eq!(a.1.to_bits(), b.1.to_bits());
        }
    }

    #[test]
    fn integer_counters_round_trip_exactly() {
        let mut db = Tsdb::new(Duration::from_secs(100_000));
        let s = l(&[("__name__", "c")]);
        let mut v = 0.0f64;
        let mut expect = Vec::new();
        for t in 0..2000i64 {
            v += [9.0, 9.0, 7.0, 0.0, 123_456.0, 1.0][t as usize % 6];
            let val = match t {
                500 => 2.5,                     // a fraction breaks the integer run
                501 => -0.0,                    // negative zero must keep its sign
                502 => 9_007_199_254_740_993.0, // beyond 2^53: XOR path
                _ => v,
            };
            db.add(&s, t * 1000, val);
            expect.push((t * 1000, val));
        }
        let got = &db.select(&[("__name__", "c")], 0, i64::MAX, |_| true)[0].1;
        assert_eq!(got.len(), expect.len());
        for (a, b) in got.iter().zip(&expect) {
            assert_eq!((a.0, a.1.to_bits()), (b.0, b.1.to_bits()));
        }
    }

    #[test]
    fn select_window_is_inclusive_and_out_of_order_ignored() {
        let mut db = Tsdb::new(Duration::from_secs(3600));
        let s = l(&[("__name__", "x"), ("a", "1")]);
        for t in 1..=10 {
            db.add(&s, t * 1000, t as f64);
        }
        db.add(&s, 5000, 99.0);
        let got = db.select(&[("__name__", "x")], 3000, 6000, |_| true);
        assert_eq!(
            got[0].1,
            vec![(3000, 3.0), (4000, 4.0), (5000, 5.0), (6000, 6.0)]
        );
        assert!(
            db.select(&[("__name__", "y")], 0, 10000, |_| true)
                .is_empty()
        );
        assert!(
            db.select(&[("__name__", "x")], 11000, 20000, |_| true)
                .is_empty()
        );
    }

    #[test]
    fn retention_drops_old_chunks_and_empty_series() {
        let mut db = Tsdb::new(Duration::from_secs(300));
        let a = l(&[("__name__", "a")]);
        let b = l(&[("__name__", "b")]);
        for t in 0..1000i64 {
            db.add(&a, t * 1000, t as f64);
        }
        db.add(&b, 0, 1.0);
        assert!(db.gc(1_000_000));
        assert_eq!(db.num_series(), 1);
        let got = db.select(&[("__name__", "a")], 0, i64::MAX, |_| true);
        let first = got[0].1[0].0;
        // whole chunks only: everything older than the cutoff's chunk is gone
        assert!(first <= 1_000_000 - 300_000 && first > 1_000_000 - 300_000 - 120_000);
        assert!(
            db.select(&[("__name__", "b")], 0, i64::MAX, |_| true)
                .is_empty()
        );
    }

    #[test]
    fn regular_counters_compress_to_a_few_bytes_per_sample() {
        let mut db = Tsdb::new(Duration::from_secs(3600));
        let s = l(&[("__name__", "c")]);
        for t in 0..1200i64 {
            db.add(&s, t * 1000, (t * 10) as f64);
        }
        let per_sample = db.sample_bytes() as f64 / 1200.0;
        assert!(per_sample < 2.0, "{per_sample} bytes per sample");
    }
}
