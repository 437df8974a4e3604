//! Loading Services, EndpointSlices and Nodes from Kubernetes manifests: YAML (multi-document
//! streams) or JSON, single objects or lists, exactly as `kubectl get -o yaml` / `-o json`
//! print them.
//!
//! - [`load_path`]: a file, or a directory (every `*.yaml`, `*.yml` and `*.json` below it,
//!   in path order).
//! - [`load_str`]: text in memory.
//!
//! Objects of kind `v1` Service, `discovery.k8s.io/v1` EndpointSlice and `v1` Node are
//! converted with [`crate::convert`]; `kind: List` and `*List` kinds (`ServiceList`, …) are
//! unpacked; every other kind is ignored silently. An object that does not deserialize is
//! reported as a [`Warning`] naming the file, the object and the field, and the others are
//! still loaded. When the same object (kind, namespace and name) appears twice, the last
//! one wins, with a warning.
//!
//! # Limits
//!
//! The loader is meant to survive hostile input without panicking or running out of
//! memory: inputs are limited to [`MAX_INPUT_BYTES`]; documents to 64 levels of nesting
//! (YAML and JSON); YAML parsing to a node and event budget and an alias-expansion budget
//! (alias bombs). What exceeds a limit is reported as a warning.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use kproxy_model::{EndpointSlice, Node, Service};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::convert::{self, namespace_or_default};
use crate::error::Error;
use crate::warning::{ObjectRef, Warning, truncate};

/// The largest input accepted, in bytes (256 MiB): a larger file is an
/// [`Error::TooLarge`], a larger string a warning.
pub const MAX_INPUT_BYTES: usize = 256 << 20;

/// Nesting limit for YAML and JSON documents. A Kubernetes object rarely nests deeper than
/// 20 levels (`managedFields` included); parsing and deserializing recurse once per level,
/// and 64 levels fit in a 2 MiB thread stack even in a debug build.
const MAX_DEPTH: usize = 64;
/// YAML nodes (scalars, sequences, mappings) per input: about 1 GiB of `serde_json::Value`
/// at most.
const MAX_NODES: usize = 8_000_000;
/// YAML events recorded for anchors, or replayed from aliases, per input.
const MAX_ALIAS_EVENTS: usize = 100_000;
/// Warnings kept per load; the rest are counted in a last warning.
const MAX_WARNINGS: usize = 10_000;
/// Longest parser error message kept in a warning.
const MAX_PARSE_ERROR_BYTES: usize = 300;

/// What [`load_path`] or [`load_str`] found.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Manifests {
    /// The Services, sorted by namespace and name.
    pub services: Vec<Service>,
    /// The EndpointSlices, sorted by namespace and name.
    pub endpoint_slices: Vec<EndpointSlice>,
    /// The Nodes, sorted by name.
    pub nodes: Vec<Node>,
    /// Everything skipped or corrected, in input order (at most 10,000, then one that
    /// counts the rest).
    pub warnings: Vec<Warning>,
}

/// Loads the manifests in `path`: a file (whatever its name; read as JSON when it starts
/// with `{` or `[`, else as YAML), or a directory, whose `*.yaml`, `*.yml` and `*.json`
/// files are loaded recursively in path order. Hidden entries (names starting with `.`,
/// such as a ConfigMap volume's `..data`) are skipped, and symbolic links are followed to
/// files but not to directories.
///
/// # Errors
///
/// Only when the input cannot be read at all: `path` (or a directory or manifest file
/// below it) does not exist or cannot be read ([`Error::Io`]), a file is not UTF-8
/// ([`Error::NotUtf8`]) or is larger than [`MAX_INPUT_BYTES`] ([`Error::TooLarge`]).
/// Everything wrong *inside* readable files is a warning.
pub fn load_path(path: impl AsRef<Path>) -> Result<Manifests, Error> {
    let path = path.as_ref();
    let meta = fs::metadata(path).map_err(io_error(path))?;
    let mut loader = Loader::default();
    if meta.is_dir() {
        let mut files = Vec::new();
        collect_files(path, &mut files)?;
        files.sort();
        for file in files {
            let text = read_file(&file)?;
            loader.load_text(&text, &file.display().to_string());
        }
    } else {
        let text = read_file(path)?;
        loader.load_text(&text, &path.display().to_string());
    }
    Ok(loader.finish())
}

