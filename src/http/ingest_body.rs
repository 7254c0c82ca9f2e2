//! Parsing and validating the body of `POST /ingest`. Pure: bytes in, a request or an error out.

use std::fmt;

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;

use super::error::ApiError;
use crate::model::{Id, Priority, MAX_ID};

/// A valid ingestion request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestRequest {
    pub ids: Vec<Id>,
    pub priority: Priority,
}

const EXAMPLE: &str = r#"{"ids": [1, 2, 3], "priority": "HIGH"}"#;

/// Reads the body as JSON whatever its Content-Type; unknown keys are ignored, and a field we
/// read given twice is refused (JSON leaves open which one counts).
pub fn parse(body: &[u8]) -> Result<IngestRequest, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::InvalidJson(format!("the body is empty; send a JSON object like {EXAMPLE}")));
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::InvalidJson(format!("the body is not valid JSON ({e}); send an object like {EXAMPLE}"))
    })?;
    let Value::Object(fields) = value else {
        return Err(ApiError::InvalidBody(format!(
            "the body is {}; it must be a JSON object like {EXAMPLE}",
            describe(&value)
        )));
    };
    if let Some(name) = repeated_field(body) {
        return Err(ApiError::InvalidBody(format!("the field \"{name}\" is given more than once; give it once")));
    }
    let ids = parse_ids(fields.get("ids"))?;
    let priority = parse_priority(fields.get("priority"))?;
    Ok(IngestRequest { ids, priority })
}

fn parse_ids(value: Option<&Value>) -> Result<Vec<Id>, ApiError> {
    let items = match value {
        None => {
            return Err(ApiError::InvalidBody(format!(
                "the field \"ids\" is missing; it must be a non-empty array of integers from 1 to {MAX_ID}"
            )))
        }
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(ApiError::InvalidBody(format!(
                "ids is {}; it must be an array of integers from 1 to {MAX_ID}",
                describe(other)
            )))
        }
    };
    if items.is_empty() {
        return Err(ApiError::InvalidIds("ids is empty; send at least one id".to_owned()));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            item.as_u64().and_then(|n| Id::try_from(n).ok()).filter(|n| (1..=MAX_ID).contains(n)).ok_or_else(|| {
                ApiError::InvalidIds(format!(
                    "ids[{i}] is {}; each id must be an integer from 1 to {MAX_ID}",
                    describe(item)
                ))
            })
        })
        .collect()
}

fn parse_priority(value: Option<&Value>) -> Result<Priority, ApiError> {
    const ALLOWED: &str = r#"one of "HIGH", "MEDIUM" or "LOW""#;
    match value {
        None => Err(ApiError::InvalidBody(format!("the field \"priority\" is missing; it must be {ALLOWED}"))),
        Some(Value::String(s)) => Priority::parse(s).ok_or_else(|| {
            ApiError::InvalidPriority(format!(
                "priority is {}; it must be {ALLOWED}",
                describe(&Value::String(s.clone()))
            ))
        }),
        Some(other) => {
            Err(ApiError::InvalidBody(format!("priority is {}; it must be a string, {ALLOWED}", describe(other))))
        }
    }
}

/// The first of the fields we read that the body's object names more than once. (A
/// [`Value`] keeps only the last of them.)
fn repeated_field(body: &[u8]) -> Option<&'static str> {
    struct Repeated(Option<&'static str>);
    impl<'de> Deserialize<'de> for Repeated {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Repeated, D::Error> {
            deserializer.deserialize_map(Fields)
        }
    }
    struct Fields;
    impl<'de> Visitor<'de> for Fields {
        type Value = Repeated;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Repeated, A::Error> {
            let (mut seen, mut repeated) = ([false; 2], None);
            // Read to the end: serde_json refuses an object left half read.
            while let Some(name) = map.next_key::<String>()? {
                map.next_value::<IgnoredAny>()?;
                if let Some(at) = READ.iter().position(|read| *read == name) {
                    if std::mem::replace(&mut seen[at], true) {
                        repeated = repeated.or(Some(READ[at]));
                    }
                }
            }
            Ok(Repeated(repeated))
        }
    }
    const READ: [&str; 2] = ["ids", "priority"];
    serde_json::from_slice::<Repeated>(body).ok()?.0
}

