use super::*;

fn sleeper(name: &str) -> ServiceConfig {
    ServiceConfig {
        name: name.into(),
        argv: vec!["sleep".into(), "30".into()],
        env: vec![],
        pid_file: None,
        health_url: None,
        health_timeout_ms: 800,
        ..Default::default()
    }
}

#[tokio::test]
async fn restart_gives_a_new_pid_and_stop_reaps() {
    let mut s = Supervisor::new(&[sleeper("a")]);
    assert!(s.start_all().is_empty());
    let first = s.pid("a").unwrap();
    let second = s.restart("a").await.unwrap();
    assert_ne!(first, second);
    assert_eq!(s.pid("a"), Some(second));
    s.stop_all().await;
    assert_eq!(s.pid("a"), None);
    assert!(!std::path::Path::new(&format!("/proc/{second}")).exists() || is_zombie_free(second));
}

#[tokio::test]
async fn a_service_runs_as_its_user_in_its_folder_and_waits_out_its_grace() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let root = nix::unistd::Uid::effective().is_root();
    let a = ServiceConfig {
        working_dir: Some(dir.path().to_path_buf()),
        startup_grace_secs: 30.0,
        // Only root may run a service as another user.
        user: root.then(|| "nobody".into()),
        ..sleeper("a")
    };
    let mut s = Supervisor::new(&[a, sleeper("b")]);
    assert!(s.start_all().is_empty());
    let pid = s.pid("a").unwrap();
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap();
    assert_eq!(cwd, dir.path().canonicalize().unwrap());
    if root {
        let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u32>().ok())
        };
        assert_eq!(field("Uid:"), Some(nobody.uid.as_raw()));
        // The user's own group, and none of root's.
        assert_eq!(field("Gid:"), Some(nobody.gid.as_raw()));
        let groups = status.lines().find(|l| l.starts_with("Groups:")).unwrap();
        assert!(!groups.split_whitespace().any(|g| g == "0"), "{groups}");
    }
    let now = std::time::Instant::now();
    assert!(s.in_grace("a", now));
    assert!(!s.in_grace("b", now), "no grace unless asked");
    assert!(!s.in_grace("a", now + Duration::from_secs(31)));
    s.stop_all().await;
    assert_eq!(resolve("user", "0"), Ok(0));
    assert!(resolve("user", "no-such-user-here").is_err());
}

fn is_zombie_free(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(true)
}

#[tokio::test]
async fn a_new_supervisor_adopts_what_the_last_one_left_running() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = Supervisor::new(&[sleeper("a")]).with_state_dir(dir.path().into());
    assert!(first.start_all().is_empty());
    let pid = first.pid("a").unwrap();
    // The agent dies without stopping anything (as under SIGKILL).
    if let Some(p) = first.procs.get_mut("a") {
        if let Some(c) = p.child.as_mut() {
            // Forget the handle without killing the process.
            let _ = c.id();
        }
        std::mem::forget(p.child.take());
    }
    let mut second = Supervisor::new(&[sleeper("a")]).with_state_dir(dir.path().into());
    assert!(second.start_all().is_empty());
    assert_eq!(second.pid("a"), Some(pid), "adopted, not started again");
    // A restart stops the adopted group and starts one new copy.
    let new = second.restart("a").await.unwrap();
    assert_ne!(new, pid);
    assert!(started_at(pid).is_none(), "the old copy is gone");
    // A pid file naming another program (a reused pid) is not adopted.
    let mut other = sleeper("a");
    other.argv = vec!["sleep".into(), "31".into()];
    let third_dir = tempfile::tempdir().unwrap();
    std::fs::copy(dir.path().join("a.pid"), third_dir.path().join("a.pid")).unwrap();
    let mut third = Supervisor::new(&[other]).with_state_dir(third_dir.path().into());
    assert!(third.start_all().is_empty());
    assert_ne!(third.pid("a"), Some(new));
    third.stop_all().await;
    second.stop_all().await;
    assert!(started_at(new).is_none());
    assert!(!dir.path().join("a.pid").exists());
}

#[tokio::test]
async fn exited_process_has_no_pid() {
    let mut spec = sleeper("b");
    spec.argv = vec!["true".into()];
    let mut s = Supervisor::new(&[spec]);
    assert!(s.start_all().is_empty());
    tokio::time::timeout(Duration::from_secs(5), async {
        while s.pid("b").is_some() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    assert!(s.restart("missing").await.is_err());
}