/// Loads manifests from `text`: JSON when it starts with `{` or `[` (one or more
/// concatenated values), else a YAML stream. `source_name` is the warnings'
/// [`file`](Warning::file) (none when empty).
pub fn load_str(text: &str, source_name: &str) -> Manifests {
    let mut loader = Loader::default();
    loader.load_text(text, source_name);
    loader.finish()
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), Error> {
    for entry in fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        if entry.file_name().as_encoded_bytes().starts_with(b".") {
            continue;
        }
        let path = entry.path();
        let file_type = entry.file_type().map_err(io_error(&path))?;
        if file_type.is_dir() {
            collect_files(&path, out)?;
        } else if is_manifest_name(&path) {
            let is_file = if file_type.is_symlink() {
                fs::metadata(&path).map_err(io_error(&path))?.is_file()
            } else {
                file_type.is_file()
            };
            if is_file {
                out.push(path);
            }
        }
    }
    Ok(())
}

fn is_manifest_name(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
        e.eq_ignore_ascii_case("yaml")
            || e.eq_ignore_ascii_case("yml")
            || e.eq_ignore_ascii_case("json")
    })
}

fn read_file(path: &Path) -> Result<String, Error> {
    let file = fs::File::open(path).map_err(io_error(path))?;
    let mut bytes = Vec::new();
    file.take(MAX_INPUT_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(io_error(path))?;
    if bytes.len() > MAX_INPUT_BYTES {
        return Err(Error::TooLarge {
            path: path.to_owned(),
            limit: MAX_INPUT_BYTES,
        });
    }
    String::from_utf8(bytes).map_err(|e| Error::NotUtf8 {
        path: path.to_owned(),
        valid_up_to: e.utf8_error().valid_up_to(),
    })
}

/// One stored object and the file it came from (`None`: not proxied, but it still
/// replaces an earlier definition).
struct Slot<T> {
    value: Option<T>,
    file: String,
}

#[derive(Default)]
struct Loader {
    services: BTreeMap<(String, String), Slot<Service>>,
    endpoint_slices: BTreeMap<(String, String), Slot<EndpointSlice>>,
    nodes: BTreeMap<String, Slot<Node>>,
    warnings: Vec<Warning>,
    /// Warnings beyond [`MAX_WARNINGS`], counted but not kept.
    suppressed: usize,
}

impl Loader {
    fn finish(self) -> Manifests {
        let mut manifests = Manifests {
            services: self
                .services
                .into_values()
                .filter_map(|s| s.value)
                .collect(),
            endpoint_slices: self
                .endpoint_slices
                .into_values()
                .filter_map(|s| s.value)
                .collect(),
            nodes: self.nodes.into_values().filter_map(|s| s.value).collect(),
            warnings: self.warnings,
        };
        if self.suppressed > 0 {
            manifests.warnings.push(Warning::new(
                None,
                None,
                format!(
                    "{} more warnings not shown (at most {MAX_WARNINGS} are kept)",
                    self.suppressed
                ),
            ));
        }
        manifests
    }

    fn push(&mut self, warning: Warning) {
        if self.warnings.len() < MAX_WARNINGS {
            self.warnings.push(warning);
        } else {
            self.suppressed += 1;
        }
    }

    fn warn(&mut self, file: &str, object: Option<ObjectRef>, field: Option<String>, msg: String) {
        self.push(Warning::new(object, field, msg).in_file(file));
    }

    fn load_text(&mut self, text: &str, file: &str) {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        if text.len() > MAX_INPUT_BYTES {
            self.warn(
                file,
                None,
                None,
                format!("larger than the limit of {MAX_INPUT_BYTES} bytes; ignored"),
            );
            return;
        }
        let documents = parse_documents(text);
        let numbered = documents.len() > 1;
        for (i, document) in documents.into_iter().enumerate() {
            let location = numbered.then(|| format!("document {}", i + 1));
            match document {
                Ok(Value::Null) => {}
                Ok(value) => self.load_value(value, location, file, None),
                Err(message) => self.warn(file, None, location, message),
            }
        }
    }

    /// Loads one document or list item. `defaults` are the kind and apiVersion a typed
    /// list (`ServiceList`) gives items that lack them.
    fn load_value(
        &mut self,
        value: Value,
        location: Option<String>,
        file: &str,
        defaults: Option<(&str, Option<&str>)>,
    ) {
        let mut map = match value {
            Value::Object(map) => map,
            other => {
                self.warn(
                    file,
                    None,
                    location,
                    format!("not a mapping but {}; ignored", describe(&other)),
                );
                return;
            }
        };
        if let Some((kind, api_version)) = defaults {
            if !map.contains_key("kind") {
                map.insert("kind".into(), Value::String(kind.to_owned()));
            }
            if let Some(api_version) = api_version
                && !map.contains_key("apiVersion")
            {
                map.insert("apiVersion".into(), Value::String(api_version.to_owned()));
            }
        }
        let kind = match map.get("kind") {
            Some(Value::String(kind)) if !kind.is_empty() => kind.clone(),
            None | Some(Value::Null) | Some(Value::String(_)) => {
                self.warn(file, None, location, "no kind; ignored".into());
                return;
            }
            Some(other) => {
                let msg = format!("kind is {}, not a string; ignored", describe(other));
                self.warn(file, None, location, msg);
                return;
            }
        };
        let api_version = map
            .get("apiVersion")
            .and_then(Value::as_str)
            .map(str::to_owned);

        if kind == "List"
            || (kind.ends_with("List") && map.get("items").is_some_and(Value::is_array))
        {
            self.load_list(map, &kind, api_version.as_deref(), location, file);
            return;
        }

        match (api_version.as_deref(), kind.as_str()) {
            (Some("v1"), "Service") => {
                let object = object_ref(&map, "Service", true);
                if let Some(svc) = self.deserialize::<core::Service>(map, &object, file) {
                    let (service, warnings) = convert::service(&svc);
                    self.add_warnings(warnings, file);
                    if !object.name.is_empty() {
                        let key = (service_key_ns(&svc.metadata.namespace), object.name.clone());
                        let previous = store(&mut self.services, key, service, file);
                        self.duplicate(previous, object, file);
                    }
                }
            }
            (Some("discovery.k8s.io/v1"), "EndpointSlice") => {
                let object = object_ref(&map, "EndpointSlice", true);
                if let Some(slice) =
                    self.deserialize::<discovery::EndpointSlice>(map, &object, file)
                {
                    let (converted, warnings) = convert::endpoint_slice(&slice);
                    self.add_warnings(warnings, file);
                    if !object.name.is_empty() {
                        let key = (
                            service_key_ns(&slice.metadata.namespace),
                            object.name.clone(),
                        );
                        let previous = store(&mut self.endpoint_slices, key, converted, file);
                        self.duplicate(previous, object, file);
                    }
                }
            }
            (Some("v1"), "Node") => {
                let object = object_ref(&map, "Node", false);
                if let Some(node) = self.deserialize::<core::Node>(map, &object, file) {
                    let (converted, warnings) = convert::node(&node);
                    self.add_warnings(warnings, file);
                    if !object.name.is_empty() {
                        let previous =
                            store(&mut self.nodes, object.name.clone(), Some(converted), file);
                        self.duplicate(previous, object, file);
                    }
                }
            }
            (Some("discovery.k8s.io/v1beta1"), "EndpointSlice") => {
                let object = object_ref(&map, "EndpointSlice", true);
                self.warn(
                    file,
                    Some(object),
                    Some("apiVersion".into()),
                    "discovery.k8s.io/v1beta1 is not supported (use discovery.k8s.io/v1); ignored"
                        .into(),
                );
            }
            (None, "Service" | "EndpointSlice" | "Node") => {
                let object = object_ref(&map, &kind, kind != "Node");
                self.warn(
                    file,
                    Some(object),
                    Some("apiVersion".into()),
                    "missing; ignored".into(),
                );
            }
            // Other kinds (and other API groups' Services) are legitimate: not ours.
            _ => {}
        }
    }

    fn load_list(
        &mut self,
        mut map: Map<String, Value>,
        kind: &str,
        api_version: Option<&str>,
        location: Option<String>,
        file: &str,
    ) {
        let items = match map.remove("items") {
            None | Some(Value::Null) => return,
            Some(Value::Array(items)) => items,
            Some(other) => {
                let field = match &location {
                    Some(loc) => format!("{loc}, items"),
                    None => "items".into(),
                };
                let msg = format!(
                    "{kind} items are {}, not a sequence; ignored",
                    describe(&other)
                );
                self.warn(file, None, Some(field), msg);
                return;
            }
        };
        // `ServiceList` items may omit their kind and apiVersion (the API server's own
        // list output does); `List` items carry their own.
        let item_kind = kind.strip_suffix("List").filter(|k| !k.is_empty());
        for (i, item) in items.into_iter().enumerate() {
            let item_location = match &location {
                Some(loc) => format!("{loc}, items[{i}]"),
                None => format!("items[{i}]"),
            };
            let defaults = item_kind.map(|k| (k, api_version));
            self.load_value(item, Some(item_location), file, defaults);
        }
    }

    fn deserialize<T: DeserializeOwned>(
        &mut self,
        map: Map<String, Value>,
        object: &ObjectRef,
        file: &str,
    ) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(Value::Object(map)) {
            Ok(value) => Some(value),
            Err(e) => {
                let path = e.path().to_string();
                let field = (path != ".").then_some(path);
                let msg = format!("{}; {} ignored", e.inner(), object.kind);
                self.warn(file, Some(object.clone()), field, msg);
                None
            }
        }
    }

    fn add_warnings(&mut self, warnings: Vec<Warning>, file: &str) {
        for warning in warnings {
            self.push(warning.in_file(file));
        }
    }

    fn duplicate(&mut self, previous: Option<String>, object: ObjectRef, file: &str) {
        if let Some(previous) = previous {
            let msg = if previous.is_empty() {
                "defined again; this definition replaces the earlier one".to_owned()
            } else {
                format!(
                    "defined again; this definition replaces the one in {}",
                    truncate(&previous, 200)
                )
            };
            self.warn(file, Some(object), None, msg);
        }
    }
}

