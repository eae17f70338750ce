//! The state directory (`--state-dir`): what a sidecar restarted after a crash, an OOM kill or
//! `kill -9` takes back. Two kinds of state are kept, each as one file per model version:
//! - `declarations/<key>.pb`: the last `ModelDeclaration` of each version (protobuf, as
//!   received), removed when the declaration registry evicts it;
//! - `references/<key>.profile.json`: each reference profile captured live (the first
//!   `--reference-records` records, or `CaptureReference`), in the format of
//!   `inferscope profile` and `--profiles-dir`, removed when its version expires.
//!
//! `<key>` is a 64-bit FNV-1a hash of model and version (names may hold any character; the file
//! itself names its version). Files are written whole to a temporary name and renamed, so a
//! crash leaves the old file or the new one, never half of one.
//!
//! Writes happen on one thread of their own, fed by a bounded queue that the shards and streams
//! never wait on: a change that finds the queue full is dropped and counted
//! (`inferscope.state.writes.failed`), as is a write that fails (a full or read-only volume).
//! Pending predictions and windows are not kept here (README: what survives a restart).

use crate::{
    config::Config,
    drift::{
        profile::Profile,
        registry::{ProfileDirectory, ProfileRegistry},
    },
    events::StateWriteFailed,
    models::{Declaration, DeclarationRegistry, ModelKey},
    pb,
    self_metrics::SelfStats,
};
use prost::Message;
use std::{
    path::{Path, PathBuf},
    sync::{mpsc, Arc},
    time::SystemTime,
};
use tokio_util::sync::CancellationToken;

/// Changes waiting for the writer thread; declarations and captures are rare (per model version,
/// not per record), so a full queue means the volume has stopped answering.
const QUEUE: usize = 1024;

/// One change to the directory.
enum Change {
    Declaration(pb::ModelDeclaration),
    ForgetDeclaration(ModelKey),
    Reference(Arc<Profile>),
    ForgetReference(ModelKey),
}

/// A handle that queues changes for the writer thread; cheap to clone.
#[derive(Clone, Debug)]
pub struct StateStore {
    queue: mpsc::SyncSender<Change>,
    stats: Arc<SelfStats>,
}

/// What a state directory held at start.
#[derive(Debug, Default)]
pub struct Restored {
    pub declarations: Vec<pb::ModelDeclaration>,
    /// Captured profiles, each with the time its file was written.
    pub references: Vec<(Profile, SystemTime)>,
}

impl std::fmt::Debug for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Change::Declaration(_) => "Declaration",
            Change::ForgetDeclaration(_) => "ForgetDeclaration",
            Change::Reference(_) => "Reference",
            Change::ForgetReference(_) => "ForgetReference",
        })
    }
}