/// A short rendering of a JSON value for an error message: scalars as JSON, containers by kind.
fn describe(value: &Value) -> String {
    const MAX_CHARS: usize = 40;
    match value {
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
        scalar => {
            let text = scalar.to_string();
            if text.chars().count() <= MAX_CHARS {
                text
            } else {
                format!("{}…", text.chars().take(MAX_CHARS).collect::<String>())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn ok(body: &str, ids: &[Id], priority: Priority) {
        assert_eq!(parse(body.as_bytes()), Ok(IngestRequest { ids: ids.to_vec(), priority }));
    }

    #[track_caller]
    fn err(body: &str, code: &str, detail: &str) {
        let error = parse(body.as_bytes()).unwrap_err();
        assert_eq!((error.code(), error.to_string().as_str()), (code, detail), "body {body:?}");
    }

    #[test]
    fn accepts_valid_bodies() {
        ok(r#"{"ids": [1, 2, 3, 4, 5], "priority": "HIGH"}"#, &[1, 2, 3, 4, 5], Priority::High);
        ok(r#"{"priority": "LOW", "ids": [1000000007, 1, 1]}"#, &[1_000_000_007, 1, 1], Priority::Low);
        ok(r#" {"ids": [9], "priority": "MEDIUM", "extra": {"x": null}} "#, &[9], Priority::Medium);
    }

    #[test]
    fn rejects_what_is_not_json() {
        err("", "invalid_json", r#"the body is empty; send a JSON object like {"ids": [1, 2, 3], "priority": "HIGH"}"#);
        err(
            "  \n",
            "invalid_json",
            r#"the body is empty; send a JSON object like {"ids": [1, 2, 3], "priority": "HIGH"}"#,
        );
        assert_eq!(parse(b"ids=1&priority=HIGH").unwrap_err().code(), "invalid_json");
        assert_eq!(parse(br#"{"ids": [1], "priority": "HIGH""#).unwrap_err().code(), "invalid_json");
        assert_eq!(parse(b"\xff\xfe").unwrap_err().code(), "invalid_json");
    }

    #[test]
    fn rejects_bodies_of_the_wrong_shape() {
        err(
            "[1, 2]",
            "invalid_body",
            r#"the body is an array; it must be a JSON object like {"ids": [1, 2, 3], "priority": "HIGH"}"#,
        );
        err(
            "7",
            "invalid_body",
            r#"the body is 7; it must be a JSON object like {"ids": [1, 2, 3], "priority": "HIGH"}"#,
        );
        err(
            r#"{"priority": "HIGH"}"#,
            "invalid_body",
            r#"the field "ids" is missing; it must be a non-empty array of integers from 1 to 1000000007"#,
        );
        err(
            r#"{"ids": [1]}"#,
            "invalid_body",
            r#"the field "priority" is missing; it must be one of "HIGH", "MEDIUM" or "LOW""#,
        );
        err(
            r#"{"ids": "1,2", "priority": "HIGH"}"#,
            "invalid_body",
            r#"ids is "1,2"; it must be an array of integers from 1 to 1000000007"#,
        );
        err(
            r#"{"ids": null, "priority": "HIGH"}"#,
            "invalid_body",
            "ids is null; it must be an array of integers from 1 to 1000000007",
        );
        err(
            r#"{"ids": [1], "priority": 1}"#,
            "invalid_body",
            r#"priority is 1; it must be a string, one of "HIGH", "MEDIUM" or "LOW""#,
        );
    }

    #[test]
    fn rejects_a_field_given_twice() {
        let twice = |name: &str| format!(r#"the field "{name}" is given more than once; give it once"#);
        err(r#"{"ids": [1], "priority": "HIGH", "priority": "LOW"}"#, "invalid_body", &twice("priority"));
        err(r#"{"ids": [1], "ids": [2], "priority": "LOW"}"#, "invalid_body", &twice("ids"));
        err(r#"{"ids": [1], "priority": "LOW", "\u0069ds": [2]}"#, "invalid_body", &twice("ids"));
        // Other fields are not read, and nested objects are not looked at.
        ok(r#"{"ids": [1], "x": 1, "x": 2, "priority": "LOW"}"#, &[1], Priority::Low);
        ok(r#"{"ids": [1], "priority": "LOW", "meta": {"ids": 1, "ids": 2}}"#, &[1], Priority::Low);
    }

    #[test]
    fn rejects_bad_ids() {
        err(r#"{"ids": [], "priority": "HIGH"}"#, "invalid_ids", "ids is empty; send at least one id");
        err(
            r#"{"ids": [1, 2, 3, 0], "priority": "HIGH"}"#,
            "invalid_ids",
            "ids[3] is 0; each id must be an integer from 1 to 1000000007",
        );
        let cases = [
            ("-1", "-1"),
            ("1.5", "1.5"),
            ("2.0", "2.0"),
            ("1e3", "1000.0"),
            ("1000000008", "1000000008"),
            ("4294967297", "4294967297"),
            ("18446744073709551616", "1.8446744073709552e+19"),
            (r#""7""#, r#""7""#),
            ("null", "null"),
            ("true", "true"),
            ("[1]", "an array"),
            ("{}", "an object"),
        ];
        for (item, shown) in cases {
            err(
                &format!(r#"{{"ids": [5, {item}], "priority": "LOW"}}"#),
                "invalid_ids",
                &format!("ids[1] is {shown}; each id must be an integer from 1 to 1000000007"),
            );
        }
    }

    #[test]
    fn rejects_bad_priorities() {
        for p in ["high", "URGENT", "", " HIGH"] {
            let body = format!(r#"{{"ids": [1], "priority": "{p}"}}"#);
            err(
                &body,
                "invalid_priority",
                &format!(r#"priority is "{p}"; it must be one of "HIGH", "MEDIUM" or "LOW""#),
            );
        }
    }

    #[test]
    fn long_values_are_cut_in_messages() {
        let long = "x".repeat(500);
        let error = parse(format!(r#"{{"ids": [1], "priority": "{long}"}}"#).as_bytes()).unwrap_err();
        assert!(error.to_string().len() < 120, "{error}");
    }
}
