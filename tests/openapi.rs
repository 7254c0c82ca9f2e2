//! `/openapi.json` against the real binary: every request below must get a status the document
//! lists for its route and method, with the documented content type and a body that fits the
//! documented schema; and every documented status must be produced by some request here.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{wait_for, Server};
use serde_json::{json, Value};

/// A request to make: method, path, body.
type Case = (&'static str, String, Option<String>);

/// Statuses documented but not reachable from outside: a 500 needs a bug.
const UNREACHABLE: &[&str] = &["500"];

#[test]
fn every_answer_matches_the_document_and_every_documented_status_is_seen() {
    let server = Server::start(&["--interval", "20ms", "--fetch-delay", "0s", "--max-body", "2048"]);
    let doc = fetch_document(&server);
    let id = server.ingest(&[1, 2, 3, 4], "HIGH");
    // Let a release happen, so the dashboard has a batch to describe.
    wait_for("a release", Duration::from_secs(5), || (server.status(&id)["status"] != "yet_to_start").then_some(()));
    let mut seen = BTreeSet::new();
    for (method, path, body) in cases(&id) {
        let (status, content_type, allow, text) = call(&server, method, &path, body.as_deref());
        let context = format!("{method} {path} -> {status} {text:.200}");
        let response = documented_response(&doc, method, &path, status, allow.as_deref(), &context);
        seen.insert(response.0);
        check_body(&doc, &response.1, &content_type, &text, &context);
    }
    for documented in documented_statuses(&doc) {
        let exempt = UNREACHABLE.iter().any(|s| documented.ends_with(&format!(" {s}")));
        assert!(exempt || seen.contains(&documented), "no request here produced the documented {documented}");
    }
}

#[test]
fn the_document_is_openapi_3_1_and_names_every_error_code() {
    let server = Server::start(&["--interval", "1h"]);
    let doc = fetch_document(&server);
    assert_eq!(doc["openapi"], "3.1.0");
    let codes = &doc["components"]["schemas"]["Error"]["properties"]["error"]["enum"];
    for code in [
        "invalid_json",
        "invalid_body",
        "invalid_ids",
        "invalid_priority",
        "not_found",
        "method_not_allowed",
        "body_too_large",
        "internal_error",
    ] {
        assert!(codes.as_array().unwrap().contains(&json!(code)), "{code} is not in the Error schema");
    }
}

fn cases(id: &str) -> Vec<Case> {
    let get = |path: &str| ("GET", path.to_owned(), None);
    let post = |body: &str| ("POST", "/ingest".to_owned(), Some(body.to_owned()));
    vec![
        post(r#"{"ids": [1, 2, 3], "priority": "LOW"}"#),
        post(""),
        post("[1]"),
        post(r#"{"ids": [0], "priority": "LOW"}"#),
        post(r#"{"ids": [1], "priority": "URGENT"}"#),
        post(&format!(r#"{{"ids": [{}], "priority": "LOW"}}"#, vec!["1"; 2000].join(","))),
        get(&format!("/status/{id}")),
        get(&format!("/status/{id}/")),
        get("/status/00000000-0000-4000-8000-000000000000"),
        get("/status/not-a-uuid"),
        get("/health"),
        get("/"),
        get("/dashboard.json"),
        get("/docs"),
        get("/openapi.json"),
        get("/metrics"),
        ("DELETE", "/health".to_owned(), None),
        ("GET", "/ingest".to_owned(), None),
        ("POST", "/metrics".to_owned(), Some("{}".to_owned())),
        ("HEAD", "/health".to_owned(), None),
    ]
}

fn fetch_document(server: &Server) -> Value {
    let (status, content_type, _, text) = call(server, "GET", "/openapi.json", None);
    assert_eq!((status, content_type.as_str()), (200, "application/json"));
    serde_json::from_str(&text).expect("the document is JSON")
}

/// Status, Content-Type, Allow and the body as text, whatever the status.
fn call(server: &Server, method: &str, path: &str, body: Option<&str>) -> (u16, String, Option<String>, String) {
    let request = ureq::request(method, &format!("{}{path}", server.base));
    let result = match body {
        Some(body) => request.send_string(body),
        None => request.call(),
    };
    let response = match result {
        Ok(response) | Err(ureq::Error::Status(_, response)) => response,
        Err(error) => panic!("{method} {path} failed: {error}"),
    };
    let status = response.status();
    let content_type = response.header("Content-Type").unwrap_or_default().to_owned();
    let allow = response.header("Allow").map(str::to_owned);
    (status, content_type, allow, response.into_string().unwrap())
}

/// The OpenAPI path template that `path` falls under, e.g. `/status/{ingestion_id}`.
fn template<'a>(doc: &'a Value, path: &str) -> &'a str {
    let path = path.strip_suffix('/').filter(|p| !p.is_empty()).unwrap_or(path);
    let matches = |template: &str| {
        let (t, p): (Vec<_>, Vec<_>) = (template.split('/').collect(), path.split('/').collect());
        t.len() == p.len() && t.iter().zip(&p).all(|(t, p)| t == p || (t.starts_with('{') && !p.is_empty()))
    };
    let paths = doc["paths"].as_object().unwrap();
    paths.keys().find(|t| matches(t)).unwrap_or_else(|| panic!("{path} is not documented"))
}

/// `("<template> <method> <status>", response object)` for an answer; a method the route does
/// not document must be a 405 naming the documented methods in `Allow`.
fn documented_response(
    doc: &Value,
    method: &str,
    path: &str,
    status: u16,
    allow: Option<&str>,
    context: &str,
) -> (String, Value) {
    let template = template(doc, path);
    let lookup = if method == "HEAD" { "get" } else { &method.to_ascii_lowercase() };
    let Some(operation) = doc["paths"][template].get(lookup) else {
        assert_eq!(status, 405, "{context}: an undocumented method must be refused");
        let allow = allow.unwrap_or_else(|| panic!("{context}: a 405 without Allow"));
        let documented: Vec<String> = doc["paths"][template].as_object().unwrap().keys().cloned().collect();
        for method in documented {
            assert!(allow.contains(&method.to_ascii_uppercase()), "{context}: Allow {allow:?} lacks {method}");
        }
        let response = resolve(doc, &doc["components"]["responses"]["MethodNotAllowed"]).clone();
        return (format!("{template} * 405"), response);
    };
    let response = operation["responses"]
        .get(status.to_string())
        .unwrap_or_else(|| panic!("{context}: status {status} is not documented for {lookup} {template}"));
    (format!("{template} {lookup} {status}"), resolve(doc, response).clone())
}

fn documented_statuses(doc: &Value) -> Vec<String> {
    let mut all = vec![];
    for (template, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            for status in operation["responses"].as_object().unwrap().keys() {
                all.push(format!("{template} {method} {status}"));
            }
        }
    }
    all
}

fn check_body(doc: &Value, response: &Value, content_type: &str, text: &str, context: &str) {
    let Some(content) = response.get("content") else { return };
    let media = content
        .get(content_type)
        .unwrap_or_else(|| panic!("{context}: Content-Type {content_type:?} is not documented"));
    if content_type != "application/json" || text.is_empty() {
        // A HEAD answer has no body; an HTML or text body has no schema beyond a string.
        return;
    }
    let body: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{context}: not JSON: {e}"));
    if let Err(why) = conforms(doc, &media["schema"], &body) {
        panic!("{context}: the body does not fit the schema: {why}");
    }
}

fn resolve<'a>(doc: &'a Value, node: &'a Value) -> &'a Value {
    match node.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let pointer = reference.strip_prefix('#').expect("only local references");
            resolve(doc, doc.pointer(pointer).unwrap_or_else(|| panic!("dangling {reference}")))
        }
        None => node,
    }
}

/// The JSON Schema keywords the document uses, checked strictly enough to catch drift.
fn conforms(doc: &Value, schema: &Value, value: &Value) -> Result<(), String> {
    let schema = resolve(doc, schema);
    let fail = |why: String| Err(format!("{value:.80} {why}"));
    if let Some(options) = schema.get("oneOf").and_then(Value::as_array) {
        let fits = options.iter().filter(|option| conforms(doc, option, value).is_ok()).count();
        return if fits == 1 { Ok(()) } else { fail(format!("fits {fits} of oneOf")) };
    }
    if let Some(types) = schema.get("type") {
        let types: Vec<&str> = match types {
            Value::Array(types) => types.iter().filter_map(Value::as_str).collect(),
            other => vec![other.as_str().unwrap()],
        };
        if !types.iter().any(|t| is_type(t, value)) {
            return fail(format!("is not of type {types:?}"));
        }
    }
    if schema.get("const").is_some_and(|c| c != value) {
        return fail(format!("is not {}", schema["const"]));
    }
    if schema.get("enum").and_then(Value::as_array).is_some_and(|e| !e.contains(value)) {
        return fail(format!("is not one of {}", schema["enum"]));
    }
    if let (Some(min), Some(n)) = (schema.get("minimum").and_then(Value::as_f64), value.as_f64()) {
        if n < min {
            return fail(format!("is below {min}"));
        }
    }
    if let Value::Array(items) = value {
        if schema.get("minItems").and_then(Value::as_u64).is_some_and(|min| (items.len() as u64) < min) {
            return fail("has too few items".into());
        }
        if let Some(item_schema) = schema.get("items") {
            items.iter().try_for_each(|item| conforms(doc, item_schema, item))?;
        }
    }
    if let Value::Object(fields) = value {
        check_object(doc, schema, fields)?;
    }
    if let (Some(format), Some(text)) = (schema.get("format").and_then(Value::as_str), value.as_str()) {
        if format == "uuid" && uuid::Uuid::try_parse(text).is_err() {
            return fail("is not a UUID".into());
        }
    }
    Ok(())
}

fn check_object(doc: &Value, schema: &Value, fields: &serde_json::Map<String, Value>) -> Result<(), String> {
    let properties = schema.get("properties").and_then(Value::as_object);
    for required in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
        if !fields.contains_key(required.as_str().unwrap()) {
            return Err(format!("lacks the required field {required}"));
        }
    }
    for (name, field) in fields {
        match properties.and_then(|p| p.get(name)) {
            Some(field_schema) => conforms(doc, field_schema, field).map_err(|why| format!("{name}: {why}"))?,
            None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                return Err(format!("has the undocumented field {name:?}"));
            }
            None => {}
        }
    }
    Ok(())
}

fn is_type(name: &str, value: &Value) -> bool {
    match name {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_u64() || value.is_i64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        other => panic!("the document uses type {other}, which this check does not know"),
    }
}
