//! `anykv txn`: a multi-key transaction from arguments or JSON, as
//! `etcdctl txn` runs one.
//!
//! Compares (`--if`) and operations (`--then`, `--else`) are parsed before
//! the store is opened, so a malformed one is a usage error (exit 2) with
//! nothing sent. The [`TXN_HELP`] text is the grammar and the JSON schema.
//!
//! ```
//! use anykv::{Compare, TxnOp};
//! use anykv_cli::txn::{parse_compare, parse_op};
//! assert_eq!(parse_compare("rev(jobs/7) = 5"), Ok(Compare::revision("jobs/7", 5)));
//! assert_eq!(parse_compare("absent(lock)"), Ok(Compare::absent("lock")));
//! assert_eq!(parse_op("put jobs/7 two words"), Ok(TxnOp::put("jobs/7", "two words")));
//! assert_eq!(parse_op("del jobs/7"), Ok(TxnOp::delete("jobs/7")));
//! assert!(parse_compare("rev(a) = x").is_err());
//! ```

use std::path::Path;
use std::time::Duration;

use anykv::{Bytes, Compare, LeaseId, PutOptions, Txn, TxnOp, TxnOpResult, TxnResponse};
use base64::Engine;
use serde_json::{json, Map, Value};

use crate::cli::{parse_duration, TxnArgs};
use crate::connect::{close_store, open_store, read_value};
use crate::exit::{CliError, CONDITION_FAILED};
use crate::output::{display_value, json_value_fields, Out};
use crate::txn_syntax::key;
pub use crate::txn_syntax::{parse_compare, parse_op, TXN_HELP};

/// The transaction the arguments describe (`--if`, `--then`, `--else`).
pub fn from_args(args: &TxnArgs) -> Txn {
    let mut txn = Txn::new();
    txn.compares = args.compares.clone();
    txn.success = args.success.clone();
    txn.failure = args.failure.clone();
    txn
}

fn object<'a>(value: &'a Value, what: &str) -> Result<&'a Map<String, Value>, String> {
    value
        .as_object()
        .ok_or_else(|| format!("{what}: expected a JSON object, got {value}"))
}

fn only(o: &Map<String, Value>, allowed: &[&str], what: &str) -> Result<(), String> {
    match o.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(unknown) => Err(format!(
            "{what}: unknown member {unknown:?} (expected {})",
            allowed.join(", ")
        )),
        None => Ok(()),
    }
}

fn json_key(o: &Map<String, Value>, what: &str) -> Result<String, String> {
    match o.get("key") {
        Some(Value::String(k)) => key(k).map_err(|e| format!("{what}: {e}")),
        _ => Err(format!("{what}: \"key\" must be a string")),
    }
}

fn json_bytes(o: &Map<String, Value>, member: &str, what: &str) -> Result<Bytes, String> {
    let Some(Value::String(text)) = o.get(member) else {
        return Err(format!("{what}: {member:?} must be a string"));
    };
    match o.get("encoding").map(Value::as_str) {
        None | Some(Some("utf8")) => Ok(Bytes::from(text.clone())),
        Some(Some("base64")) => base64::engine::general_purpose::STANDARD
            .decode(text)
            .map(Bytes::from)
            .map_err(|e| format!("{what}: {member:?} is not base64: {e}")),
        Some(other) => Err(format!(
            "{what}: \"encoding\" must be \"utf8\" or \"base64\", not {other:?}"
        )),
    }
}

fn json_compare(value: &Value, what: &str) -> Result<Compare, String> {
    let o = object(value, what)?;
    only(
        o,
        &["key", "revision", "absent", "present", "value", "encoding"],
        what,
    )?;
    let k = json_key(o, what)?;
    let conditions = ["revision", "absent", "present", "value"]
        .iter()
        .filter(|m| o.contains_key(**m))
        .count();
    if conditions != 1 {
        return Err(format!(
            "{what}: needs exactly one of \"revision\", \"absent\", \"present\", \"value\""
        ));
    }
    if let Some(revision) = o.get("revision") {
        return revision
            .as_u64()
            .map(|n| Compare::revision(k, n))
            .ok_or_else(|| format!("{what}: \"revision\" must be a whole number"));
    }
    for (member, make) in [
        ("absent", Compare::absent as fn(String) -> Compare),
        ("present", Compare::present),
    ] {
        if let Some(flag) = o.get(member) {
            return match flag {
                Value::Bool(true) => Ok(make(k)),
                _ => Err(format!("{what}: {member:?} must be true")),
            };
        }
    }
    Ok(Compare::value(k, json_bytes(o, "value", what)?))
}

