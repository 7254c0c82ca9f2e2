//! Parsing and validating the body of `POST /ingest`. Pure: bytes in, a request or an error out.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

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
/// read given twice is refused (JSON leaves open which one counts). At most `max_ids` ids are
/// kept: more are checked and counted, and refused as too many.
///
/// One pass over the bytes, building no tree of the document: what it holds beyond the body is
/// the ids it keeps, so a body's cost in memory is bounded by its size and `max_ids`.
pub fn parse(body: &[u8], max_ids: usize) -> Result<IngestRequest, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::InvalidJson(format!("the body is empty; send a JSON object like {EXAMPLE}")));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let fields =
        Shaped(Top { max_ids }).deserialize(&mut deserializer).and_then(|top| deserializer.end().map(|()| top));
    let fields = fields.map_err(|e| {
        ApiError::InvalidJson(format!("the body is not valid JSON ({e}); send an object like {EXAMPLE}"))
    })?;
    let fields = match fields {
        Read::Object(fields) => fields,
        Read::Other(shown) => {
            return Err(ApiError::InvalidBody(format!("the body is {shown}; it must be a JSON object like {EXAMPLE}")))
        }
    };
    if let Some(name) = fields.repeated {
        return Err(ApiError::InvalidBody(format!("the field \"{name}\" is given more than once; give it once")));
    }
    let (ids, count) = fields.ids.ok_or_else(|| {
        ApiError::InvalidBody(format!(
            "the field \"ids\" is missing; it must be a non-empty array of integers from 1 to {MAX_ID}"
        ))
    })??;
    let priority = parse_priority(fields.priority)?;
    if count > max_ids {
        return Err(ApiError::TooManyIds { count, limit: max_ids });
    }
    Ok(IngestRequest { ids, priority })
}

/// What the top of the body is: an object (its fields as read), or something else, shown.
enum Read {
    Object(Fields),
    Other(String),
}

#[derive(Default)]
struct Fields {
    /// `ids`: those kept and how many there were, or why not (the error comes after JSON
    /// syntax, which the whole body must pass).
    ids: Option<Result<(Vec<Id>, usize), ApiError>>,
    priority: Option<Scalar>,
    repeated: Option<&'static str>,
}

/// Reads a JSON value of any kind: scalars as [`Scalar`]s, containers as `C` says. One place
/// for serde's scalar callbacks, shared by the body, its `ids` and any other value.
struct Shaped<C>(C);

/// What to make of a value once its kind is known.
trait Kinds<'de>: Sized {
    type Value;
    fn array<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error>;
    fn object<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error>;
    fn scalar(self, shown: Scalar) -> Self::Value;
}

