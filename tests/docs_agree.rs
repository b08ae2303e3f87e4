//! The crate's description (Cargo.toml), the README's first paragraph and its status
//! paragraph say the same about each method family, and what they say matches the code:
//! a family without its source module is "planned" in every clause that names it, and one
//! with it is not (issue 10). When a family lands, update all three texts.

use std::path::Path;

/// (a word naming the family in the texts, the module that implements it under `src/`)
const FAMILIES: [(&str, &str); 3] = [
    ("compact", "filters"),
    ("distillation", "distill"),
    ("conditional", "dynamic"),
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn implemented(module: &str) -> bool {
    let src = root().join("src");
    src.join(module).is_dir() || src.join(format!("{module}.rs")).is_file()
}

/// The texts to check, each with its name, lines joined.
fn texts() -> Vec<(&'static str, String)> {
    let cargo = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let description = cargo
        .lines()
        .find_map(|l| l.strip_prefix("description = "))
        .expect("a description in Cargo.toml")
        .to_string();
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let paragraphs: Vec<String> = readme
        .split("\n\n")
        .map(|p| p.lines().collect::<Vec<_>>().join(" "))
        .collect();
    let first = paragraphs
        .iter()
        .find(|p| !p.starts_with('#'))
        .expect("a first paragraph")
        .clone();
    let status = paragraphs
        .iter()
        .find(|p| p.starts_with("**Status.**"))
        .expect("a status paragraph in the README")
        .clone();
    vec![
        ("Cargo.toml description", description),
        ("README first paragraph", first),
        ("README status paragraph", status),
    ]
}

#[test]
fn description_and_readme_match_the_code() {
    for (word, module) in FAMILIES {
        let done = implemented(module);
        for (name, text) in texts() {
            let clauses: Vec<&str> = text
                .split(['.', ';', '(', ')'])
                .filter(|c| c.to_lowercase().contains(word))
                .collect();
            for clause in clauses {
                let planned = clause.contains("planned");
                assert!(
                    planned != done,
                    "{name}: \"{clause}\" — src/{module} {}, so this should {}say \"planned\"",
                    if done { "exists" } else { "does not exist" },
                    if done { "not " } else { "" },
                );
            }
        }
    }
}
