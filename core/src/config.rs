//! Loading YAML files with errors that name file, line and column, and
//! reporting every validation problem at once.

use serde::de::DeserializeOwned;
use std::path::Path;

/// `file:line:column: message` for a YAML error.
pub fn yaml_error(path: &Path, e: &serde_yaml_ng::Error) -> String {
    let msg = e.to_string();
    // The location leads; serde_yaml's own "at line … column …" would repeat it.
    let msg = msg
        .rsplit_once(" at line ")
        .map_or(msg.as_str(), |(m, _)| m);
    match e.location() {
        Some(l) => format!("{}:{}:{}: {msg}", path.display(), l.line(), l.column()),
        None => format!("{}: {msg}", path.display()),
    }
}

/// Reads and parses a YAML file into `T`; the first problem only (see
/// [`parse_all`] for every one).
pub fn load_yaml<T: DeserializeOwned>(path: &Path) -> Result<T, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_yaml_ng::from_str(&text).map_err(|e| yaml_error(path, &e))
}

/// Most problems one file reports.
const MAX_PROBLEMS: usize = 50;

/// Parses `text` into `T`, reporting every field serde refuses, each at its
/// own line and column: serde stops at the first bad field, so the line
/// of each one found is set aside (blanked, keeping the line numbers) and
/// the text parsed again, until it parses or no progress is made.
/// Returns what finally parsed (with the bad fields at their defaults)
/// beside the problems, so that semantic checks can still run on it.
pub fn parse_all<T: DeserializeOwned>(text: &str, path: &Path) -> (Option<T>, Vec<String>) {
    // Broken YAML (an unclosed `[`) first: read as typed fields, the text
    // after it would give a type error at a line that is not the fault.
    if let Err(e) = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text) {
        return (None, vec![yaml_error(path, &e)]);
    }
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let mut problems = Vec::new();
    let mut blanked = std::collections::HashSet::new();
    loop {
        let current = lines.join("\n");
        let e = match serde_yaml_ng::from_str::<T>(&current) {
            Ok(v) => return (Some(v), problems),
            Err(e) => e,
        };
        let msg = e.to_string();
        let msg = msg
            .rsplit_once(" at line ")
            .map_or(msg.as_str(), |(m, _)| m);
        let Some(loc) = e.location() else {
            problems.push(format!("{}: {msg}", path.display()));
            return (None, problems);
        };
        let line = loc.line();
        // A required field whose line was set aside is missing now: not the
        // file's problem. The item that lacks it is set aside whole (its
        // other fields were checked as far as serde got).
        let consequence = msg.contains("missing field") && !blanked.is_empty();
        if !consequence {
            problems.push(format!("{}:{line}:{}: {msg}", path.display(), loc.column()));
        }
        if problems.len() >= MAX_PROBLEMS || !blanked.insert(line) {
            return (None, problems);
        }
        let Some(first) = lines.get(line.saturating_sub(1)) else {
            return (None, problems);
        };
        let depth = first.len() - first.trim_start().len();
        // A problem at a key that opens a block (an action whose `kind` is
        // unknown) is the block's: its fields set aside with it, or they
        // would read as nonsense fields of the block above.
        let opens_block = first.trim_end().ends_with(':');
        let mut i = line.saturating_sub(1);
        loop {
            lines[i] = String::new();
            i += 1;
            let deeper = lines.get(i).is_some_and(|l| {
                let t = l.trim();
                t.is_empty() || t.starts_with('#') || l.len() - l.trim_start().len() > depth
            });
            if !(consequence || opens_block) || !deeper {
                break;
            }
        }
    }
}

/// Where the field `dotted` (`mqtt.port`, `services[1].name`) is written
/// in block-style YAML `text`: its 1-based line and column.
pub fn locate_field(text: &str, dotted: &str) -> Option<(usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let content = |i: usize| {
        let t = lines[i].trim();
        !t.is_empty() && !t.starts_with('#')
    };
    let indent = |i: usize| lines[i].len() - lines[i].trim_start().len();
    // Where a line's key starts (after a list item's `- `).
    let key_at = |i: usize| {
        let t = lines[i].trim_start();
        indent(i) + if t.starts_with("- ") { 2 } else { 0 }
    };
    let (mut from, mut to, mut found) = (0usize, lines.len(), None);
    for part in dotted.split('.') {
        let (key, index) = match part.split_once('[') {
            Some((k, rest)) => (k, Some(rest.trim_end_matches(']').parse::<usize>().ok()?)),
            None => (part, None),
        };
        let child = (from..to).find(|&i| content(i)).map(key_at)?;
        let at = (from..to).find(|&i| {
            content(i)
                && key_at(i) == child
                && lines[i]
                    .trim_start()
                    .trim_start_matches("- ")
                    .starts_with(&format!("{key}:"))
        })?;
        found = Some((at + 1, key_at(at) + 1));
        let end = (at + 1..to)
            .find(|&i| {
                content(i)
                    && key_at(i) <= key_at(at)
                    && !(lines[i].trim_start().starts_with("- ") && indent(i) >= key_at(at))
            })
            .unwrap_or(to);
        (from, to) = (at + 1, end);
        if let Some(n) = index {
            let item_indent = (from..to)
                .filter(|&i| content(i) && lines[i].trim_start().starts_with("- "))
                .map(indent)
                .min()?;
            let items: Vec<usize> = (from..to)
                .filter(|&i| {
                    content(i)
                        && indent(i) == item_indent
                        && lines[i].trim_start().starts_with("- ")
                })
                .collect();
            let start = *items.get(n)?;
            found = Some((start + 1, indent(start) + 1));
            (from, to) = (start, items.get(n + 1).copied().unwrap_or(to));
        }
    }
    found
}