fn json_op(value: &Value, what: &str) -> Result<TxnOp, String> {
    let o = object(value, what)?;
    if o.len() != 1 {
        return Err(format!(
            "{what}: expected one of {{\"put\": ..}}, {{\"delete\": ..}}, {{\"get\": ..}}"
        ));
    }
    let (name, body) = o.iter().next().ok_or_else(|| format!("{what}: empty"))?;
    let what = format!("{what}.{name}");
    let b = object(body, &what)?;
    match name.as_str() {
        "get" | "delete" => {
            only(b, &["key"], &what)?;
            let k = json_key(b, &what)?;
            Ok(if name == "get" {
                TxnOp::get(k)
            } else {
                TxnOp::delete(k)
            })
        }
        "put" => {
            only(b, &["key", "value", "encoding", "ttl", "lease"], &what)?;
            let k = json_key(b, &what)?;
            let value = json_bytes(b, "value", &what)?;
            let mut options = PutOptions::new();
            match b.get("ttl") {
                None => {}
                Some(Value::String(t)) => {
                    let ttl: Duration =
                        parse_duration(t).map_err(|e| format!("{what}: \"ttl\": {e}"))?;
                    options = options.with_ttl(ttl);
                }
                Some(_) => return Err(format!("{what}: \"ttl\" must be a string such as \"10s\"")),
            }
            match b.get("lease") {
                None => {}
                Some(id) => {
                    let id = id
                        .as_u64()
                        .ok_or_else(|| format!("{what}: \"lease\" must be a lease id"))?;
                    options = options.with_lease(LeaseId(id));
                }
            }
            options.validate().map_err(|e| format!("{what}: {e}"))?;
            Ok(TxnOp::put_with(k, value, options))
        }
        other => Err(format!(
            "{what}: unknown operation {other:?} (expected put, delete or get)"
        )),
    }
}

/// Parses a transaction from JSON; see [`TXN_HELP`] for the schema.
///
/// ```
/// use anykv::{Compare, TxnOp};
/// let txn = anykv_cli::txn::from_json(
///     br#"{"compare": [{"key": "a", "absent": true}],
///          "success": [{"put": {"key": "a", "value": "1"}}],
///          "failure": [{"get": {"key": "a"}}]}"#,
/// )
/// .unwrap();
/// assert_eq!(txn.compares, [Compare::absent("a")]);
/// assert_eq!(txn.success, [TxnOp::put("a", "1")]);
/// assert_eq!(txn.failure, [TxnOp::get("a")]);
/// assert!(anykv_cli::txn::from_json(br#"{"compare": [{"key": "a"}]}"#).is_err());
/// ```
pub fn from_json(input: &[u8]) -> Result<Txn, String> {
    let value: Value =
        serde_json::from_slice(input).map_err(|e| format!("the input is not JSON: {e}"))?;
    let o = object(&value, "the transaction")?;
    only(o, &["compare", "success", "failure"], "the transaction")?;
    let list = |member: &str| -> Result<&[Value], String> {
        match o.get(member) {
            None => Ok(&[]),
            Some(Value::Array(items)) => Ok(items),
            Some(_) => Err(format!("{member:?} must be an array")),
        }
    };
    let mut txn = Txn::new();
    for (i, c) in list("compare")?.iter().enumerate() {
        txn.compares
            .push(json_compare(c, &format!("compare[{i}]"))?);
    }
    for (i, op) in list("success")?.iter().enumerate() {
        txn.success.push(json_op(op, &format!("success[{i}]"))?);
    }
    for (i, op) in list("failure")?.iter().enumerate() {
        txn.failure.push(json_op(op, &format!("failure[{i}]"))?);
    }
    Ok(txn)
}

