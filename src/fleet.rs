//! Fleet-wide quality (`docs/fleet-design.md`, decision 6): the sidecars that share a label store
//! also share their quality window states through it, and one of them exports the merge as
//! `inferscope.fleet.quality.*`.
//!
//! Why merging is exact: with a shared store each delayed pair is scored by exactly one sidecar
//! (the `GETDEL` of `src/label_store.rs`), and an inline pair by the sidecar that got its record,
//! so the sidecars' window states partition the fleet's pairs. Every quality statistic is
//! computed from a mergeable state (`src/quality/state.rs`), so the merge of the partition is
//! the state of the union: confusion counts, sums and score curves add up; ROC AUC and average
//! precision stay exact while the merged exact pairs fit `--exact-auc-max-pairs`, and carry
//! their error bound past it, as in one sidecar. Evaluations of generations are shared the same
//! way (names and labels by name): a generation waits in the sidecar that saw it and its
//! evaluations join only there, so the sidecars' evaluation windows partition the fleet's joined
//! evaluations too, and their counts, score sums and label counts add up.
//!
//! How, with Redis primitives only (no membership or consensus protocol of our own):
//! - at every metric export each sidecar writes its windows (every model version, classes by
//!   name since class slots differ between sidecars) as one JSON value under
//!   `{inferscope-fleet}:q:<instance>`, expiring after [`TTL_INTERVALS`] export intervals, and
//!   lists itself in the sorted set `{inferscope-fleet}:members` (score: when its entry expires);
//! - the lease `{inferscope-fleet}:lease` (taken with `SET NX PX`, renewed by its holder in one
//!   script) names the one sidecar that reads every member's value, merges them, and exports
//!   the result with its next export. A holder that dies is replaced when the lease expires.
//!
//! Reference profiles are shared the same way ([`share_references`], decision 7): a profile a
//! sidecar captured from live traffic is written once for the fleet (`{<model>@<version>}:reference`,
//! `SET NX`: the first capture wins) and listed in `{inferscope-fleet}:references`; every sidecar
//! adopts the fleet's reference for a version it has no profile file for, so a new pod of a
//! rollout measures drift against the same traffic as the pod it replaces instead of
//! re-capturing from its own first records.
//!
//! One hash tag for all the fleet's keys keeps them on one Redis Cluster slot, so the read is one
//! `MGET`. Nothing here is on the record path: the exporter hands its snapshot over and takes
//! the last merge without waiting; a slow or absent Redis only makes the fleet series stale
//! (counted in `inferscope.fleet.updates.failed`, logged once per outage).

use crate::{
    drift::{profile::Profile, registry::ProfileRegistry},
    events::{FleetEvaluationsFolded, FleetUpdateFailed, FleetUpdatesRecovered, Outage, SelfEvent},
    models::ModelKey,
    quality::{
        evaluation::{EvaluationSnapshot, EvaluationState, NameTable, MAX_EVALUATION_NAMES},
        state::QualityState,
        JoinStats, QualitySnapshot, Task,
    },
    self_metrics::SelfStats,
    windows::{WindowState, SINCE_START},
};
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::sync::watch;

/// A sidecar's shared state (and its membership, and the lease) live this many export
/// intervals: a sidecar that stops exporting leaves the merge, and a dead lease holder is
/// replaced, after at most this many intervals.
pub const TTL_INTERVALS: u32 = 3;
/// Version of the shared JSON; values of another version are left out of the merge.
const FORMAT: u32 = 1;
const MEMBERS: &str = "{inferscope-fleet}:members";
const LEASE: &str = "{inferscope-fleet}:lease";
const REFERENCES: &str = "{inferscope-fleet}:references";
/// How often a sidecar shares its new captures and looks for the fleet's.
pub const REFERENCE_SYNC: Duration = Duration::from_secs(2);

/// Takes the lease if it is free, renews it if this sidecar holds it; 1 if it holds it now.
const LEASE_SCRIPT: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
";

fn state_key(instance: &str) -> String {
    format!("{{inferscope-fleet}}:q:{instance}")
}

/// One sidecar's quality windows, as shared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SidecarQuality {
    pub format: u32,
    pub instance: String,
    pub models: Vec<SharedModel>,
}

