//! Hot reload: polls a file and hands back its text when it changed. Polling
//! the content (not inotify, not the mtime) sees edits made in place, through
//! a rename, or on a file system without change events alike.

use std::path::{Path, PathBuf};

/// One watched file.
#[derive(Debug)]
pub struct FileWatch {
    path: PathBuf,
    last: Option<String>,
}

/// What a poll found.
#[derive(Debug, PartialEq)]
pub enum Change {
    /// The file's new text.
    Changed(String),
    /// It could not be read (gone, no permission): keep what is in force.
    Unreadable(String),
}

impl FileWatch {
    /// Watches `path`, whose text in force is `current`.
    pub fn new(path: &Path, current: Option<String>) -> Self {
        Self {
            path: path.to_path_buf(),
            last: current,
        }
    }

    /// Watches the file a role was started with, its text now taken as the
    /// one in force; `None` when no file was given (an empty path).
    pub fn started_with(path: &Path) -> Option<Self> {
        let given = !path.as_os_str().is_empty();
        given.then(|| Self::new(path, std::fs::read_to_string(path).ok()))
    }

    /// Forgets the text last seen, so that the next poll hands it back
    /// again (an edit refused for something that may since have changed).
    pub fn forget(&mut self) {
        self.last = None;
    }

    /// The watched path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A changed file parsed with `parse`; an unreadable one is an error
    /// too. `None` when nothing changed.
    pub fn reload<T>(
        &mut self,
        parse: impl FnOnce(&str, &Path) -> Result<T, Vec<String>>,
    ) -> Option<Result<T, Vec<String>>> {
        match self.poll()? {
            Change::Changed(text) => Some(parse(&text, &self.path)),
            Change::Unreadable(e) => Some(Err(vec![e])),
        }
    }

    /// The file's text if it differs from the last text seen. A read error
    /// is reported once until the file is readable again.
    pub fn poll(&mut self) -> Option<Change> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) if self.last.as_deref() == Some(text.as_str()) => None,
            Ok(text) => {
                self.last = Some(text.clone());
                Some(Change::Changed(text))
            }
            Err(_) if self.last.is_none() => None,
            Err(e) => {
                self.last = None;
                Some(Change::Unreadable(format!("{}: {e}", self.path.display())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_each_change_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("policy.yaml");
        std::fs::write(&p, "a").unwrap();
        let mut w = FileWatch::new(&p, Some("a".into()));
        assert_eq!(w.poll(), None);
        std::fs::write(&p, "b").unwrap();
        assert_eq!(w.poll(), Some(Change::Changed("b".into())));
        assert_eq!(w.poll(), None);
        // Replaced through a rename, as editors and config managers do.
        let tmp = dir.path().join("tmp");
        std::fs::write(&tmp, "c").unwrap();
        std::fs::rename(&tmp, &p).unwrap();
        assert_eq!(w.poll(), Some(Change::Changed("c".into())));
        std::fs::remove_file(&p).unwrap();
        assert!(matches!(w.poll(), Some(Change::Unreadable(_))));
        assert_eq!(w.poll(), None);
        std::fs::write(&p, "c").unwrap();
        assert_eq!(w.poll(), Some(Change::Changed("c".into())));
    }
}