/// Stores `value` under `key`; returns the file of the definition it replaced.
fn store<K: Ord, T>(
    map: &mut BTreeMap<K, Slot<T>>,
    key: K,
    value: Option<T>,
    file: &str,
) -> Option<String> {
    let slot = Slot {
        value,
        file: file.to_owned(),
    };
    match map.entry(key) {
        Entry::Vacant(v) => {
            v.insert(slot);
            None
        }
        Entry::Occupied(mut o) => Some(o.insert(slot).file),
    }
}

fn service_key_ns(namespace: &Option<String>) -> String {
    namespace_or_default(namespace.as_deref()).to_owned()
}

/// The object a raw document is, for warnings (before it is known to deserialize).
fn object_ref(map: &Map<String, Value>, kind: &str, namespaced: bool) -> ObjectRef {
    let meta = map.get("metadata");
    let get = |key: &str| meta.and_then(|m| m.get(key)).and_then(Value::as_str);
    let namespace = namespaced.then(|| namespace_or_default(get("namespace")));
    ObjectRef::new(kind, namespace, get("name").unwrap_or_default())
}

fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a sequence",
        Value::Object(_) => "a mapping",
    }
}

/// Splits `text` into documents: each a value, or the warning message about a document
/// that could not be parsed.
fn parse_documents(text: &str) -> Vec<Result<Value, String>> {
    if matches!(text.trim_start().chars().next(), Some('{' | '[')) {
        let json = parse_json(text);
        if !matches!(json.first(), Some(Err(_))) {
            return json;
        }
        // Not JSON after all? It may be YAML in flow style.
        let yaml = parse_yaml(text);
        if !matches!(yaml.first(), Some(Err(_))) {
            return yaml;
        }
        return json;
    }
    parse_yaml(text)
}