/// One model version's windows on one sidecar; class slots are positions in `classes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SharedModel {
    pub model: String,
    pub version: String,
    pub task: Task,
    pub classes: Vec<String>,
    /// The positive class of a binary model.
    pub positive: Option<String>,
    /// The declared classes, in declared order.
    pub declared: Vec<String>,
    pub all_curves: bool,
    /// `(window name, state)`; the since-start state is not shared (each sidecar's start
    /// differs, so their union means nothing).
    pub windows: Vec<(String, QualityState)>,
    /// The evaluations of the model's generations; absent in states written before they were
    /// shared, and for models without any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluations: Option<SharedEvaluations>,
}

/// One model version's evaluation windows on one sidecar; slots are positions in `names` and,
/// per name, in `labels`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SharedEvaluations {
    pub names: Vec<String>,
    pub labels: Vec<Vec<String>>,
    /// `(window name, state)`, without the since-start state (as [`SharedModel::windows`]).
    pub windows: Vec<(String, EvaluationState)>,
}

impl SharedEvaluations {
    fn new(e: &EvaluationSnapshot) -> Self {
        Self {
            names: e.names.clone(),
            labels: e.labels.clone(),
            windows: e
                .windows
                .iter()
                .filter(|(window, _)| window != SINCE_START)
                .cloned()
                .collect(),
        }
    }
}

impl SidecarQuality {
    /// The windows of every model version of a snapshot.
    pub fn new(instance: &str, quality: &BTreeMap<ModelKey, QualitySnapshot>) -> Self {
        let models = quality
            .iter()
            .map(|(key, q)| {
                let name = |slot: u32| q.classes.get(slot as usize).cloned().unwrap_or_default();
                SharedModel {
                    model: key.model.clone(),
                    version: key.version.clone(),
                    task: q.task,
                    classes: q.classes.clone(),
                    positive: q.positive.map(name),
                    declared: q.declared.iter().map(|&s| name(s)).collect(),
                    all_curves: q.all_curves,
                    windows: q
                        .windows
                        .iter()
                        .filter(|(window, _)| window != SINCE_START)
                        .cloned()
                        .collect(),
                    evaluations: q.evaluations.as_ref().map(SharedEvaluations::new),
                }
            })
            .collect();
        Self {
            format: FORMAT,
            instance: instance.to_owned(),
            models,
        }
    }
}

/// The fleet's class table of one model version: names to slots, declared classes first.
#[derive(Default)]
struct Classes {
    names: Vec<String>,
    slots: HashMap<String, u32>,
}

impl Classes {
    fn slot(&mut self, name: &str) -> u32 {
        if let Some(&slot) = self.slots.get(name) {
            return slot;
        }
        let slot = self.names.len() as u32;
        self.names.push(name.to_owned());
        self.slots.insert(name.to_owned(), slot);
        slot
    }
}

/// Merges the sidecars' states into one snapshot per model version (`exact_cap`: the exact-pair
/// budget of `--exact-auc-max-pairs`; `max_labels`: `--max-classes`, the label values an
/// evaluation name keeps). A sidecar state whose slots do not fit its class list is left out.
pub fn merge(
    sidecars: &[SidecarQuality],
    exact_cap: usize,
    max_labels: usize,
) -> BTreeMap<ModelKey, QualitySnapshot> {
    let mut parts: BTreeMap<ModelKey, Vec<&SharedModel>> = BTreeMap::new();
    for m in sidecars.iter().flat_map(|s| &s.models) {
        parts
            .entry(ModelKey::new(&m.model, &m.version))
            .or_default()
            .push(m);
    }
    parts
        .into_iter()
        .map(|(key, models)| (key, merge_model(&models, exact_cap, max_labels)))
        .collect()
}

fn merge_model(models: &[&SharedModel], exact_cap: usize, max_labels: usize) -> QualitySnapshot {
    let task = models
        .iter()
        .map(|m| m.task)
        .find(|&t| t != Task::Undeclared)
        .unwrap_or(Task::Undeclared);
    let declared_names = models
        .iter()
        .map(|m| &m.declared)
        .find(|d| !d.is_empty())
        .cloned()
        .unwrap_or_default();
    let mut classes = Classes::default();
    let declared: Vec<u32> = declared_names.iter().map(|n| classes.slot(n)).collect();
    let positive = models
        .iter()
        .find_map(|m| m.positive.as_deref())
        .map(|n| classes.slot(n));
    let mut windows: Vec<(String, QualityState)> = Vec::new();
    for m in models {
        let slots: Vec<u32> = m.classes.iter().map(|n| classes.slot(n)).collect();
        for (window, state) in &m.windows {
            // A binary model keeps its one curve first; other curves are per class slot.
            let Some(state) = state.remapped(&slots, m.positive.is_none()) else {
                continue;
            };
            match windows.iter_mut().find(|(w, _)| w == window) {
                Some((_, merged)) => merged.merge(&state, exact_cap),
                None => windows.push((window.clone(), state)),
            }
        }
    }
    QualitySnapshot {
        task,
        classes: classes.names,
        positive,
        all_curves: models.iter().all(|m| m.all_curves),
        declared,
        windows,
        join: JoinStats::default(),
        classes_overflowed: 0,
        evaluations: merge_evaluations(models, max_labels),
    }
}

