//! `controller/openapi.yaml` checked against the handlers: the documented
//! paths are exactly the served ones ([`talaria_controller::api::routes`]),
//! and every JSON response validates against its documented schema,
//! strictly (a field the document does not name is an error, so the two
//! cannot drift apart silently).

use serde_json::Value;

/// The OpenAPI document.
pub struct Spec(Value);

impl Spec {
    pub fn load() -> Self {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml")).unwrap();
        let yaml: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        Spec(serde_json::to_value(yaml).unwrap())
    }

    /// The documented paths (every operation is a GET).
    pub fn paths(&self) -> Vec<String> {
        let paths = self.0["paths"].as_object().unwrap();
        for (p, ops) in paths {
            let methods: Vec<&String> = ops.as_object().unwrap().keys().collect();
            assert_eq!(methods, ["get"], "{p}: only GET is served");
        }
        let mut v: Vec<String> = paths.keys().cloned().collect();
        v.sort();
        v
    }

    /// The documented path template that `path` (a concrete path) fits.
    pub fn template(&self, path: &str) -> String {
        let segs: Vec<&str> = path.split('/').collect();
        self.paths()
            .into_iter()
            .find(|t| {
                let ts: Vec<&str> = t.split('/').collect();
                ts.len() == segs.len()
                    && ts
                        .iter()
                        .zip(&segs)
                        .all(|(t, s)| t.starts_with('{') || t == s)
            })
            .unwrap_or_else(|| panic!("{path}: no documented path fits"))
    }

    /// Checks a response of `GET path` (the documented template) with
    /// `status`: documented, and a JSON body that fits its schema.
    #[track_caller]
    pub fn check(&self, path: &str, status: u16, body: &str) {
        let resp = &self.0["paths"][path]["get"]["responses"][status.to_string()];
        assert!(resp.is_object(), "GET {path} {status} is not documented");
        let content = resp["content"].as_object().unwrap();
        if let Some(media) = content.get("application/json") {
            let v: Value = serde_json::from_str(body)
                .unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {body}"));
            if let Err(e) = self.validate(&media["schema"], &v, "$") {
                panic!("GET {path} {status} does not fit openapi.yaml: {e}\n{body}");
            }
        } else {
            assert!(
                content.contains_key("text/plain"),
                "GET {path} {status}: unknown media"
            );
        }
    }

    fn resolve<'a>(&'a self, schema: &'a Value) -> &'a Value {
        match schema["$ref"].as_str() {
            Some(r) => {
                let name = r
                    .strip_prefix("#/components/schemas/")
                    .expect("local refs only");
                &self.0["components"]["schemas"][name]
            }
            None => schema,
        }
    }

    fn validate(&self, schema: &Value, v: &Value, at: &str) -> Result<(), String> {
        let schema = self.resolve(schema);
        if let Some(alts) = schema["oneOf"].as_array() {
            return match alts
                .iter()
                .filter(|s| self.validate(s, v, at).is_ok())
                .count()
            {
                1 => Ok(()),
                n => Err(format!("{at}: matches {n} of the oneOf alternatives")),
            };
        }
        if let Some(e) = schema["enum"].as_array() {
            if !e.contains(v) {
                return Err(format!("{at}: {v} not in {e:?}"));
            }
        }
        let ty = schema["type"].as_str().unwrap_or("object");
        match (ty, v) {
            ("object", Value::Object(m)) => {
                let props = schema["properties"].as_object();
                for (k, x) in m {
                    let here = format!("{at}.{k}");
                    match (
                        props.and_then(|p| p.get(k)),
                        schema.get("additionalProperties"),
                    ) {
                        (Some(s), _) => self.validate(s, x, &here)?,
                        (None, Some(s)) if s.is_object() => self.validate(s, x, &here)?,
                        (None, Some(Value::Bool(true))) => {}
                        (None, _) => return Err(format!("{here}: not in the document")),
                    }
                }
                for r in schema["required"].as_array().into_iter().flatten() {
                    if !m.contains_key(r.as_str().unwrap()) {
                        return Err(format!("{at}: required {r} missing"));
                    }
                }
                Ok(())
            }
            ("array", Value::Array(items)) => items
                .iter()
                .enumerate()
                .try_for_each(|(i, x)| self.validate(&schema["items"], x, &format!("{at}[{i}]"))),
            ("string", Value::String(_)) | ("boolean", Value::Bool(_)) => Ok(()),
            ("integer", Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(()),
            ("number", Value::Number(_)) => Ok(()),
            (_, Value::Null) if schema["nullable"] == true => Ok(()),
            (t, v) => Err(format!("{at}: expected {t}, got {v}")),
        }
    }
}

#[test]
fn the_documented_paths_are_the_served_ones() {
    let mut served: Vec<String> = talaria_controller::api::routes()
        .into_iter()
        .map(|(p, _)| p.to_string())
        .collect();
    served.sort();
    assert_eq!(Spec::load().paths(), served);
}
