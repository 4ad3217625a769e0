//! SetForwardingPipelineConfig and GetForwardingPipelineConfig.
//!
//! The data plane implements one fixed pipeline, so a pushed P4Info is
//! accepted only when it is semantically equal to the embedded talaria
//! P4Info: the same tables, match fields, actions, parameters and counters
//! with the same ids, names, widths, match types, scopes and sizes.
//! Documentation, annotations, aliases, source locations and type names may
//! differ (they do after a round trip through other tools). The device
//! config bytes (bmv2 JSON, say) are stored and returned, never interpreted.
//!
//! The committed config is persisted in the state directory, so that a
//! restarted agent whose pinned maps survived still counts as configured.

use std::{
    fmt::Debug,
    path::{Path, PathBuf},
};

use prost::Message;
use talaria_p4rt::p4::{
    config::v1::{P4Info, Preamble},
    v1::{
        get_forwarding_pipeline_config_request::ResponseType,
        set_forwarding_pipeline_config_request::Action as SetAction, ForwardingPipelineConfig,
    },
};
use tonic::Status;

/// File name of the persisted pipeline in the state directory.
pub const STATE_FILE: &str = "pipeline.binpb";

/// Why the pipeline state could not be persisted or loaded.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Reading or writing the state file failed.
    #[error("pipeline state file {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The state file does not hold a ForwardingPipelineConfig.
    #[error("pipeline state file {path} is corrupt")]
    Decode {
        path: PathBuf,
        #[source]
        source: prost::DecodeError,
    },
}

/// The pipeline configs the server holds.
#[derive(Debug, Default)]
pub struct PipelineState {
    /// The committed config: Write and Read work only once it is set.
    pub committed: Option<ForwardingPipelineConfig>,
    /// A config saved by VERIFY_AND_SAVE and not yet committed.
    pub saved: Option<ForwardingPipelineConfig>,
}

/// What a SetForwardingPipelineConfig asks the server to do to the tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Nothing changes (VERIFY, VERIFY_AND_SAVE).
    None,
    /// A new pipeline is committed and the forwarding state is reset
    /// (VERIFY_AND_COMMIT), as bmv2 does when it loads a config.
    CommitAndClear,
    /// A pipeline is committed and existing entries are kept (COMMIT of a
    /// saved config, RECONCILE_AND_COMMIT: the pipeline never changes, so
    /// every entry stays valid).
    CommitAndKeep,
}

/// Strips what may legitimately differ between two P4Infos of the same
/// program and sorts every list by id.
pub fn normalize(p: &P4Info) -> P4Info {
    fn preamble(p: &mut Option<Preamble>) {
        if let Some(p) = p {
            p.alias.clear();
            p.annotations.clear();
            p.annotation_locations.clear();
            p.doc = None;
            p.structured_annotations.clear();
        }
    }
    fn id(p: &Option<Preamble>) -> u32 {
        p.as_ref().map_or(0, |p| p.id)
    }
    let mut p = p.clone();
    p.pkg_info = p.pkg_info.map(|k| talaria_p4rt::p4::config::v1::PkgInfo {
        arch: k.arch,
        ..Default::default()
    });
    p.type_info = None;
    for t in &mut p.tables {
        preamble(&mut t.preamble);
        for f in &mut t.match_fields {
            f.annotations.clear();
            f.annotation_locations.clear();
            f.doc = None;
            f.type_name = None;
            f.structured_annotations.clear();
        }
        t.match_fields.sort_by_key(|f| f.id);
        for r in &mut t.action_refs {
            r.annotations.clear();
            r.annotation_locations.clear();
            r.structured_annotations.clear();
        }
        t.action_refs.sort_by_key(|r| r.id);
        t.direct_resource_ids.sort_unstable();
    }
    p.tables.sort_by_key(|t| id(&t.preamble));
    for a in &mut p.actions {
        preamble(&mut a.preamble);
        for q in &mut a.params {
            q.annotations.clear();
            q.annotation_locations.clear();
            q.doc = None;
            q.type_name = None;
            q.structured_annotations.clear();
        }
        a.params.sort_by_key(|q| q.id);
    }
    p.actions.sort_by_key(|a| id(&a.preamble));
    for c in &mut p.counters {
        preamble(&mut c.preamble);
        c.index_type_name = None;
    }
    p.counters.sort_by_key(|c| id(&c.preamble));
    for c in &mut p.direct_counters {
        preamble(&mut c.preamble);
    }
    p.direct_counters.sort_by_key(|c| id(&c.preamble));
    p
}

