//! YAML manifests in a directory: every `*.yaml`/`*.yml` file (recursively),
//! multi-document, `kind: List` unwrapped. Polled for changes (mtime and
//! size of every file), so no inotify is needed.
//!
//! Bad input loses nothing:
//! - a document that does not decode, or a kind the controller does not use,
//!   is skipped with a log line and counted; the rest of the file loads;
//! - a file that cannot be read, or whose YAML stream breaks, keeps its last
//!   good contents until it is fixed;
//! - a change is read only once the directory looks the same on two polls in
//!   a row, so a file caught half-written (truncated, then filled) is never
//!   taken for a file whose objects were deleted. Writers should still
//!   rename into place; the settle rule covers the editors and tools that
//!   do not.

use std::{
    collections::BTreeMap,
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

/// A document that was skipped, or a file held at its last good contents.
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

/// What a poll compares: a file's mtime and size.
type Stamp = (Option<SystemTime>, u64);

/// Every manifest's stamp, by path: it changes when any file does.
fn fingerprint(dir: &Path) -> Result<BTreeMap<PathBuf, Stamp>, FilesError> {
    let mut v = Vec::new();
    files(dir, &mut v)?;
    Ok(v.into_iter()
        .map(|p| {
            let md = std::fs::metadata(&p).ok();
            let mt = md.as_ref().and_then(|m| m.modified().ok());
            let len = md.map(|m| m.len()).unwrap_or(0);
            (p, (mt, len))
        })
        .collect())
}

fn add_value(
    o: &mut Objects,
    v: &serde_yaml::Value,
    file: &Path,
    index: usize,
    bad: &mut Vec<BadDocument>,
) {
    let kind = v.get("kind").and_then(|k| k.as_str()).unwrap_or("");
    let mut fail = |reason: String| {
        bad.push(BadDocument {
            file: file.into(),
            index,
            reason,
        })
    };
    match kind {
        "List" | "ServiceList" | "EndpointSliceList" | "NodeList" | "ServiceCIDRList" => {
            if let Some(items) = v.get("items").and_then(|i| i.as_sequence()) {
                for it in items {
                    add_value(o, it, file, index, bad);
                }
            }
        }
        "Service" => match serde_yaml::from_value(v.clone()) {
            Ok(s) => o.put_service(s),
            Err(e) => fail(format!("Service: {e}")),
        },
        "EndpointSlice" => match serde_yaml::from_value(v.clone()) {
            Ok(s) => o.put_slice(s),
            Err(e) => fail(format!("EndpointSlice: {e}")),
        },
        "Node" => match serde_yaml::from_value(v.clone()) {
            Ok(n) => o.put_node(n),
            Err(e) => fail(format!("Node: {e}")),
        },
        "ServiceCIDR" => match serde_yaml::from_value(v.clone()) {
            Ok(c) => o.put_service_cidr(c),
            Err(e) => fail(format!("ServiceCIDR: {e}")),
        },
        "" => fail("no kind".into()),
        other => debug!(file = %file.display(), index, kind = other, "kind not used, ignored"),
    }
}

/// Reads one file's documents, or says why the file as a whole is unusable.
fn read_file(path: &Path) -> Result<Vec<serde_yaml::Value>, BadDocument> {
    let text = std::fs::read_to_string(path).map_err(|e| BadDocument {
        file: path.into(),
        index: 0,
        reason: e.to_string(),
    })?;
    let mut docs = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(&text).enumerate() {
        match serde_yaml::Value::deserialize(doc) {
            Ok(serde_yaml::Value::Null) => {}
            Ok(v) => docs.push(v),
            Err(e) => {
                return Err(BadDocument {
                    file: path.into(),
                    index: i,
                    reason: format!("YAML: {e}"),
                })
            }
        }
    }
    Ok(docs)
}

/// One file as decoded at the stamp it was read at: its objects (shared
/// with the merged set, so an unchanged file costs neither a parse nor a
/// copy) and the documents it had to skip.
struct LoadedFile {
    stamp: Stamp,
    docs: usize,
    objects: Objects,
    bad: Vec<BadDocument>,
}

impl LoadedFile {
    fn decode(path: &Path, stamp: Stamp, docs: &[serde_yaml::Value]) -> Self {
        let mut objects = Objects::default();
        let mut bad = Vec::new();
        for (i, v) in docs.iter().enumerate() {
            add_value(&mut objects, v, path, i, &mut bad);
        }
        LoadedFile {
            stamp,
            docs: docs.len(),
            objects,
            bad,
        }
    }
}

/// A manifest directory and the last good parse of each of its files.
pub struct ManifestDir {
    dir: PathBuf,
    /// The files of the last load, with the stamps they were read at.
    files: BTreeMap<PathBuf, LoadedFile>,
    /// Whether a load has happened (an empty directory loads too).
    loaded: bool,
    /// The fingerprint seen by the previous poll.
    previous: Option<BTreeMap<PathBuf, Stamp>>,
}

impl ManifestDir {
    /// A directory not read yet.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ManifestDir {
            dir: dir.into(),
            files: BTreeMap::new(),
            loaded: false,
            previous: None,
        }
    }

    /// Loads the directory: the first call always, later calls only when a
    /// change has settled (the same fingerprint as the previous poll).
    /// `None` means nothing new to load.
    pub fn poll(&mut self) -> Result<Option<(Objects, Vec<BadDocument>)>, FilesError> {
        let fp = fingerprint(&self.dir)?;
        let settled = self.previous.as_ref() == Some(&fp);
        let out = if self.loaded && (self.is_loaded(&fp) || !settled) {
            None
        } else {
            Some(self.load(&fp))
        };
        self.previous = Some(fp);
        Ok(out)
    }

    /// Whether `fp` is exactly what the last load read.
    fn is_loaded(&self, fp: &BTreeMap<PathBuf, Stamp>) -> bool {
        fp.len() == self.files.len()
            && fp
                .iter()
                .zip(&self.files)
                .all(|((p, s), (q, f))| p == q && *s == f.stamp)
    }

    /// Re-reads the files whose stamp changed and rebuilds the object set.
    fn load(&mut self, fp: &BTreeMap<PathBuf, Stamp>) -> (Objects, Vec<BadDocument>) {
        let mut bad = Vec::new();
        let mut files = BTreeMap::new();
        for (path, stamp) in fp {
            let old = self.files.remove(path);
            let file = match old {
                Some(f) if f.stamp == *stamp => f,
                old => match read_file(path) {
                    Ok(docs) => LoadedFile::decode(path, *stamp, &docs),
                    Err(b) => {
                        let kept = old.unwrap_or_else(|| LoadedFile::decode(path, *stamp, &[]));
                        bad.push(BadDocument {
                            reason: format!(
                                "{}; keeping the last good contents ({} documents)",
                                b.reason, kept.docs
                            ),
                            ..b
                        });
                        LoadedFile {
                            stamp: *stamp,
                            ..kept
                        }
                    }
                },
            };
            files.insert(path.clone(), file);
        }
        self.files = files;
        self.loaded = true;
        let mut o = Objects::default();
        for f in self.files.values() {
            o.extend(&f.objects);
            bad.extend(f.bad.iter().cloned());
        }
        (o, bad)
    }
}

