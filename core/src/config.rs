//! Loading YAML files with errors that name file, line and column, and
//! reporting every validation problem at once.

use serde::de::DeserializeOwned;
use std::path::Path;

/// `file:line:column: message` for a YAML error.
pub fn yaml_error(path: &Path, e: &serde_yaml_ng::Error) -> String {
    match e.location() {
        Some(l) => format!("{}:{}:{}: {e}", path.display(), l.line(), l.column()),
        None => format!("{}: {e}", path.display()),
    }
}

/// Reads and parses a YAML file into `T`.
pub fn load_yaml<T: DeserializeOwned>(path: &Path) -> Result<T, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_yaml_ng::from_str(&text).map_err(|e| yaml_error(path, &e))
}

/// Loads `path` (or `T::default()` without one), validates it with
/// `validate`, and returns every problem prefixed with the file name.
pub fn load_validated<T: DeserializeOwned + Default>(
    path: Option<&Path>,
    validate: impl Fn(&T) -> Vec<String>,
) -> Result<T, Vec<String>> {
    let config = match path {
        Some(p) => load_yaml(p).map_err(|e| vec![e])?,
        None => T::default(),
    };
    let name = path
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "defaults".into());
    let problems: Vec<String> = validate(&config)
        .into_iter()
        .map(|p| format!("{name}: {p}"))
        .collect();
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(problems)
    }
}

/// The common start of a role binary: loads and validates `path` (printing
/// every problem and exiting 2 on any), applies command-line overrides, and
/// handles `--print-config`. Returns `None` when the config was printed.
pub fn prepare<T: DeserializeOwned + Default + serde::Serialize>(
    path: Option<&Path>,
    validate: impl Fn(&T) -> Vec<String>,
    overrides: impl FnOnce(&mut T),
    print: bool,
) -> Option<T> {
    let mut config = load_validated(path, validate).unwrap_or_else(|p| exit_with(&p));
    overrides(&mut config);
    if print {
        match serde_yaml_ng::to_string(&config) {
            Ok(text) => print!("{text}"),
            Err(e) => exit_with(&[format!("rendering the config: {e}")]),
        }
        return None;
    }
    Some(config)
}

/// Prints every problem as `error: …` and exits with status 2.
pub fn exit_with(problems: &[String]) -> ! {
    for p in problems {
        eprintln!("error: {p}");
    }
    eprintln!("{} problem(s).", problems.len());
    std::process::exit(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Default, Debug)]
    #[serde(deny_unknown_fields, default)]
    struct C {
        a: u32,
        b: u32,
    }

    #[test]
    fn reports_syntax_with_location_and_every_semantic_problem() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.yaml");
        std::fs::write(&p, "a: 1\nc: 2\n").unwrap();
        let e = load_validated::<C>(Some(&p), |_| vec![]).unwrap_err();
        assert!(e[0].contains("c.yaml:2:"), "{e:?}");
        std::fs::write(&p, "a: 0\nb: 0\n").unwrap();
        let e = load_validated::<C>(Some(&p), |c| {
            let mut v = vec![];
            if c.a == 0 {
                v.push("a: zero".to_string())
            }
            if c.b == 0 {
                v.push("b: zero".to_string())
            }
            v
        })
        .unwrap_err();
        assert_eq!(e.len(), 2);
        assert!(e[1].ends_with("c.yaml: b: zero"), "{e:?}");
        assert!(load_validated::<C>(None, |_| vec![]).is_ok());
    }
}