/// A compare written back in the `--if` grammar (values as in
/// [`display_value`]).
pub fn compare_text(compare: &Compare) -> String {
    match compare {
        Compare::Revision { key, revision } => format!("rev({key}) = {revision}"),
        Compare::Absent { key } => format!("absent({key})"),
        Compare::Present { key } => format!("present({key})"),
        Compare::Value { key, value } => format!("value({key}) = {}", display_value(value)),
    }
}

/// The text lines of a response; see [`TXN_HELP`].
pub fn response_lines(txn: &Txn, response: &TxnResponse) -> Vec<String> {
    let mut lines = Vec::new();
    if response.succeeded {
        lines.push("SUCCEEDED".to_owned());
    } else {
        match response
            .failed_compare
            .and_then(|i| Some((i, txn.compares.get(i)?)))
        {
            Some((i, c)) => lines.push(format!("FAILED\tcompare {i}\t{}", compare_text(c))),
            None => lines.push("FAILED".to_owned()),
        }
    }
    if let Some(revision) = response.revision {
        lines.push(format!("revision\t{revision}"));
    }
    let ops = if response.succeeded {
        &txn.success
    } else {
        &txn.failure
    };
    for (op, result) in ops.iter().zip(&response.results) {
        lines.push(match result {
            TxnOpResult::Put { revision } => format!("PUT\t{}\t{revision}", op.key()),
            TxnOpResult::Delete { existed } => format!(
                "DELETE\t{}\t{}",
                op.key(),
                if *existed { "deleted" } else { "absent" }
            ),
            TxnOpResult::Get(Some(pair)) => format!(
                "GET\t{}\t{}\t{}",
                pair.key,
                pair.revision,
                display_value(&pair.value)
            ),
            TxnOpResult::Get(None) => format!("GET\t{}", op.key()),
        });
    }
    lines
}

/// The JSON of a response; see [`TXN_HELP`].
pub fn response_json(txn: &Txn, response: &TxnResponse) -> Value {
    let ops = if response.succeeded {
        &txn.success
    } else {
        &txn.failure
    };
    let results: Vec<Value> = ops
        .iter()
        .zip(&response.results)
        .map(|(op, result)| match result {
            TxnOpResult::Put { revision } => {
                json!({"op": "put", "key": op.key(), "revision": revision})
            }
            TxnOpResult::Delete { existed } => {
                json!({"op": "delete", "key": op.key(), "existed": existed})
            }
            TxnOpResult::Get(pair) => {
                let mut o = Map::new();
                o.insert("op".into(), json!("get"));
                o.insert("key".into(), json!(op.key()));
                o.insert("found".into(), json!(pair.is_some()));
                if let Some(pair) = pair {
                    json_value_fields(&pair.value, &mut o);
                    o.insert("revision".into(), json!(pair.revision));
                }
                Value::Object(o)
            }
        })
        .collect();
    json!({
        "succeeded": response.succeeded,
        "failed_compare": response.failed_compare,
        "revision": response.revision,
        "results": results,
    })
}