/// Loads `dir` into `src` now, then on every settled change (polled every
/// `poll`). Reports the bad documents of each load through `on_bad`.
pub async fn watch_dir(
    dir: PathBuf,
    poll: Duration,
    src: Arc<MemorySource>,
    on_bad: impl Fn(&[BadDocument]) + Send + 'static,
) {
    let mut manifests = ManifestDir::new(dir);
    loop {
        match manifests.poll() {
            Ok(Some((objs, bad))) => {
                for b in &bad {
                    warn!(file = %b.file.display(), doc = b.index, "manifest skipped: {}", b.reason);
                }
                on_bad(&bad);
                let (s, e, n, c) = (
                    objs.services().len(),
                    objs.slices().len(),
                    objs.nodes().len(),
                    objs.service_cidrs().len(),
                );
                if src.replace(objs) {
                    info!(
                        services = s,
                        endpointslices = e,
                        nodes = n,
                        servicecidrs = c,
                        "manifests loaded"
                    );
                }
            }
            Ok(None) => {}
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
        let (o, bad) = ManifestDir::new(d.path()).poll().unwrap().unwrap();
        assert_eq!(o.nodes().len(), 2);
        assert_eq!(o.services().len(), 1);
        assert_eq!(bad.len(), 2, "{bad:?}");
        let src = MemorySource::new();
        assert!(src.replace(o.clone()));
        assert!(!src.replace(o));
        assert_eq!(src.model().ports.len(), 1);
    }

    #[test]
    fn loads_service_cidrs() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("cidrs.yaml"),
            "apiVersion: networking.k8s.io/v1\nkind: ServiceCIDR\nmetadata: {name: kubernetes}\nspec: {cidrs: [10.96.0.0/12]}\n---\nkind: ServiceCIDRList\napiVersion: networking.k8s.io/v1\nitems:\n- apiVersion: networking.k8s.io/v1\n  kind: ServiceCIDR\n  metadata: {name: extra}\n  spec: {cidrs: [10.112.0.0/16]}\n",
        )
        .unwrap();
        let (o, bad) = ManifestDir::new(d.path()).poll().unwrap().unwrap();
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(o.service_cidrs().len(), 2);
        let src = MemorySource::new();
        src.replace(o);
        let cidrs: Vec<String> = src
            .model()
            .service_cidrs
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(cidrs, ["10.96.0.0/12", "10.112.0.0/16"]);
    }

    fn service(name: &str, ip: &str) -> String {
        format!(
            "kind: Service\napiVersion: v1\nmetadata: {{name: {name}, namespace: ns}}\nspec: {{clusterIP: {ip}, ports: [{{port: 80}}]}}\n"
        )
    }

    #[test]
    fn a_half_written_file_is_not_read_until_it_settles() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("s.yaml");
        let two = format!(
            "{}---\n{}",
            service("a", "10.96.0.1"),
            service("b", "10.96.0.2")
        );
        std::fs::write(&f, &two).unwrap();
        let mut m = ManifestDir::new(d.path());
        let (o, _) = m.poll().unwrap().expect("first poll loads");
        assert_eq!(o.services().len(), 2);
        assert!(m.poll().unwrap().is_none(), "nothing changed");

        // Truncated in place, as a non-atomic writer leaves it mid-write.
        std::fs::write(&f, "").unwrap();
        assert!(
            m.poll().unwrap().is_none(),
            "an unsettled change is not read"
        );
        // The writer finishes, with one more Service.
        let three = format!("{two}---\n{}", service("c", "10.96.0.3"));
        std::fs::write(&f, &three).unwrap();
        assert!(
            m.poll().unwrap().is_none(),
            "changed again since the last poll"
        );
        let (o, bad) = m.poll().unwrap().expect("settled");
        assert_eq!(o.services().len(), 3);
        assert!(bad.is_empty(), "{bad:?}");
    }

    #[test]
    fn a_broken_file_keeps_its_last_good_contents() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("s.yaml");
        std::fs::write(&f, service("a", "10.96.0.1")).unwrap();
        std::fs::write(d.path().join("t.yaml"), service("t", "10.96.0.9")).unwrap();
        let mut m = ManifestDir::new(d.path());
        assert_eq!(m.poll().unwrap().unwrap().0.services().len(), 2);

        std::fs::write(&f, "kind: Service\n  bad: [\n").unwrap();
        assert!(m.poll().unwrap().is_none());
        let (o, bad) = m.poll().unwrap().expect("settled");
        assert_eq!(o.services().len(), 2, "the broken file's Service is kept");
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert!(bad[0]
            .reason
            .contains("keeping the last good contents (1 documents)"));

        // Fixed: the new contents replace the kept ones.
        std::fs::write(&f, service("z", "10.96.0.26")).unwrap();
        assert!(m.poll().unwrap().is_none());
        let (o, bad) = m.poll().unwrap().expect("settled");
        assert!(bad.is_empty(), "{bad:?}");
        let names: Vec<_> = o.services().keys().map(|k| k.name.as_str()).collect();
        assert_eq!(names, ["t", "z"]);

        // A deleted file's objects go.
        std::fs::remove_file(&f).unwrap();
        assert!(m.poll().unwrap().is_none());
        assert_eq!(m.poll().unwrap().unwrap().0.services().len(), 1);
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