/// The fleet's evaluations of one model version: names and labels by name, the states of each
/// window added up (module doc). `None` when no sidecar has any. The union keeps each sidecar's
/// caps: [`MAX_EVALUATION_NAMES`] names and `max_labels` (`--max-classes`) label values per
/// name; the rest share `__other__`, as on one sidecar (counted in the snapshot's
/// `names_overflowed` / `labels_overflowed`; the fleet task reports them,
/// [`FleetEvaluationsFolded`]).
fn merge_evaluations(models: &[&SharedModel], max_labels: usize) -> Option<EvaluationSnapshot> {
    let mut names = NameTable::new(MAX_EVALUATION_NAMES);
    let mut labels: Vec<NameTable> = Vec::new();
    let mut windows: Vec<(String, EvaluationState)> = Vec::new();
    let (mut names_overflowed, mut labels_overflowed) = (0u64, 0u64);
    let mut any = false;
    for e in models.iter().filter_map(|m| m.evaluations.as_ref()) {
        any = true;
        let name_slots: Vec<u32> = e
            .names
            .iter()
            .map(|n| names.slot(n, || names_overflowed += 1))
            .collect();
        let label_slots: Vec<Vec<u32>> = e
            .labels
            .iter()
            .zip(&name_slots)
            .map(|(values, &name)| {
                let name = name as usize;
                if labels.len() <= name {
                    labels.resize_with(name + 1, || NameTable::new(max_labels));
                }
                values
                    .iter()
                    .map(|v| labels[name].slot(v, || labels_overflowed += 1))
                    .collect()
            })
            .collect();
        for (window, state) in &e.windows {
            let Some(state) = state.remapped(&name_slots, &label_slots) else {
                continue;
            };
            match windows.iter_mut().find(|(w, _)| w == window) {
                Some((_, merged)) => merged.merge(&state, 0),
                None => windows.push((window.clone(), state)),
            }
        }
    }
    let names = names.into_names();
    any.then(|| EvaluationSnapshot {
        labels: (0..names.len())
            .map(|i| {
                labels
                    .get(i)
                    .map_or_else(Vec::new, |c| c.clone().into_names())
            })
            .collect(),
        names,
        windows,
        names_overflowed,
        labels_overflowed,
    })
}

/// The last merge of the fleet's states, on the sidecar that holds the lease.
#[derive(Debug, Clone, Default)]
pub struct FleetView {
    /// Sidecars whose states were merged.
    pub sidecars: usize,
    pub quality: BTreeMap<ModelKey, QualitySnapshot>,
}

/// The exporter's handle on the fleet task.
#[derive(Clone)]
pub struct Fleet {
    instance: String,
    mine: watch::Sender<Option<String>>,
    view: Arc<Mutex<Option<Arc<FleetView>>>>,
}

/// What the fleet task needs.
pub struct FleetSettings {
    pub instance: String,
    /// The metric export interval: states and the lease expire after [`TTL_INTERVALS`] of it.
    pub interval: Duration,
    pub exact_cap: usize,
    /// `--max-classes`: label values per evaluation name in the merge.
    pub max_classes: usize,
    /// Longest wait for one Redis round trip.
    pub timeout: Duration,
    /// Where Redis is, password redacted (for logs).
    pub redacted: String,
}

impl Fleet {
    /// Starts the task that shares this sidecar's states and, while it holds the lease, merges
    /// the fleet's.
    pub fn start(
        connection: watch::Receiver<Option<ConnectionManager>>,
        settings: FleetSettings,
        stats: Arc<SelfStats>,
    ) -> Self {
        let (mine, states) = watch::channel(None);
        let fleet = Self {
            instance: settings.instance.clone(),
            mine,
            view: Arc::default(),
        };
        tokio::spawn(run(connection, states, fleet.view.clone(), settings, stats));
        fleet
    }