/// Compares two lists of P4Info objects by id and describes the first
/// difference.
fn compare<T: PartialEq + Debug>(
    kind: &str,
    want: &[T],
    got: &[T],
    key: impl Fn(&T) -> (u32, String),
) -> Result<(), String> {
    for w in want {
        let (id, name) = key(w);
        match got.iter().find(|g| key(g).0 == id) {
            None => return Err(format!("{kind} {name} (id {id}) is missing")),
            Some(g) if g != w => {
                return Err(format!(
                    "{kind} {name} (id {id}) differs from the talaria pipeline"
                ))
            }
            Some(_) => {}
        }
    }
    for g in got {
        let (id, name) = key(g);
        if !want.iter().any(|w| key(w).0 == id) {
            return Err(format!("unexpected {kind} {name} (id {id})"));
        }
    }
    Ok(())
}

fn named(p: &Option<Preamble>) -> (u32, String) {
    p.as_ref()
        .map_or((0, String::new()), |p| (p.id, p.name.clone()))
}

/// Checks that `got` describes the talaria pipeline `want`. The error
/// names the first difference.
pub fn check_p4info(want: &P4Info, got: &P4Info) -> Result<(), String> {
    let (w, g) = (normalize(want), normalize(got));
    let arch = |p: &P4Info| {
        p.pkg_info
            .as_ref()
            .map(|k| k.arch.clone())
            .unwrap_or_default()
    };
    if arch(&g) != arch(&w) && !arch(&g).is_empty() {
        return Err(format!(
            "architecture {:?}, expected {:?}",
            arch(&g),
            arch(&w)
        ));
    }
    compare("table", &w.tables, &g.tables, |t| named(&t.preamble))?;
    compare("action", &w.actions, &g.actions, |a| named(&a.preamble))?;
    compare("counter", &w.counters, &g.counters, |c| named(&c.preamble))?;
    compare(
        "direct counter",
        &w.direct_counters,
        &g.direct_counters,
        |c| named(&c.preamble),
    )?;
    let extra = [
        ("action profile", g.action_profiles.len()),
        ("meter", g.meters.len()),
        ("direct meter", g.direct_meters.len()),
        (
            "controller packet metadata",
            g.controller_packet_metadata.len(),
        ),
        ("value set", g.value_sets.len()),
        ("register", g.registers.len()),
        ("digest", g.digests.len()),
        ("extern", g.externs.len()),
    ];
    for (kind, n) in extra {
        if n > 0 {
            return Err(format!(
                "unexpected {kind} objects ({n}): the talaria pipeline has none"
            ));
        }
    }
    Ok(())
}

impl PipelineState {
    /// Applies a SetForwardingPipelineConfig `action` with `config` (already
    /// checked against the talaria P4Info when present), and says what it
    /// does to the tables.
    pub fn set(
        &mut self,
        action: SetAction,
        config: Option<ForwardingPipelineConfig>,
    ) -> Result<Effect, Status> {
        match action {
            SetAction::Unspecified => Err(Status::invalid_argument("action is unspecified")),
            SetAction::Verify => Ok(Effect::None),
            SetAction::VerifyAndSave => {
                self.saved = config;
                Ok(Effect::None)
            }
            SetAction::VerifyAndCommit => {
                self.committed = config;
                self.saved = None;
                Ok(Effect::CommitAndClear)
            }
            SetAction::Commit => {
                let config = match config {
                    Some(c) => c,
                    None => self.saved.take().ok_or_else(|| {
                        Status::failed_precondition(
                            "COMMIT without a config saved by VERIFY_AND_SAVE",
                        )
                    })?,
                };
                self.committed = Some(config);
                Ok(Effect::CommitAndKeep)
            }
            SetAction::ReconcileAndCommit => {
                self.committed = config;
                self.saved = None;
                Ok(Effect::CommitAndKeep)
            }
        }
    }

