//! Reads each case's doc comment from `src/cases/*.rs` and writes the table
//! `case_rule(name)` that failure messages quote, so a failure states the
//! rule its case checks without the rule being written twice.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    let dir = Path::new("src/cases");
    println!("cargo:rerun-if-changed=src/cases");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("src/cases is readable")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .collect();
    files.sort();
    let mut table = String::from(
        "/// The rule the case `name` checks: the first paragraph of its doc\n\
         /// comment, or \"\" for a name that is not a case.\n\
         pub(crate) fn case_rule(name: &str) -> &'static str {\n    match name {\n",
    );
    for path in files {
        println!("cargo:rerun-if-changed={}", path.display());
        let source = std::fs::read_to_string(&path).expect("a case module is readable");
        let mut doc: Vec<String> = Vec::new();
        for line in source.lines() {
            let trimmed = line.trim_start();
            if let Some(text) = trimmed.strip_prefix("///") {
                doc.push(text.trim().to_owned());
                continue;
            }
            if trimmed.starts_with("#[") {
                continue;
            }
            if let Some(rest) = line.strip_prefix("pub async fn ") {
                if let Some((name, args)) = rest.split_once('(') {
                    if args.starts_with("ctx: &Ctx)") {
                        let rule = first_paragraph(&doc);
                        writeln!(table, "        {name:?} => {rule:?},")
                            .expect("writes to a String");
                    }
                }
            }
            doc.clear();
        }
    }
    table.push_str("        _ => \"\",\n    }\n}\n");
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    std::fs::write(Path::new(&out).join("case_rules.rs"), table).expect("OUT_DIR is writable");
}

/// The doc comment's first paragraph on one line, without Markdown link
/// brackets and backticks.
fn first_paragraph(doc: &[String]) -> String {
    let words: Vec<&str> = doc
        .iter()
        .take_while(|l| !l.is_empty())
        .map(String::as_str)
        .collect();
    words
        .join(" ")
        .replace("[`", "")
        .replace("`]", "")
        .replace('`', "")
}