/// Loads `path` (or `T::default()` without one), validates it with
/// `validate`, and returns every problem prefixed with the file name.
pub fn load_validated<T: DeserializeOwned + Default>(
    path: Option<&Path>,
    validate: impl Fn(&T) -> Vec<String>,
) -> Result<T, Vec<String>> {
    let (config, text) = match path {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).map_err(|e| vec![format!("{}: {e}", p.display())])?;
            match parse_all::<T>(&text, p) {
                (Some(c), problems) if problems.is_empty() => (c, text),
                (_, problems) => return Err(problems),
            }
        }
        None => (T::default(), String::new()),
    };
    let name = path
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "defaults".into());
    // `field: what is wrong` goes to the field's own line when it is written.
    let problems: Vec<String> = validate(&config)
        .into_iter()
        .map(|p| {
            let field = p.split_once(':').map(|(f, _)| f.trim()).unwrap_or("");
            match locate_field(&text, field).filter(|_| !field.contains(' ')) {
                Some((line, col)) => format!("{name}:{line}:{col}: {p}"),
                None => format!("{name}: {p}"),
            }
        })
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
        match rendered(&config) {
            Ok(text) => print!("{text}"),
            Err(e) => exit_with(&[format!("rendering the config: {e}")]),
        }
        return None;
    }
    Some(config)
}

/// Fields whose values are secrets: `--print-config` shows that they are
/// set, never what they are.
const SECRET_FIELDS: [&str; 5] = [
    "api_token",
    "password",
    "access_key_id",
    "secret_access_key",
    "session_token",
];

/// `config` as YAML with every secret field that is set shown as `<redacted>`.
pub fn rendered<T: serde::Serialize>(config: &T) -> Result<String, serde_yaml_ng::Error> {
    fn redact(v: &mut serde_yaml_ng::Value) {
        match v {
            serde_yaml_ng::Value::Mapping(m) => {
                for (k, v) in m.iter_mut() {
                    let secret = k.as_str().is_some_and(|k| SECRET_FIELDS.contains(&k));
                    if secret && !v.is_null() {
                        *v = serde_yaml_ng::Value::String("<redacted>".into());
                    } else {
                        redact(v);
                    }
                }
            }
            serde_yaml_ng::Value::Sequence(s) => s.iter_mut().for_each(redact),
            _ => {}
        }
    }
    let mut v = serde_yaml_ng::to_value(config)?;
    redact(&mut v);
    serde_yaml_ng::to_string(&v)
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
        assert!(e[1].ends_with("c.yaml:2:1: b: zero"), "{e:?}");
        assert!(load_validated::<C>(None, |_| vec![]).is_ok());
    }

    #[test]
    fn every_bad_field_is_reported_at_its_own_line_not_only_the_first() {
        let text = "a: x\nb: 2\nzzz: 1\nb2: 3\n";
        let (parsed, e) = parse_all::<C>(text, Path::new("c.yaml"));
        assert_eq!(parsed.map(|c| c.b), Some(2), "the rest still parses");
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(e[0].starts_with("c.yaml:1:4: a: invalid type"), "{e:?}");
        assert!(e[1].starts_with("c.yaml:3:1: unknown field `zzz`"), "{e:?}");
        assert!(e[2].starts_with("c.yaml:4:1: unknown field `b2`"), "{e:?}");
        let (ok, none) = parse_all::<C>("a: 1\n", Path::new("c.yaml"));
        assert_eq!((ok.map(|c| c.a), none.len()), (Some(1), 0));
    }

    #[test]
    fn printed_configs_show_that_a_secret_is_set_not_what_it_is() {
        let settings = crate::mqtt::MqttSettings {
            password: Some("hunter2".into()),
            ..Default::default()
        };
        #[derive(serde::Serialize)]
        struct Cfg {
            api_token: Option<String>,
            unset: Option<String>,
            mqtt: crate::mqtt::MqttSettings,
        }
        let text = rendered(&Cfg {
            api_token: Some("s3cret-token".into()),
            unset: None,
            mqtt: settings,
        })
        .unwrap();
        assert!(
            !text.contains("hunter2") && !text.contains("s3cret-token"),
            "{text}"
        );
        assert!(text.contains("api_token: <redacted>"), "{text}");
        assert!(text.contains("password: <redacted>"), "{text}");
        assert!(text.contains("unset: null"), "{text}");
    }

    #[test]
    fn broken_yaml_is_reported_where_it_breaks_not_as_a_type_error() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct P {
            when: Vec<String>,
            for_secs: f64,
        }
        let text = "when: [\"up == 0\", \"http_ok == 0\"\nfor_secs: 0\n";
        let (parsed, problems) = parse_all::<P>(text, Path::new("p.yaml"));
        assert!(parsed.is_none());
        let direct = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text).unwrap_err();
        assert_eq!(problems, [yaml_error(Path::new("p.yaml"), &direct)]);
        assert!(!problems[0].contains("invalid type"), "{problems:?}");
    }

    #[test]
    fn fields_are_found_by_their_dotted_path() {
        let text = "site: s1\nmqtt:\n  host: h\n  port: 0\nrails:\n  port: 5\nservices:\n  - name: a\n    argv: [x]\n  - name: b\n    health_url: ftp://x\n";
        assert_eq!(locate_field(text, "site"), Some((1, 1)));
        assert_eq!(locate_field(text, "mqtt.port"), Some((4, 3)));
        assert_eq!(locate_field(text, "rails.port"), Some((6, 3)));
        assert_eq!(locate_field(text, "services[1].health_url"), Some((11, 5)));
        assert_eq!(locate_field(text, "services[0].name"), Some((8, 5)));
        assert_eq!(locate_field(text, "nope"), None);
    }
}
