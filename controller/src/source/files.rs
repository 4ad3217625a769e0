//! YAML manifests in a directory: every `*.yaml`/`*.yml` file (recursively),
//! multi-document, `kind: List` unwrapped. Polled for changes (mtime and
//! size of every file), so no inotify is needed. Documents that do not parse,
//! or kinds the controller does not use, are skipped with a log line and
//! counted; they never stop the rest of the directory from loading.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use serde::Deserialize;
use tracing::{debug, info, warn};

use super::memory::{MemorySource, Objects};

/// Errors reading the manifest directory as a whole.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// The directory could not be listed.
    #[error("cannot read manifest directory {path}")]
    Dir {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// A document that was skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadDocument {
    /// File.
    pub file: PathBuf,
    /// 0-based document index in the file.
    pub index: usize,
    /// Why.
    pub reason: String,
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), FilesError> {
    let rd = std::fs::read_dir(dir).map_err(|source| FilesError::Dir {
        path: dir.into(),
        source,
    })?;
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out)?;
        } else if matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
            out.push(p);
        }
    }
    Ok(())
}

/// (path, mtime, len) of every manifest: changes when any file does.
pub fn fingerprint(dir: &Path) -> Result<Vec<(PathBuf, Option<SystemTime>, u64)>, FilesError> {
    let mut v = Vec::new();
    files(dir, &mut v)?;
    v.sort();
    Ok(v.into_iter()
        .map(|p| {
            let md = std::fs::metadata(&p).ok();
            let mt = md.as_ref().and_then(|m| m.modified().ok());
            let len = md.map(|m| m.len()).unwrap_or(0);
            (p, mt, len)
        })
        .collect())
}

fn add_value(
    o: &mut Objects,
    v: serde_yaml::Value,
    file: &Path,
    index: usize,
    bad: &mut Vec<BadDocument>,
) {
    let kind = v
        .get("kind")
        .and_then(|k| k.as_str())
        .unwrap_or("")
        .to_string();
    let mut fail = |reason: String| {
        bad.push(BadDocument {
            file: file.into(),
            index,
            reason,
        })
    };
    match kind.as_str() {
        "List" | "ServiceList" | "EndpointSliceList" | "NodeList" => {
            if let Some(items) = v.get("items").and_then(|i| i.as_sequence()) {
                for it in items.clone() {
                    add_value(o, it, file, index, bad);
                }
            }
        }
        "Service" => match serde_yaml::from_value(v) {
            Ok(s) => o.put_service(s),
            Err(e) => fail(format!("Service: {e}")),
        },
        "EndpointSlice" => match serde_yaml::from_value(v) {
            Ok(s) => o.put_slice(s),
            Err(e) => fail(format!("EndpointSlice: {e}")),
        },
        "Node" => match serde_yaml::from_value(v) {
            Ok(n) => o.put_node(n),
            Err(e) => fail(format!("Node: {e}")),
        },
        "" => fail("no kind".into()),
        other => debug!(file = %file.display(), index, kind = other, "kind not used, ignored"),
    }
}

/// Loads every manifest under `dir`.
pub fn load_dir(dir: &Path) -> Result<(Objects, Vec<BadDocument>), FilesError> {
    let mut paths = Vec::new();
    files(dir, &mut paths)?;
    paths.sort();
    let mut o = Objects::default();
    let mut bad = Vec::new();
    for p in paths {
        let text = match std::fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) => {
                bad.push(BadDocument {
                    file: p,
                    index: 0,
                    reason: e.to_string(),
                });
                continue;
            }
        };
        for (i, doc) in serde_yaml::Deserializer::from_str(&text).enumerate() {
            match serde_yaml::Value::deserialize(doc) {
                Ok(serde_yaml::Value::Null) => {}
                Ok(v) => add_value(&mut o, v, &p, i, &mut bad),
                Err(e) => {
                    bad.push(BadDocument {
                        file: p.clone(),
                        index: i,
                        reason: format!("YAML: {e}"),
                    });
                    // The YAML stream cannot be resumed after a syntax error.
                    break;
                }
            }
        }
    }
    Ok((o, bad))
}

/// Loads `dir` into `src` now, then every `poll` when files change. Returns
/// the number of bad documents of each load through `on_bad`.
pub async fn watch_dir(
    dir: PathBuf,
    poll: Duration,
    src: Arc<MemorySource>,
    on_bad: impl Fn(&[BadDocument]) + Send + 'static,
) {
    let mut last = None;
    loop {
        match fingerprint(&dir) {
            Ok(fp) if Some(&fp) != last.as_ref() => match load_dir(&dir) {
                Ok((objs, bad)) => {
                    for b in &bad {
                        warn!(file = %b.file.display(), doc = b.index, "manifest skipped: {}", b.reason);
                    }
                    on_bad(&bad);
                    let (s, e, n) = (objs.services.len(), objs.slices.len(), objs.nodes.len());
                    if src.replace(objs) {
                        info!(
                            services = s,
                            endpointslices = e,
                            nodes = n,
                            "manifests loaded"
                        );
                    }
                    last = Some(fp);
                }
                Err(e) => warn!(error = %e, "manifest load failed"),
            },
            Ok(_) => {}
            Err(e) => warn!(error = %e, "manifest directory unreadable"),
        }
        tokio::time::sleep(poll).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::Source;

    #[test]
    fn loads_multi_doc_lists_and_skips_bad() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("a.yaml"),
            format!(
                "{}\n---\nkind: Service\nmetadata: {{name: x, namespace: y}}\nspec: {{ports: 5}}\n---\nkind: ConfigMap\nmetadata: {{name: c}}\n",
                crate::model::tests::NODES
            ),
        )
        .unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(
            d.path().join("sub/b.yml"),
            "kind: List\nitems:\n- kind: Service\n  apiVersion: v1\n  metadata: {name: s, namespace: ns}\n  spec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}\n",
        )
        .unwrap();
        std::fs::write(d.path().join("c.yaml"), "kind: Service\n  bad: [\n").unwrap();
        std::fs::write(d.path().join("ignored.txt"), "kind: Service").unwrap();
        let (o, bad) = load_dir(d.path()).unwrap();
        assert_eq!(o.nodes.len(), 2);
        assert_eq!(o.services.len(), 1);
        assert_eq!(bad.len(), 2, "{bad:?}");
        let src = MemorySource::new();
        assert!(src.replace(o.clone()));
        assert!(!src.replace(o));
        assert_eq!(src.model().ports.len(), 1);
    }

    #[tokio::test]
    async fn watch_picks_up_changes() {
        let d = tempfile::tempdir().unwrap();
        let src = MemorySource::new();
        let w = tokio::spawn(watch_dir(
            d.path().into(),
            Duration::from_millis(20),
            src.clone(),
            |_| {},
        ));
        std::fs::write(
            d.path().join("s.yaml"),
            "kind: Service\napiVersion: v1\nmetadata: {name: s, namespace: ns}\nspec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}\n",
        )
        .unwrap();
        tokio::time::timeout(Duration::from_secs(5), src.changed.notified())
            .await
            .unwrap();
        assert_eq!(src.model().services.len(), 1);
        w.abort();
    }
}