fn parse_json(text: &str) -> Vec<Result<Value, String>> {
    let mut documents = Vec::new();
    for document in serde_json::Deserializer::from_str(text).into_iter::<Value>() {
        match document {
            Ok(value) if depth(&value) > MAX_DEPTH => documents.push(Err(format!(
                "nested deeper than {MAX_DEPTH} levels; document ignored"
            ))),
            Ok(value) => documents.push(Ok(value)),
            Err(e) => {
                documents.push(Err(format!(
                    "invalid JSON: {}; the rest of the input is ignored",
                    truncate(&e.to_string(), MAX_PARSE_ERROR_BYTES)
                )));
                break;
            }
        }
    }
    documents
}

/// How deeply sequences and mappings nest in `value` (a scalar: 0), without recursion.
fn depth(value: &Value) -> usize {
    let mut max = 0;
    let mut stack = vec![(value, 0)];
    while let Some((value, level)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match value {
            Value::Array(items) => Box::new(items.iter()),
            Value::Object(map) => Box::new(map.values()),
            _ => continue,
        };
        max = max.max(level + 1);
        stack.extend(children.map(|child| (child, level + 1)));
    }
    max
}

fn yaml_options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_reader_input_bytes = Some(MAX_INPUT_BYTES);
    budget.max_depth = MAX_DEPTH;
    budget.max_nodes = MAX_NODES;
    budget.max_events = 3 * MAX_NODES;
    budget.max_documents = MAX_NODES;
    budget.max_total_scalar_bytes = MAX_INPUT_BYTES;
    // Manifests seldom use anchors and aliases at all (kubectl never prints them): keep
    // alias expansion small, so that an alias bomb fails fast.
    budget.max_aliases = MAX_ALIAS_EVENTS / 10;
    budget.max_anchors = MAX_ALIAS_EVENTS / 10;
    budget.max_recorded_anchor_events = MAX_ALIAS_EVENTS;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options.alias_limits.max_total_replayed_events = MAX_ALIAS_EVENTS;
    options
}

