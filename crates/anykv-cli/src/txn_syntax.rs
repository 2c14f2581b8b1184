//! The `anykv txn` argument syntax: `--if` compares and `--then`/`--else`
//! operations, and the command's help text.

use anykv::{Bytes, Compare, LeaseId, PutOptions, TxnOp};

/// The grammar of `--if`, `--then` and `--else`, the JSON schema of
/// `--json-in`, and the output, as `anykv txn --help` shows them.
pub const TXN_HELP: &str = "\
Run a transaction: if every --if compare holds, the --then operations run, else the --else \
operations; atomically, all or nothing, every write at one revision.

Compares (--if, any number, any keys):
  rev(KEY) = N        KEY is present at revision N (also revision(KEY) = N)
  absent(KEY)         KEY is absent
  present(KEY)        KEY is present
  value(KEY) = VALUE  KEY holds exactly VALUE (the text after `=`, spaces around it trimmed)
Operations (--then, --else; each key at most once per branch):
  put [--ttl DURATION] [--lease ID] KEY VALUE   VALUE is the rest of the line, as is
  del KEY                                       (also delete KEY)
  get KEY                                       KEY as it was before the transaction

Or the whole transaction as JSON with --json-in PATH (`-` for standard input):
  {\"compare\": [{\"key\": K, \"revision\": N} | {\"key\": K, \"absent\": true}
               | {\"key\": K, \"present\": true} | {\"key\": K, \"value\": V}],
   \"success\": [{\"put\": {\"key\": K, \"value\": V, \"ttl\": \"10s\", \"lease\": ID}}
               | {\"delete\": {\"key\": K}} | {\"get\": {\"key\": K}}],
   \"failure\": [... as success]}
Every member is optional except the keys and values named; \"ttl\" and \"lease\" are optional.
A value V is UTF-8 text; for other bytes give its base64 and add \"encoding\": \"base64\"
to the same object. Unknown members are refused.

Output: `SUCCEEDED`, or `FAILED<TAB>compare I<TAB>COMPARE` naming the first compare that did \
not hold (I counts from 0); then `revision<TAB>N` when the branch wrote; then one line per \
operation of the branch that ran: `PUT<TAB>KEY<TAB>REVISION`, `DELETE<TAB>KEY<TAB>deleted` or \
`DELETE<TAB>KEY<TAB>absent`, `GET<TAB>KEY<TAB>REVISION<TAB>VALUE`, or `GET<TAB>KEY` when \
absent. --json prints {\"succeeded\", \"failed_compare\", \"revision\", \"results\": \
[{\"op\": \"put\", \"key\", \"revision\"} | {\"op\": \"delete\", \"key\", \"existed\"} | \
{\"op\": \"get\", \"key\", \"found\", \"value\", \"encoding\", \"revision\"}]}.

Exit status: 0 when the compares held, 5 when one did not (the --else branch ran and its \
results are printed), 2 for a malformed compare, operation or JSON (nothing is sent), 1 when \
the backend has no transactions, 3 when the outcome is unknown (the server did not answer: \
the transaction may have been applied).";

/// Splits `name(KEY)rest` into its name, key and what follows `)`.
fn call(text: &str) -> Option<(&str, &str, &str)> {
    let (name, rest) = text.split_once('(')?;
    let close = rest.rfind(')')?;
    Some((
        name.trim(),
        rest[..close].trim(),
        rest[close + 1..].trim_start(),
    ))
}

/// A key, checked against the key rules.
pub(crate) fn key(text: &str) -> Result<String, String> {
    anykv::key::normalize_key(text).map_err(|e| e.to_string())
}

/// Parses one `--if` compare; see [`TXN_HELP`].
pub fn parse_compare(text: &str) -> Result<Compare, String> {
    let expected = "expected rev(KEY) = N, absent(KEY), present(KEY) or value(KEY) = VALUE";
    let Some((name, k, rest)) = call(text.trim()) else {
        return Err(format!("{text:?}: {expected}"));
    };
    let k = key(k)?;
    let operand = rest.strip_prefix('=').map(str::trim);
    match (name, operand) {
        ("absent", None) if rest.is_empty() => Ok(Compare::absent(k)),
        ("present", None) if rest.is_empty() => Ok(Compare::present(k)),
        ("rev" | "revision", Some(n)) => n
            .parse::<u64>()
            .map(|n| Compare::revision(k, n))
            .map_err(|_| format!("{text:?}: the revision {n:?} is not a number")),
        ("value", Some(v)) => Ok(Compare::value(k, Bytes::from(v.to_owned()))),
        _ => Err(format!("{text:?}: {expected}")),
    }
}

/// Parses one `--then` or `--else` operation; see [`TXN_HELP`].
pub fn parse_op(text: &str) -> Result<TxnOp, String> {
    let expected = "expected put [--ttl D] [--lease ID] KEY VALUE, del KEY or get KEY";
    let text = text.trim_start();
    let (word, rest) = text.split_once(' ').unwrap_or((text, ""));
    match word {
        "get" | "del" | "delete" => {
            let k = rest.trim();
            if k.is_empty() || k.contains(char::is_whitespace) {
                return Err(format!("{text:?}: {expected}"));
            }
            let k = key(k)?;
            Ok(if word == "get" {
                TxnOp::get(k)
            } else {
                TxnOp::delete(k)
            })
        }
        "put" => {
            let mut options = PutOptions::new();
            let mut rest = rest.trim_start();
            loop {
                let (first, after) = rest.split_once(' ').unwrap_or((rest, ""));
                let (arg, after) = match first {
                    "--ttl" | "--lease" => {
                        let after = after.trim_start();
                        let (arg, after) = after.split_once(' ').unwrap_or((after, ""));
                        (arg, after.trim_start())
                    }
                    _ => break,
                };
                if first == "--ttl" {
                    let ttl = anykv::parse_duration_param("--ttl", arg)
                        .map_err(|e| format!("{text:?}: --ttl {arg:?}: {e}"))?;
                    options = options.with_ttl(ttl);
                } else {
                    let id = arg
                        .parse::<u64>()
                        .map_err(|_| format!("{text:?}: --lease {arg:?} is not a lease id"))?;
                    options = options.with_lease(LeaseId(id));
                }
                rest = after;
            }
            let Some((k, value)) = rest.split_once(' ') else {
                return Err(format!("{text:?}: {expected}"));
            };
            options.validate().map_err(|e| format!("{text:?}: {e}"))?;
            Ok(TxnOp::put_with(key(k)?, value.to_owned(), options))
        }
        _ => Err(format!("{text:?}: {expected}")),
    }
}