/// `anykv txn`.
pub async fn txn(url: &str, args: TxnArgs, out: Out) -> Result<(), CliError> {
    let txn = match &args.json_in {
        Some(path) => {
            let input = read_value(Path::new(path)).await?;
            from_json(&input).map_err(|e| CliError::usage(format!("--json-in: {e}")))?
        }
        None => from_args(&args),
    };
    let store = open_store(url).await?;
    let result = async {
        // Checked against the backend's limits before anything is sent.
        let txn = txn.validate(store.capabilities())?;
        let response = store.txn(txn.clone()).await?;
        Ok::<_, anykv::Error>((txn, response))
    }
    .await;
    close_store(&store).await;
    let (txn, response) = result.map_err(|e| CliError::from(e).context("txn"))?;
    if out.json {
        out.json(&response_json(&txn, &response))?;
    } else {
        for line in response_lines(&txn, &response) {
            out.line(&line)?;
        }
    }
    if response.succeeded {
        Ok(())
    } else {
        Err(CliError::quiet(CONDITION_FAILED))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_parse() {
        assert_eq!(
            parse_compare("revision( a/b ) =7"),
            Ok(Compare::revision("a/b", 7))
        );
        assert_eq!(parse_compare("present(/a/)"), Ok(Compare::present("a")));
        assert_eq!(
            parse_compare("value(a) =  two words "),
            Ok(Compare::value("a", "two words"))
        );
        assert_eq!(parse_compare("value(a) ="), Ok(Compare::value("a", "")));
        for bad in [
            "absent(a) = 1",
            "rev(a)",
            "rev(a) = -1",
            "size(a) = 1",
            "absent a",
            "absent(a//b)",
            "",
        ] {
            assert!(parse_compare(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn operations_parse() {
        assert_eq!(parse_op("get a"), Ok(TxnOp::get("a")));
        assert_eq!(parse_op("delete a"), Ok(TxnOp::delete("a")));
        assert_eq!(parse_op("put a  x "), Ok(TxnOp::put("a", " x ")));
        assert_eq!(parse_op("put a "), Ok(TxnOp::put("a", "")));
        assert_eq!(
            parse_op("put --ttl 10s a x"),
            Ok(TxnOp::put_with(
                "a",
                "x",
                PutOptions::new().with_ttl(Duration::from_secs(10))
            ))
        );
        assert_eq!(
            parse_op("put --lease 42 a x"),
            Ok(TxnOp::put_with(
                "a",
                "x",
                PutOptions::new().with_lease(LeaseId(42))
            ))
        );
        for bad in [
            "put a",
            "put --ttl 10s a",
            "put --ttl nope a x",
            "put --lease x a v",
            "put --ttl 1s --lease 3 a v",
            "get",
            "get a b",
            "del",
            "rm a",
            "get a//b",
        ] {
            assert!(parse_op(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn json_parses_and_refuses_what_it_does_not_know() {
        let txn = from_json(
            br#"{"compare": [{"key": "a", "revision": 3}, {"key": "b", "present": true},
                             {"key": "c", "value": "AAE=", "encoding": "base64"}],
                 "success": [{"put": {"key": "a", "value": "x", "ttl": "5s"}},
                             {"delete": {"key": "b"}}],
                 "failure": [{"put": {"key": "d", "value": "y", "lease": 7}}]}"#,
        )
        .expect("a transaction");
        assert_eq!(
            txn.compares,
            [
                Compare::revision("a", 3),
                Compare::present("b"),
                Compare::value("c", Bytes::from_static(&[0, 1]))
            ]
        );
        assert_eq!(
            txn.success,
            [
                TxnOp::put_with("a", "x", PutOptions::new().with_ttl(Duration::from_secs(5))),
                TxnOp::delete("b")
            ]
        );
        assert_eq!(
            txn.failure,
            [TxnOp::put_with(
                "d",
                "y",
                PutOptions::new().with_lease(LeaseId(7))
            )]
        );
        assert_eq!(from_json(b"{}"), Ok(Txn::new()));
        for bad in [
            &b"not json"[..],
            br#"[]"#,
            br#"{"compares": []}"#,
            br#"{"compare": [{"key": "a", "absent": true, "present": true}]}"#,
            br#"{"compare": [{"key": "a", "absent": false}]}"#,
            br#"{"compare": [{"key": "a", "revision": "5"}]}"#,
            br#"{"success": [{"put": {"key": "a"}}]}"#,
            br#"{"success": [{"put": {"key": "a", "value": "x", "colour": 1}}]}"#,
            br#"{"success": [{"get": {"key": "a"}, "delete": {"key": "b"}}]}"#,
            br#"{"success": [{"rm": {"key": "a"}}]}"#,
            br#"{"success": [{"get": {"key": "a//b"}}]}"#,
            br#"{"success": [{"put": {"key": "a", "value": "!", "encoding": "base64"}}]}"#,
            br#"{"failure": {"get": {"key": "a"}}}"#,
        ] {
            assert!(
                from_json(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