fn parse_yaml(text: &str) -> Vec<Result<Value, String>> {
    let mut reader = text.as_bytes();
    let mut documents = Vec::new();
    let mut stream =
        serde_saphyr::read_with_options::<_, Value>(&mut reader, yaml_options()).peekable();
    while let Some(document) = stream.next() {
        match document {
            Ok(value) => documents.push(Ok(value)),
            Err(e) => {
                // A syntax error or an exhausted budget ends the stream; any other error
                // costs only its document.
                let consequence = if stream.peek().is_some() {
                    "document ignored"
                } else {
                    "the rest of the input is ignored"
                };
                documents.push(Err(format!(
                    "invalid YAML: {}; {consequence}",
                    truncate(&e.to_string(), MAX_PARSE_ERROR_BYTES)
                )));
            }
        }
    }
    documents
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_counts_containers() {
        assert_eq!(depth(&serde_json::json!(1)), 0);
        assert_eq!(depth(&serde_json::json!({})), 1);
        assert_eq!(depth(&serde_json::json!({"a": [1, {"b": []}], "c": 2})), 4);
    }

    #[test]
    fn describes_values() {
        assert_eq!(describe(&Value::Null), "null");
        assert_eq!(describe(&serde_json::json!([1])), "a sequence");
    }
}
