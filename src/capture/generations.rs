//! The generations the OTLP traces receiver has seen, by span id and by request id, so that an
//! evaluation sent as a log record (`gen_ai.evaluation.result`, [`super::logs`]) can name the
//! generation it evaluates: the OpenTelemetry GenAI conventions parent the event to the
//! evaluated span (the log record's `span_id`), and give `gen_ai.response.id` only "when span id
//! is not available"; a log record names no model, and its resource is the evaluator's.
//!
//! Bounded twice: at most [`CAPACITY`] generations, each for at most [`TTL`]. A full index drops
//! its oldest generation for the new one, counted in `inferscope.otlp.generations.evicted`
//! (logged once); a generation past the TTL is forgotten without being counted (it aged out as
//! designed). An evaluation of a forgotten generation that carries `gen_ai.response.id` still
//! joins (its model then from the log record, [`super::logs`]); one that has only a span id is
//! counted in `inferscope.otlp.evaluations.unresolved`.
//!
//! Memory (estimated from the layout, not measured): about 220 bytes a generation with a 40-byte
//! request id (two hash map entries, the request id twice, the eviction queue entry; model and
//! version strings shared between consecutive generations of one model), so about 14 MiB full.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

/// Generations remembered at most. 65 536 cover the last minute at 1 000 generations/s, a
/// quarter of an hour at 70/s; an evaluator that answers later should send `gen_ai.response.id`.
pub const CAPACITY: usize = 65_536;
/// How long a generation is remembered: online evaluators (a judge model called after the
/// response, a thumbs up in the same session) answer within minutes.
pub const TTL: Duration = Duration::from_secs(15 * 60);

/// What an evaluation needs of its generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    pub model: Arc<str>,
    pub version: Arc<str>,
    pub request_id: Box<str>,
}

struct Entry {
    generation: Generation,
    at: Instant,
}

/// Span id → generation, request id → span id, oldest first in `order`.
pub struct GenerationIndex {
    by_span: HashMap<[u8; 8], Entry>,
    by_request: HashMap<Box<str>, [u8; 8]>,
    /// Insertion order, for eviction and expiry; an entry whose span id was inserted again later
    /// (or already removed) is skipped when it comes up.
    order: VecDeque<([u8; 8], Instant)>,
    capacity: usize,
    ttl: Duration,
    /// The last model and version inserted, shared by the next generation of the same model.
    last: Option<(Arc<str>, Arc<str>)>,
}

impl Default for GenerationIndex {
    fn default() -> Self {
        Self::new(CAPACITY, TTL)
    }
}