    /// Hands over this sidecar's windows (replacing any not yet shared); never waits.
    pub fn publish(&self, quality: &BTreeMap<ModelKey, QualitySnapshot>) {
        let state = SidecarQuality::new(&self.instance, quality);
        match serde_json::to_string(&state) {
            Ok(json) => {
                self.mine.send_replace(Some(json));
            }
            Err(e) => tracing::error!(error = %e, "cannot encode the fleet state"),
        }
    }

    /// The fleet's last merge, if this sidecar holds the lease.
    pub fn view(&self) -> Option<Arc<FleetView>> {
        self.view.lock().expect("fleet view lock").clone()
    }
}

async fn run(
    connection: watch::Receiver<Option<ConnectionManager>>,
    mut states: watch::Receiver<Option<String>>,
    view: Arc<Mutex<Option<Arc<FleetView>>>>,
    settings: FleetSettings,
    stats: Arc<SelfStats>,
) {
    let outage = Outage::default();
    let ttl = settings.interval * TTL_INTERVALS;
    while states.changed().await.is_ok() {
        let Some(json) = states.borrow_and_update().clone() else {
            continue;
        };
        let failed = |error: &str| {
            let event = FleetUpdateFailed {
                redis: &settings.redacted,
                error,
            };
            outage.failed(&event, stats.counter(FleetUpdateFailed::COUNTER));
        };
        let Some(mut redis) = connection.borrow().clone() else {
            failed("Redis is not connected");
            continue;
        };
        let update = tokio::time::timeout(
            settings.timeout * 3,
            update(&mut redis, &settings, &json, ttl),
        )
        .await;
        let merged = match update {
            Ok(Ok(merged)) => {
                outage.recovered(&FleetUpdatesRecovered {
                    redis: &settings.redacted,
                });
                merged
            }
            Ok(Err(e)) => {
                failed(&e.to_string());
                None
            }
            Err(_) => {
                failed("timed out");
                None
            }
        };
        *view.lock().expect("fleet view lock") = merged.map(|states| {
            let quality = merge(&states, settings.exact_cap, settings.max_classes);
            let folded: u64 = quality
                .values()
                .filter_map(|q| q.evaluations.as_ref())
                .map(|e| e.names_overflowed + e.labels_overflowed)
                .sum();
            if folded > 0 {
                stats.emit(&FleetEvaluationsFolded { folded });
            }
            Arc::new(FleetView {
                sidecars: states.len(),
                quality,
            })
        });
    }
}

/// Shares this sidecar's state and renews its membership; if it holds the lease, reads every
/// member's state.
async fn update(
    redis: &mut ConnectionManager,
    settings: &FleetSettings,
    json: &str,
    ttl: Duration,
) -> redis::RedisResult<Option<Vec<SidecarQuality>>> {
    let ttl_ms = ttl.as_millis() as u64;
    let now_ms = crate::clock::unix_nanos(std::time::SystemTime::now()) / 1_000_000;
    let holder: bool = redis::pipe()
        .cmd("SET")
        .arg(state_key(&settings.instance))
        .arg(json)
        .arg("PX")
        .arg(ttl_ms)
        .ignore()
        .cmd("ZADD")
        .arg(MEMBERS)
        .arg(now_ms + ttl_ms)
        .arg(&settings.instance)
        .ignore()
        // Members whose entries expired; the margin of one more TTL tolerates clock skew.
        .cmd("ZREMRANGEBYSCORE")
        .arg(MEMBERS)
        .arg("-inf")
        .arg(now_ms.saturating_sub(ttl_ms))
        .ignore()
        .cmd("EVAL")
        .arg(LEASE_SCRIPT)
        .arg(1)
        .arg(LEASE)
        .arg(&settings.instance)
        .arg(ttl_ms)
        .query_async::<(bool,)>(redis)
        .await?
        .0;
    if !holder {
        return Ok(None);
    }
    let members: Vec<String> = redis::cmd("ZRANGE")
        .arg(MEMBERS)
        .arg(0)
        .arg(-1)
        .query_async(redis)
        .await?;
    let keys: Vec<String> = members.iter().map(|m| state_key(m)).collect();
    let values: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(redis).await?;
    Ok(Some(
        values
            .iter()
            .flatten()
            .filter_map(|json| serde_json::from_str::<SidecarQuality>(json).ok())
            .filter(|s| s.format == FORMAT)
            .collect(),
    ))
}

fn reference_key(key: &ModelKey) -> String {
    format!("{{{}@{}}}:reference", key.model, key.version)
}