/// 64-bit FNV-1a of model and version (a zero byte between them): a stable file name for any
/// names. Written here because the standard library's hashers are not stable across releases
/// and ten lines do not warrant a crate.
fn file_key(model: &str, version: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in model.bytes().chain([0]).chain(version.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

fn declaration_path(root: &Path, model: &str, version: &str) -> PathBuf {
    root.join("declarations")
        .join(format!("{}.pb", file_key(model, version)))
}

fn reference_path(root: &Path, model: &str, version: &str) -> PathBuf {
    root.join("references")
        .join(format!("{}.profile.json", file_key(model, version)))
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename.
fn write_whole(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

fn remove(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

impl StateStore {
    /// Opens (creating if needed) the directory, reads what it holds and starts the writer
    /// thread. Unreadable files are logged and skipped; an unusable directory is an error.
    pub fn open(root: &Path, stats: Arc<SelfStats>) -> std::io::Result<(Self, Restored)> {
        for sub in ["declarations", "references"] {
            std::fs::create_dir_all(root.join(sub))?;
        }
        let restored = Restored {
            declarations: read_declarations(&root.join("declarations"))?,
            references: read_references(&root.join("references"))?,
        };
        let (queue, changes) = mpsc::sync_channel(QUEUE);
        let writer_root = root.to_owned();
        let writer_stats = stats.clone();
        std::thread::Builder::new()
            .name("inferscope-state".into())
            .spawn(move || {
                for change in changes {
                    if let Err(error) = apply(&writer_root, &change) {
                        writer_stats.emit(&StateWriteFailed {
                            dir: &writer_root,
                            error: &error,
                        });
                    }
                }
            })?;
        Ok((Self { queue, stats }, restored))
    }

    fn send(&self, change: Change) {
        if let Err(mpsc::TrySendError::Full(_)) = self.queue.try_send(change) {
            let error = std::io::Error::other("the state writer's queue is full");
            self.stats.emit(&StateWriteFailed {
                dir: Path::new("(queue)"),
                error: &error,
            });
        }
    }

    pub fn save_declaration(&self, declaration: &pb::ModelDeclaration) {
        self.send(Change::Declaration(declaration.clone()));
    }

    pub fn forget_declaration(&self, key: &ModelKey) {
        self.send(Change::ForgetDeclaration(key.clone()));
    }

    pub fn save_reference(&self, profile: Arc<Profile>) {
        self.send(Change::Reference(profile));
    }

    pub fn forget_reference(&self, key: &ModelKey) {
        self.send(Change::ForgetReference(key.clone()));
    }
}

fn apply(root: &Path, change: &Change) -> std::io::Result<()> {
    match change {
        Change::Declaration(d) => write_whole(
            &declaration_path(root, &d.model, &d.version),
            &d.encode_to_vec(),
        ),
        Change::ForgetDeclaration(key) => remove(&declaration_path(root, &key.model, &key.version)),
        Change::Reference(profile) => {
            let json = serde_json::to_vec(profile.as_ref()).map_err(std::io::Error::other)?;
            write_whole(
                &reference_path(root, &profile.model, &profile.version),
                &json,
            )
        }
        Change::ForgetReference(key) => remove(&reference_path(root, &key.model, &key.version)),
    }
}

/// The files of `dir` with extension `ext`, in name order (so that a start is reproducible).
fn files(dir: &Path, ext: &str) -> std::io::Result<Vec<PathBuf>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_str().is_some_and(|s| s.ends_with(ext)))
        .collect();
    paths.sort();
    Ok(paths)
}

fn read_declarations(dir: &Path) -> std::io::Result<Vec<pb::ModelDeclaration>> {
    let mut out = Vec::new();
    for path in files(dir, ".pb")? {
        match std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| pb::ModelDeclaration::decode(b.as_slice()).map_err(|e| e.to_string()))
        {
            Ok(d) => out.push(d),
            Err(error) => {
                tracing::warn!(file = %path.display(), %error, "saved declaration skipped")
            }
        }
    }
    Ok(out)
}

fn read_references(dir: &Path) -> std::io::Result<Vec<(Profile, SystemTime)>> {
    let mut out = Vec::new();
    for path in files(dir, ".profile.json")? {
        let written = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        match Profile::load(&path) {
            Ok(p) => out.push((p, written)),
            Err(error) => tracing::warn!(%error, "saved reference profile skipped"),
        }
    }
    Ok(out)
}

/// What the streams and the shards share about model versions: their declarations, their
/// reference profiles, and where both are saved to survive a restart.
#[derive(Debug, Clone)]
pub struct Registries {
    pub declarations: Arc<DeclarationRegistry>,
    pub profiles: Arc<ProfileRegistry>,
    pub state: Option<StateStore>,
    /// The fleet's shared store of predictions waiting for labels (`--label-store`).
    pub label_store: Option<crate::label_store::LabelStore>,
}

impl Registries {
    /// Empty registries and no state directory.
    pub fn new(config: &Config) -> Self {
        Self {
            declarations: Arc::new(DeclarationRegistry::new(config.max_models)),
            profiles: Arc::new(ProfileRegistry::new()),
            state: None,
            label_store: None,
        }
    }

    /// Fills the registries from `--state-dir` and `--profiles-dir` (watched from now on until
    /// `stop`). A profile file and a saved capture for the same version: the one written last
    /// wins, as it did before the restart.
    /// An error is `--state-dir`'s: it cannot be created or read.
    pub fn load(
        config: &Config,
        stats: &Arc<SelfStats>,
        stop: &CancellationToken,
    ) -> std::io::Result<Self> {
        let mut registries = Self::new(config);
        let mut restored = Restored::default();
        if let Some(dir) = &config.state_dir {
            let (store, saved) = StateStore::open(dir, stats.clone())?;
            registries.state = Some(store);
            restored = saved;
        }
        let mut kept = 0;
        for decl in &restored.declarations {
            match crate::validation::check_declaration(decl, &config.limits) {
                Ok(()) => {
                    let key = ModelKey::new(&decl.model, &decl.version);
                    registries.declarations.put(key, Declaration::from_pb(decl));
                    kept += 1;
                }
                Err(error) => tracing::warn!(
                    model = %decl.model, version = %decl.version, %error,
                    "saved declaration no longer valid under these settings; skipped"
                ),
            }
        }
        let directory = config.profiles_dir.as_ref().map(|dir| {
            let mut directory = ProfileDirectory::new(dir.clone());
            directory.sync(&registries.profiles);
            directory
        });
        let mut references = 0;
        for (profile, written) in restored.references {
            let key = ModelKey::new(&profile.model, &profile.version);
            let file = directory.as_ref().and_then(|d| d.loaded_at(&key));
            if file.is_some_and(|file| file > written) {
                continue; // the profile file replaced the capture before the restart
            }
            registries.profiles.put(Arc::new(profile));
            references += 1;
        }
        if let Some(dir) = &config.state_dir {
            tracing::info!(
                dir = %dir.display(),
                declarations = kept,
                reference_profiles = references,
                "state restored"
            );
        }
        if let Some(directory) = directory {
            tokio::spawn(crate::drift::registry::watch(
                directory,
                registries.profiles.clone(),
                config.profiles_poll,
                stop.clone(),
            ));
        }
        Ok(registries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("inferscope-state-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    /// Waits until the writer thread has applied what was queued (it is the only reader).
    fn settle(root: &Path, expect: impl Fn(&Restored) -> bool) -> Restored {
        for _ in 0..500 {
            let restored = Restored {
                declarations: read_declarations(&root.join("declarations")).unwrap(),
                references: read_references(&root.join("references")).unwrap(),
            };
            if expect(&restored) {
                return restored;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("the state directory never reached the expected contents");
    }

    #[test]
    fn declarations_are_saved_replaced_and_forgotten() {
        let root = dir("declarations");
        let (store, restored) = StateStore::open(&root, Arc::default()).unwrap();
        assert!(restored.declarations.is_empty());
        let mut d = pb::ModelDeclaration {
            model: "fraud/ü".into(),
            version: "1".into(),
            class_names: vec!["no".into(), "yes".into()],
            ..Default::default()
        };
        store.save_declaration(&d);
        d.class_names.push("maybe".into());
        store.save_declaration(&d);
        let other = pb::ModelDeclaration {
            model: "fraud/ü".into(),
            version: "2".into(),
            ..Default::default()
        };
        store.save_declaration(&other);
        let got = settle(&root, |r| r.declarations.len() == 2);
        assert!(got.declarations.contains(&d) && got.declarations.contains(&other));
        store.forget_declaration(&ModelKey::new("fraud/ü", "2"));
        let got = settle(&root, |r| r.declarations.len() == 1);
        assert_eq!(got.declarations, vec![d]);
        // A new store on the same directory reads it back.
        let (_, restored) = StateStore::open(&root, Arc::default()).unwrap();
        assert_eq!(restored.declarations.len(), 1);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_broken_file_is_skipped_not_fatal() {
        let root = dir("broken");
        std::fs::create_dir_all(root.join("declarations")).unwrap();
        std::fs::create_dir_all(root.join("references")).unwrap();
        std::fs::write(root.join("declarations/x.pb"), [0xff, 0xff, 0xff]).unwrap();
        std::fs::write(root.join("references/x.profile.json"), "{").unwrap();
        let (_, restored) = StateStore::open(&root, Arc::default()).unwrap();
        assert!(restored.declarations.is_empty() && restored.references.is_empty());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn file_keys_are_stable_and_separate_model_from_version() {
        assert_eq!(file_key("", "").len(), 16);
        assert_ne!(file_key("ab", "c"), file_key("a", "bc"));
        assert_eq!(file_key("m", "1"), file_key("m", "1"));
    }
}