impl<'de, C: Kinds<'de>> DeserializeSeed<'de> for Shaped<C> {
    type Value = C::Value;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<C::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de, C: Kinds<'de>> Visitor<'de> for Shaped<C> {
    type Value = C::Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<C::Value, A::Error> {
        self.0.array(seq)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<C::Value, A::Error> {
        self.0.object(map)
    }

    fn visit_bool<E>(self, v: bool) -> Result<C::Value, E> {
        Ok(self.0.scalar(Scalar::Bool(v)))
    }

    fn visit_u64<E>(self, v: u64) -> Result<C::Value, E> {
        Ok(self.0.scalar(Scalar::Unsigned(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<C::Value, E> {
        Ok(self.0.scalar(Scalar::Signed(v)))
    }

    fn visit_f64<E>(self, v: f64) -> Result<C::Value, E> {
        Ok(self.0.scalar(Scalar::Float(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<C::Value, E> {
        // No more than a message shows: a body may hold megabytes of text.
        Ok(self.0.scalar(Scalar::Text(v.chars().take(SHOWN_CHARS + 1).collect())))
    }

    fn visit_unit<E>(self) -> Result<C::Value, E> {
        Ok(self.0.scalar(Scalar::Null))
    }
}

/// The body: an object's fields we read, or what else it is.
struct Top {
    max_ids: usize,
}

impl<'de> Kinds<'de> for Top {
    type Value = Read;

    fn array<A: SeqAccess<'de>>(self, seq: A) -> Result<Read, A::Error> {
        Show.array(seq).map(|shown| self.scalar(shown))
    }

    fn object<A: MapAccess<'de>>(self, mut map: A) -> Result<Read, A::Error> {
        let mut fields = Fields::default();
        // Read to the end: serde_json refuses an object left half read.
        // Keys too are kept only as far as a message would show them: enough to tell ours.
        while let Some(name) = map.next_key_seed(Shaped(Show))? {
            let name = match &name {
                Scalar::Text(name) => name.as_str(),
                _ => "",
            };
            let repeated = match name {
                "ids" => fields.ids.replace(map.next_value_seed(Shaped(Ids { max: self.max_ids }))?).map(|_| "ids"),
                "priority" => fields.priority.replace(map.next_value_seed(Shaped(Show))?).map(|_| "priority"),
                // Read as any other value is: a body is refused unless all of it is JSON.
                _ => map.next_value_seed(Shaped(Show)).map(|_| None)?,
            };
            fields.repeated = fields.repeated.or(repeated);
        }
        Ok(Read::Object(fields))
    }

    fn scalar(self, shown: Scalar) -> Read {
        Read::Other(shown.to_string())
    }
}

/// The ids: at most `max` kept; every item checked, and counted (too many is said after the
/// priority is checked, as it always was).
struct Ids {
    max: usize,
}

impl<'de> Kinds<'de> for Ids {
    type Value = Result<(Vec<Id>, usize), ApiError>;

    fn array<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let (mut ids, mut count, mut first_bad) = (Vec::new(), 0usize, None);
        while let Some(item) = seq.next_element_seed(Shaped(Show))? {
            match item.as_id() {
                Some(id) if ids.len() < self.max => ids.push(id),
                Some(_) => {}
                None if first_bad.is_none() => first_bad = Some((count, item)),
                None => {}
            }
            count += 1;
        }
        Ok(match (first_bad, count) {
            (Some((i, item)), _) => {
                Err(ApiError::InvalidIds(format!("ids[{i}] is {item}; each id must be an integer from 1 to {MAX_ID}")))
            }
            (None, 0) => Err(ApiError::InvalidIds("ids is empty; send at least one id".to_owned())),
            (None, count) => Ok((ids, count)),
        })
    }

    fn object<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Show.object(map).map(|shown| self.scalar(shown))
    }

    fn scalar(self, shown: Scalar) -> Self::Value {
        Err(ApiError::InvalidBody(format!("ids is {shown}; it must be an array of integers from 1 to {MAX_ID}")))
    }
}

/// Any value, as an error message shows it: its contents read through (so all of it must be
/// JSON, nested at most as deep as serde_json allows) but not kept, and text cut.
struct Show;

impl<'de> Kinds<'de> for Show {
    type Value = Scalar;

    fn array<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar, A::Error> {
        while seq.next_element_seed(Shaped(Show))?.is_some() {}
        Ok(Scalar::Array)
    }

    fn object<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar, A::Error> {
        while map.next_key_seed(Shaped(Show))?.is_some() {
            map.next_value_seed(Shaped(Show))?;
        }
        Ok(Scalar::Object)
    }

    fn scalar(self, shown: Scalar) -> Scalar {
        shown
    }
}

/// The most characters of a value an error message shows.
const SHOWN_CHARS: usize = 40;

/// A JSON value as an error message shows it: scalars as JSON (long text cut), containers by
/// kind, read without keeping their contents.
#[derive(Debug, Clone, PartialEq)]
enum Scalar {
    Null,
    Bool(bool),
    Unsigned(u64),
    Signed(i64),
    Float(f64),
    Text(String),
    Array,
    Object,
}

impl Scalar {
    fn as_id(&self) -> Option<Id> {
        match *self {
            Scalar::Unsigned(n) => Id::try_from(n).ok().filter(|n| (1..=MAX_ID).contains(n)),
            _ => None,
        }
    }
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Scalar::Null => "null".to_owned(),
            Scalar::Bool(v) => v.to_string(),
            Scalar::Unsigned(v) => v.to_string(),
            Scalar::Signed(v) => v.to_string(),
            // As JSON writes it (`1000.0`, `1.8446744073709552e+19`).
            Scalar::Float(v) => serde_json::Number::from_f64(*v).map_or_else(|| "null".to_owned(), |n| n.to_string()),
            Scalar::Text(v) => serde_json::to_string(v).unwrap_or_default(),
            Scalar::Array => return f.write_str("an array"),
            Scalar::Object => return f.write_str("an object"),
        };
        if text.chars().count() <= SHOWN_CHARS {
            f.write_str(&text)
        } else {
            write!(f, "{}…", text.chars().take(SHOWN_CHARS).collect::<String>())
        }
    }
}

fn parse_priority(value: Option<Scalar>) -> Result<Priority, ApiError> {
    const ALLOWED: &str = r#"one of "HIGH", "MEDIUM" or "LOW""#;
    match value {
        None => Err(ApiError::InvalidBody(format!("the field \"priority\" is missing; it must be {ALLOWED}"))),
        Some(Scalar::Text(s)) => Priority::parse(&s).ok_or_else(|| {
            ApiError::InvalidPriority(format!("priority is {}; it must be {ALLOWED}", Scalar::Text(s.clone())))
        }),
        Some(other) => Err(ApiError::InvalidBody(format!("priority is {other}; it must be a string, {ALLOWED}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn ok(body: &str, ids: &[Id], priority: Priority) {
        assert_eq!(parse(body.as_bytes(), 100), Ok(IngestRequest { ids: ids.to_vec(), priority }));
    }

    #[track_caller]
    fn err(body: &str, code: &str, detail: &str) {
        let error = parse(body.as_bytes(), 100).unwrap_err();
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
        assert_eq!(parse(b"ids=1&priority=HIGH", 100).unwrap_err().code(), "invalid_json");
        assert_eq!(parse(br#"{"ids": [1], "priority": "HIGH""#, 100).unwrap_err().code(), "invalid_json");
        assert_eq!(parse(b"\xff\xfe", 100).unwrap_err().code(), "invalid_json");
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
        let error = parse(format!(r#"{{"ids": [1], "priority": "{long}"}}"#).as_bytes(), 100).unwrap_err();
        assert!(error.to_string().len() < 120, "{error}");
    }

    #[test]
    fn ids_past_the_most_are_counted_and_checked_not_kept() {
        let body = |ids: &str| format!(r#"{{"ids": [{ids}], "priority": "LOW"}}"#);
        assert_eq!(parse(body("1, 2, 3").as_bytes(), 3).map(|r| r.ids), Ok(vec![1, 2, 3]));
        assert_eq!(parse(body("1, 2, 3, 4, 5").as_bytes(), 3), Err(ApiError::TooManyIds { count: 5, limit: 3 }));
        // A bad id past the most is still the error: the ids are wrong before they are many.
        let error = parse(body("1, 2, 3, 4, 0").as_bytes(), 3).unwrap_err();
        assert_eq!(error.to_string(), "ids[4] is 0; each id must be an integer from 1 to 1000000007");
        // Bad JSON after the ids is still bad JSON.
        assert_eq!(parse(br#"{"ids": [1, 2, 3, 4], "priority": "LOW""#, 3).unwrap_err().code(), "invalid_json");
    }

    /// Every value is read as JSON, even one nobody uses: a body that is not JSON all through
    /// (RFC 8259: numbers in range, UTF-8, no lone surrogate, nesting serde_json allows) is
    /// refused, not queued.
    #[test]
    fn values_nobody_reads_must_be_json_too() {
        let with = |extra: &str| format!(r#"{{"ids": [1], "priority": "HIGH", "x": {extra}}}"#);
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        for extra in ["1e400", r#""\ud800""#, &deep, r#"{"a": [1e400]}"#] {
            assert_eq!(parse(with(extra).as_bytes(), 100).unwrap_err().code(), "invalid_json", "{extra:.40}");
        }
        let not_utf8 = [&br#"{"ids": [1], "priority": "HIGH", "x": ""#[..], b"\xff\xfe", b"\"}"].concat();
        assert_eq!(parse(&not_utf8, 100).unwrap_err().code(), "invalid_json");
        assert_eq!(parse(with(r#"{"a": [1, "b", null]}"#).as_bytes(), 100).map(|r| r.ids), Ok(vec![1]));
        // Too many ids is said after the priority is checked.
        let error = parse(br#"{"ids": [1, 2, 3, 4], "priority": "BAD"}"#, 3).unwrap_err();
        assert_eq!(error.code(), "invalid_priority");
    }
}