/// Whether a profile was captured from live traffic (not loaded from `--profiles-dir`, which an
/// operator chose and which stays in force on its sidecar).
fn captured(profile: &Profile) -> bool {
    profile.source.starts_with("live:")
}

/// Every [`REFERENCE_SYNC`], until `stop`: writes this sidecar's live captures for the fleet
/// (the first capture of a version wins), and puts the fleet's reference of each version into
/// `profiles` unless a profile file is in force for it. Redis failures are counted and logged
/// like the quality updates'; nothing waits on this task.
pub async fn share_references(
    connection: watch::Receiver<Option<ConnectionManager>>,
    profiles: Arc<ProfileRegistry>,
    redacted: String,
    timeout: Duration,
    stats: Arc<SelfStats>,
    stop: tokio_util::sync::CancellationToken,
) {
    let outage = Outage::default();
    // Versions whose profile here is the fleet's.
    let mut agreed: std::collections::HashSet<ModelKey> = Default::default();
    let mut tick = tokio::time::interval(REFERENCE_SYNC);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let Some(mut redis) = connection.borrow().clone() else {
            continue;
        };
        let sync = sync_references(&mut redis, &profiles, &mut agreed);
        let error = match tokio::time::timeout(timeout * 3, sync).await {
            Ok(Ok(())) => {
                outage.recovered(&FleetUpdatesRecovered { redis: &redacted });
                continue;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => "timed out".to_owned(),
        };
        let event = FleetUpdateFailed {
            redis: &redacted,
            error: &error,
        };
        outage.failed(&event, stats.counter(FleetUpdateFailed::COUNTER));
    }
}