    /// The committed config trimmed to what `response_type` asks for.
    pub fn get(&self, response_type: ResponseType) -> ForwardingPipelineConfig {
        let Some(c) = &self.committed else {
            // No pipeline: an empty config, as PI/bmv2 answer.
            return ForwardingPipelineConfig::default();
        };
        match response_type {
            ResponseType::All => c.clone(),
            ResponseType::CookieOnly => ForwardingPipelineConfig {
                cookie: c.cookie,
                ..Default::default()
            },
            ResponseType::P4infoAndCookie => ForwardingPipelineConfig {
                p4info: c.p4info.clone(),
                cookie: c.cookie,
                ..Default::default()
            },
            ResponseType::DeviceConfigAndCookie => ForwardingPipelineConfig {
                p4_device_config: c.p4_device_config.clone(),
                cookie: c.cookie,
                ..Default::default()
            },
        }
    }
}

/// Writes the committed config to `dir/`[`STATE_FILE`] (atomically), or
/// removes the file when there is none.
pub fn persist(dir: &Path, config: Option<&ForwardingPipelineConfig>) -> Result<(), PipelineError> {
    let path = dir.join(STATE_FILE);
    let io = |source| PipelineError::Io {
        path: path.clone(),
        source,
    };
    match config {
        Some(c) => {
            std::fs::create_dir_all(dir).map_err(io)?;
            let tmp = dir.join(format!(".{STATE_FILE}.tmp"));
            std::fs::write(&tmp, c.encode_to_vec()).map_err(io)?;
            std::fs::rename(&tmp, &path).map_err(io)
        }
        None => match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(e)),
            _ => Ok(()),
        },
    }
}

/// Loads the config persisted in `dir`, if any.
pub fn load(dir: &Path) -> Result<Option<ForwardingPipelineConfig>, PipelineError> {
    let path = dir.join(STATE_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => ForwardingPipelineConfig::decode(bytes.as_slice())
            .map(Some)
            .map_err(|source| PipelineError::Decode { path, source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(PipelineError::Io { path, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn talaria() -> P4Info {
        talaria_tables::p4info()
    }

    #[test]
    fn equal_up_to_docs_annotations_and_order() {
        let want = talaria();
        let mut got = P4Info::decode(want.encode_to_vec().as_slice()).unwrap();
        got.tables.reverse();
        got.actions[0].preamble.as_mut().unwrap().alias = "other".into();
        got.tables[0]
            .preamble
            .as_mut()
            .unwrap()
            .annotations
            .push("@foo".into());
        got.pkg_info.as_mut().unwrap().name = "talaria.p4".into();
        check_p4info(&want, &got).unwrap();
    }

    #[test]
    fn differences_are_named() {
        let want = talaria();
        let mut got = want.clone();
        got.tables[2].match_fields[0].bitwidth = 31;
        let err = check_p4info(&want, &got).unwrap_err();
        assert!(err.contains("TalariaIngress.service_v4"), "{err}");
        let mut got = want.clone();
        got.actions.pop();
        assert!(check_p4info(&want, &got).unwrap_err().contains("missing"));
        let mut got = want.clone();
        got.registers.push(Default::default());
        assert!(check_p4info(&want, &got).unwrap_err().contains("register"));
        assert!(check_p4info(&want, &P4Info::default()).is_err());
    }

    #[test]
    fn state_round_trips_through_the_state_dir() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        let c = ForwardingPipelineConfig {
            p4info: Some(talaria()),
            p4_device_config: b"{}".to_vec(),
            cookie: Some(talaria_p4rt::p4::v1::forwarding_pipeline_config::Cookie { cookie: 42 }),
        };
        persist(dir.path(), Some(&c)).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(c));
        persist(dir.path(), None).unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
    }
}