impl GenerationIndex {
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            by_span: HashMap::new(),
            by_request: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
            ttl,
            last: None,
        }
    }

    /// Remembers a generation; returns how many were evicted to make room (0 or 1).
    pub fn insert(
        &mut self,
        span_id: [u8; 8],
        model: &str,
        version: &str,
        request_id: &str,
        now: Instant,
    ) -> u64 {
        self.expire(now);
        let (model, version) = match &self.last {
            Some((m, v)) if **m == *model && **v == *version => (m.clone(), v.clone()),
            _ => {
                let shared: (Arc<str>, Arc<str>) = (model.into(), version.into());
                self.last = Some(shared.clone());
                shared
            }
        };
        let generation = Generation {
            model,
            version,
            request_id: request_id.into(),
        };
        let mut evicted = 0;
        if let Some(old) = self.by_span.insert(
            span_id,
            Entry {
                generation,
                at: now,
            },
        ) {
            // The same span again (an exporter's retry): the request id may have changed.
            self.forget_request(&old.generation.request_id, span_id);
        } else {
            while self.by_span.len() > self.capacity {
                let Some((oldest, at)) = self.order.pop_front() else {
                    break;
                };
                if self.remove_if_at(oldest, at) {
                    evicted += 1;
                }
            }
        }
        self.by_request.insert(request_id.into(), span_id);
        self.order.push_back((span_id, now));
        evicted
    }

    /// The generation of a span, if remembered and within the TTL.
    pub fn by_span(&mut self, span_id: [u8; 8], now: Instant) -> Option<Generation> {
        self.expire(now);
        self.by_span.get(&span_id).map(|e| e.generation.clone())
    }

    /// The generation with a request id, if remembered and within the TTL.
    pub fn by_request(&mut self, request_id: &str, now: Instant) -> Option<Generation> {
        self.expire(now);
        let span_id = self.by_request.get(request_id)?;
        self.by_span.get(span_id).map(|e| e.generation.clone())
    }

    pub fn len(&self) -> usize {
        self.by_span.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_span.is_empty()
    }

    /// Forgets the generations older than the TTL.
    fn expire(&mut self, now: Instant) {
        while let Some(&(span_id, at)) = self.order.front() {
            if now.saturating_duration_since(at) < self.ttl {
                break;
            }
            self.order.pop_front();
            self.remove_if_at(span_id, at);
        }
        // Entries skipped as stale can pile up in `order` only while their span ids are inserted
        // again; keep the queue within twice the map.
        if self.order.len() > 2 * self.capacity {
            let by_span = &self.by_span;
            self.order
                .retain(|(id, at)| by_span.get(id).is_some_and(|e| e.at == *at));
        }
    }

    /// Removes `span_id`'s entry if it is the one inserted at `at`.
    fn remove_if_at(&mut self, span_id: [u8; 8], at: Instant) -> bool {
        if self.by_span.get(&span_id).is_none_or(|e| e.at != at) {
            return false;
        }
        if let Some(old) = self.by_span.remove(&span_id) {
            self.forget_request(&old.generation.request_id, span_id);
        }
        true
    }

    fn forget_request(&mut self, request_id: &str, span_id: [u8; 8]) {
        if self.by_request.get(request_id) == Some(&span_id) {
            self.by_request.remove(request_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> [u8; 8] {
        [n, 0, 0, 0, 0, 0, 0, 1]
    }

    #[test]
    fn full_it_evicts_the_oldest_and_counts_it() {
        let t0 = Instant::now();
        let mut index = GenerationIndex::new(3, TTL);
        let evicted: u64 = (1..=5)
            .map(|n| index.insert(id(n), "m", "1", &format!("r{n}"), t0))
            .sum();
        assert_eq!(evicted, 2);
        assert_eq!(index.len(), 3);
        assert_eq!(index.by_span(id(1), t0), None);
        assert_eq!(index.by_request("r2", t0), None);
        let g = index.by_span(id(3), t0).unwrap();
        assert_eq!((&*g.model, &*g.version, &*g.request_id), ("m", "1", "r3"));
        assert_eq!(
            index.by_request("r5", t0).unwrap().request_id.as_ref(),
            "r5"
        );
        // Consecutive generations of one model share its strings.
        let (a, b) = (
            index.by_span(id(4), t0).unwrap(),
            index.by_span(id(5), t0).unwrap(),
        );
        assert!(Arc::ptr_eq(&a.model, &b.model));
    }

    #[test]
    fn generations_past_the_ttl_are_forgotten_uncounted() {
        let t0 = Instant::now();
        let ttl = Duration::from_secs(60);
        let mut index = GenerationIndex::new(10, ttl);
        assert_eq!(index.insert(id(1), "m", "1", "r1", t0), 0);
        assert_eq!(index.insert(id(2), "m", "1", "r2", t0 + ttl / 2), 0);
        assert!(index
            .by_span(id(1), t0 + ttl - Duration::from_millis(1))
            .is_some());
        assert!(index.by_span(id(1), t0 + ttl).is_none());
        assert!(index.by_request("r1", t0 + ttl).is_none());
        assert!(index.by_request("r2", t0 + ttl).is_some());
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn a_span_sent_again_is_one_generation_under_its_last_request_id() {
        let t0 = Instant::now();
        let mut index = GenerationIndex::new(2, TTL);
        for n in 0..100 {
            let later = t0 + Duration::from_millis(n);
            assert_eq!(
                index.insert(id(1), "m", "1", &format!("r{}", n % 2), later),
                0
            );
        }
        assert_eq!(index.len(), 1);
        assert_eq!(
            index.by_request("r1", t0).unwrap().request_id.as_ref(),
            "r1"
        );
        assert_eq!(index.by_request("r0", t0), None);
        assert!(index.order.len() <= 5, "{}", index.order.len());
        // Its stale queue entries do not evict it.
        assert_eq!(index.insert(id(2), "m", "1", "s", t0), 0);
        assert_eq!(index.len(), 2);
    }
}