async fn sync_references(
    redis: &mut ConnectionManager,
    profiles: &ProfileRegistry,
    agreed: &mut std::collections::HashSet<ModelKey>,
) -> redis::RedisResult<()> {
    let local: HashMap<ModelKey, Arc<Profile>> = profiles
        .all()
        .into_iter()
        .map(|p| (ModelKey::new(&p.model, &p.version), p))
        .collect();
    agreed.retain(|key| local.contains_key(key));
    // Offer this sidecar's captures; SET NX keeps the first.
    for (key, profile) in &local {
        if agreed.contains(key) || !captured(profile) {
            continue;
        }
        let json = serde_json::to_string(&**profile).map_err(|e| {
            redis::RedisError::from((redis::ErrorKind::Client, "profile", e.to_string()))
        })?;
        redis::pipe()
            .cmd("SET")
            .arg(reference_key(key))
            .arg(json)
            .arg("NX")
            .ignore()
            .cmd("SADD")
            .arg(REFERENCES)
            .arg(format!("{}@{}", key.model, key.version))
            .ignore()
            .query_async::<()>(redis)
            .await?;
    }
    // Take the fleet's where this sidecar has no file in force; it may replace a capture of
    // this sidecar's that lost the race.
    let listed: Vec<String> = redis::cmd("SMEMBERS")
        .arg(REFERENCES)
        .query_async(redis)
        .await?;
    for entry in listed {
        let Some((model, version)) = entry.rsplit_once('@') else {
            continue;
        };
        let key = ModelKey::new(model, version);
        if agreed.contains(&key) || local.get(&key).is_some_and(|p| !captured(p)) {
            continue;
        }
        let json: Option<String> = redis::cmd("GET")
            .arg(reference_key(&key))
            .query_async(redis)
            .await?;
        let Some(fleet) = json.and_then(|j| serde_json::from_str::<Profile>(&j).ok()) else {
            continue;
        };
        if fleet.check("the fleet's reference").is_err()
            || (fleet.model.as_str(), fleet.version.as_str()) != (model, version)
        {
            continue;
        }
        if local.get(&key).is_none_or(|p| **p != fleet) {
            tracing::info!(model, version, source = %fleet.source, "reference profile taken from the fleet");
            profiles.put(Arc::new(fleet));
        }
        agreed.insert(key);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quality::state::{CurveLayout, Prediction, Scores, Truth};
    use crate::stats::Average;
    use proptest::prelude::*;

    const NAMES: [&str; 4] = ["cat", "dog", "emu", "fox"];
    const EVALUATION_NAMES: [&str; 4] = ["relevance", "thumbs", "judge", "toxicity"];
    const EVALUATION_LABELS: [&str; 4] = ["up", "down", "pass", "fail"];

    /// `(name, score in eighths, label)` of an evaluation, by index in the tables above.
    type Eval = (usize, Option<i32>, Option<usize>);

    /// A sidecar's quality for a declared 4-class model whose class table numbers the classes
    /// in `order`, after the pairs `(truth, probabilities)` (prediction: the argmax), and its
    /// evaluations (`None`: it has had none), whose names and labels it numbers in `order` too.
    fn sidecar(
        order: &[usize; 4],
        pairs: &[(usize, [f64; 4])],
        cap: usize,
        evaluations: Option<&[Eval]>,
    ) -> SidecarQuality {
        let slot_of = |name: usize| order.iter().position(|&n| n == name).unwrap() as u32;
        // Declared order is NAMES; slots follow `order`.
        let declared: Vec<u32> = (0..4).map(slot_of).collect();
        let layout = CurveLayout {
            positive: None,
            declared_slots: &declared,
            max_curves: 8,
        };
        let mut state = QualityState::default();
        for (t, ps) in pairs {
            let argmax = (0..4).fold(0, |b, i| if ps[i] > ps[b] { i } else { b });
            let prediction = Prediction::Class {
                slot: slot_of(argmax),
                scores: Scores::Probabilities(Box::new(*ps)),
            };
            state.count_prediction(slot_of(argmax));
            let truth = Truth::Class {
                slot: slot_of(*t),
                declared: Some(*t as u32),
            };
            state.observe(&prediction, truth, layout, cap).unwrap();
        }
        SidecarQuality {
            format: FORMAT,
            instance: format!("{order:?}"),
            models: vec![SharedModel {
                model: "m".into(),
                version: "1".into(),
                task: Task::Multiclass,
                classes: order.iter().map(|&n| NAMES[n].to_owned()).collect(),
                positive: None,
                declared: NAMES.iter().map(|n| n.to_string()).collect(),
                all_curves: true,
                windows: vec![("5m".into(), state)],
                evaluations: evaluations.map(|evaluations| {
                    let mut state = EvaluationState::default();
                    for &(name, score, label) in evaluations {
                        state.observe(crate::quality::evaluation::Evaluated {
                            name: slot_of(name),
                            score: score.map(|s| f64::from(s) / 8.0),
                            label: label.map(slot_of),
                        });
                    }
                    let names = |table: [&str; 4]| order.map(|n| table[n].to_owned()).to_vec();
                    SharedEvaluations {
                        names: names(EVALUATION_NAMES),
                        labels: vec![names(EVALUATION_LABELS); 4],
                        windows: vec![("5m".into(), state)],
                    }
                }),
            }],
        }
    }

    /// What a merged evaluation state says, by name and label: (count, scored, score sum,
    /// label counts), names and labels without any left out.
    type ByName = BTreeMap<String, (u64, u64, f64, BTreeMap<String, u64>)>;

    fn by_name(names: &[String], labels: &[Vec<String>], state: &EvaluationState) -> ByName {
        let mut out = ByName::new();
        for (i, stats) in state.names.iter().enumerate() {
            let counted: BTreeMap<String, u64> = stats
                .labels
                .iter()
                .enumerate()
                .filter(|(_, &n)| n > 0)
                .map(|(j, &n)| (labels[i][j].clone(), n))
                .collect();
            if stats.count > 0 || !counted.is_empty() {
                let entry = (stats.count, stats.scored, stats.score_sum, counted);
                out.insert(names[i].clone(), entry);
            }
        }
        out
    }

    fn evaluations() -> impl Strategy<Value = Option<Vec<Eval>>> {
        proptest::option::of(proptest::collection::vec(
            (
                0usize..4,
                proptest::option::of(-80i32..80),
                proptest::option::of(0usize..4),
            ),
            0..40,
        ))
    }

    fn pairs() -> impl Strategy<Value = Vec<(usize, [f64; 4])>> {
        proptest::collection::vec(
            (0usize..4, proptest::array::uniform4(1u32..30)).prop_map(|(t, w)| {
                let s: u32 = w.iter().sum();
                (t, w.map(|x| x as f64 / s as f64))
            }),
            0..60,
        )
    }

    fn orders() -> impl Strategy<Value = [usize; 4]> {
        Just([0usize, 1, 2, 3])
            .prop_shuffle()
            .prop_map(|v| [v[0], v[1], v[2], v[3]])
    }

    proptest! {
        /// Merging per-sidecar states (each with its own class numbering, through their JSON)
        /// equals processing the union of their pairs on one sidecar.
        #[test]
        fn merging_sidecars_equals_processing_the_union(
            parts in proptest::collection::vec((orders(), pairs(), evaluations()), 1..4),
            cap in 0usize..150,
        ) {
            let shared: Vec<SidecarQuality> = parts
                .iter()
                .map(|(order, p, e)| sidecar(order, p, cap, e.as_deref()))
                .map(|s| serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap())
                .collect();
            let merged = merge(&shared, cap, 1024);
            let all: Vec<_> = parts.iter().flat_map(|(_, p, _)| p.clone()).collect();
            let all_evaluations: Vec<Eval> =
                parts.iter().flat_map(|(_, _, e)| e.clone().unwrap_or_default()).collect();
            let one = sidecar(&[0, 1, 2, 3], &all, cap, Some(&all_evaluations));
            let union = &one.models[0].windows[0].1;
            let m = &merged[&ModelKey::new("m", "1")];
            // Evaluations: the merge of the sidecars that had any equals the union (scores are
            // eighths, so their sums are exact in any order).
            match (&m.evaluations, parts.iter().any(|(_, _, e)| e.is_some())) {
                (None, false) => {}
                (Some(e), true) => {
                    let expected = one.models[0].evaluations.as_ref().unwrap();
                    prop_assert_eq!(e.windows.len(), 1);
                    prop_assert_eq!(
                        by_name(&e.names, &e.labels, &e.windows[0].1),
                        by_name(&expected.names, &expected.labels, &expected.windows[0].1)
                    );
                }
                (got, had) => prop_assert!(false, "merged {:?}, sidecars had some: {}", got, had),
            }
            prop_assert_eq!(&m.classes[..], &NAMES.map(String::from)[..]);
            let (_, state) = &m.windows[0];
            let trimmed = |v: &[u64]| v.iter().rposition(|&n| n > 0).map_or(vec![], |i| v[..=i].to_vec());
            prop_assert_eq!(trimmed(&state.predictions), trimmed(&union.predictions));
            for t in 0..4 {
                for p in 0..4 {
                    prop_assert_eq!(state.confusion.count(t, p), union.confusion.count(t, p));
                }
            }
            prop_assert_eq!(state.confusion.accuracy(), union.confusion.accuracy());
            for average in [Average::Micro, Average::Macro, Average::Weighted] {
                prop_assert_eq!(state.confusion.averaged(average), union.confusion.averaged(average));
            }
            prop_assert_eq!(state.probabilistic, union.probabilistic);
            prop_assert!((state.log_loss_sum - union.log_loss_sum).abs() < 1e-9);
            prop_assert!((state.brier_sum - union.brier_sum).abs() < 1e-9);
            for c in 0..4 {
                let (a, b) = (state.curves.get(c), union.curves.get(c));
                let count = |x: Option<&crate::stats::ScoreCurve>| x.map_or(0, |x| x.count());
                prop_assert_eq!(count(a), count(b));
                if let (Some(a), Some(b)) = (a, b) {
                    prop_assert_eq!(a.is_exact(), b.is_exact());
                    for (x, y) in [(a.roc_auc(), b.roc_auc()), (a.average_precision(), b.average_precision())] {
                        prop_assert_eq!(x.is_some(), y.is_some());
                        if let (Some(x), Some(y)) = (x, y) {
                            prop_assert!((x.value - y.value).abs() < 1e-12);
                            prop_assert!((x.error_bound - y.error_bound).abs() < 1e-12);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_state_with_a_slot_outside_its_classes_is_left_out() {
        let mut s = sidecar(&[0, 1, 2, 3], &[(1, [0.1, 0.7, 0.1, 0.1])], 10, None);
        s.models[0].classes.truncate(1);
        let merged = merge(&[s], 10, 1024);
        assert!(merged[&ModelKey::new("m", "1")].windows.is_empty());
    }

    #[test]
    fn states_shared_before_evaluations_were_still_merge() {
        let s = sidecar(&[0, 1, 2, 3], &[(1, [0.1, 0.7, 0.1, 0.1])], 10, None);
        let json = serde_json::to_string(&s).unwrap();
        assert!(!json.contains("evaluations"));
        let merged = merge(&[serde_json::from_str(&json).unwrap()], 10, 1024);
        let m = &merged[&ModelKey::new("m", "1")];
        assert_eq!(m.windows.len(), 1);
        assert!(m.evaluations.is_none());
    }

    /// Each sidecar keeps 16 evaluation names and `--max-classes` labels a name; the fleet's
    /// union keeps the same caps, the rest merged as `__other__` with nothing lost.
    #[test]
    fn the_fleets_evaluation_tables_keep_the_sidecars_caps() {
        let sidecar = |first: usize| {
            let mut s = sidecar(&[0, 1, 2, 3], &[], 10, Some(&[]));
            let mut state = EvaluationState::default();
            for name in 0..MAX_EVALUATION_NAMES as u32 {
                for label in 0..3 {
                    state.observe(crate::quality::evaluation::Evaluated {
                        name,
                        score: Some(0.5),
                        label: Some(label),
                    });
                }
            }
            let e = s.models[0].evaluations.as_mut().unwrap();
            e.names = (first..first + MAX_EVALUATION_NAMES)
                .map(|i| format!("name{i}"))
                .collect();
            e.labels = (first..first + MAX_EVALUATION_NAMES)
                .map(|i| (0..3).map(|j| format!("label{}", i + j)).collect())
                .collect();
            e.windows = vec![("5m".into(), state)];
            s
        };
        // Two sidecars with 16 names each, 8 of them shared; labels cap 4.
        let merged = merge(&[sidecar(0), sidecar(8)], 10, 4);
        let e = merged[&ModelKey::new("m", "1")]
            .evaluations
            .clone()
            .unwrap();
        assert_eq!(e.names.len(), MAX_EVALUATION_NAMES + 1);
        assert_eq!(e.names[MAX_EVALUATION_NAMES], crate::quality::OTHER_CLASS);
        assert_eq!(e.names_overflowed, 8);
        assert!(e.labels.iter().all(|l| l.len() <= 5), "{:?}", e.labels);
        let (_, state) = &e.windows[0];
        let total: u64 = state.names.iter().map(|n| n.count).sum();
        let labelled: u64 = state.names.iter().map(|n| n.labelled()).sum();
        assert_eq!((total, labelled), (2 * 16 * 3, 2 * 16 * 3));
        assert_eq!(state.names[MAX_EVALUATION_NAMES].count, 8 * 3);
    }

    #[test]
    fn corrupt_curves_do_not_decode() {
        let bad = r#"{"positive":[[9999,1]],"negative":[],"exact":null}"#;
        assert!(serde_json::from_str::<crate::stats::ScoreCurve>(bad).is_err());
        let bad = r#"{"n":2,"counts":[1,2,3]}"#;
        assert!(serde_json::from_str::<crate::stats::ConfusionMatrix>(bad).is_err());
    }

    /// The size of one window's shared state (BENCHMARKS.md, "Fleet"): held exact pairs cost
    /// about 26 bytes each in JSON, so the largest states are those just under the exact-pair
    /// budget; past it only the non-empty score bins are sent.
    #[test]
    fn shared_state_sizes_stay_small_past_the_exact_budget() {
        let mut sizes = Vec::new();
        for (classes, pairs) in [
            (2usize, 100usize),
            (2, 2000),
            (2, 100_000),
            (10, 2000),
            (10, 100_000),
        ] {
            let declared: Vec<u32> = (0..classes as u32).collect();
            let layout = CurveLayout {
                positive: (classes == 2).then_some(1),
                declared_slots: &declared,
                max_curves: 32,
            };
            let mut state = QualityState::default();
            let mut x = 12345u64;
            for _ in 0..pairs {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let t = (x >> 33) as usize % classes;
                let mut ps: Vec<f64> = (0..classes)
                    .map(|i| ((x >> (i * 3)) % 97 + 1) as f64)
                    .collect();
                let sum: f64 = ps.iter().sum();
                ps.iter_mut().for_each(|p| *p /= sum);
                let argmax = (0..classes).fold(0, |b, i| if ps[i] > ps[b] { i } else { b });
                let scores = match classes {
                    2 => Scores::Two([ps[0], ps[1]]),
                    _ => Scores::Probabilities(ps.into()),
                };
                let prediction = Prediction::Class {
                    slot: argmax as u32,
                    scores,
                };
                let truth = Truth::Class {
                    slot: t as u32,
                    declared: Some(t as u32),
                };
                state.observe(&prediction, truth, layout, 2000).unwrap();
            }
            let bytes = serde_json::to_string(&state).unwrap().len();
            eprintln!("{classes} classes, {pairs} pairs: {bytes} bytes per window");
            sizes.push(bytes);
        }
        // Past the budget: bins only (2 classes: one curve; 10 classes: ten).
        assert!(sizes[2] < 8_000 && sizes[4] < 60_000, "{sizes:?}");
        // Under it the pairs themselves are the state.
        assert!(sizes[1] > 2000 * 20, "{sizes:?}");
    }
}
