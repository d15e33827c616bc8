//! The store under hostile conditions, through the real binary: a full disk, a state
//! directory with the wrong owner or mode, a keeper started with other settings, a privacy
//! secret others can read or kept where `privacy_secret_file` says, a symlink in place of
//! the lock file.
//!
//! Tests that mount a tmpfs or run greyspf as another user need root; without it they
//! print why and pass, unless `GREYSPF_E2E=required` (set by CI) makes that a failure.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const NOBODY: u32 = 65534;

fn sleep(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

/// True when running as root; otherwise says why the test is skipped, and fails it when
/// CI requires every test to run.
fn have_root(test: &str) -> bool {
    // SAFETY: plain libc call.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("GREYSPF_E2E").as_deref() == Ok("required") {
        panic!("GREYSPF_E2E=required, but {test} needs root");
    }
    println!("skipping {test}: it needs root (set GREYSPF_E2E=required to make this a failure)");
    false
}

/// Runs greyspf with `args` then `cmd`, as `uid` when given; (exit code, stdout, stderr).
fn run_as(uid: Option<u32>, args: &[String], cmd: &[&str]) -> (i32, String, String) {
    let mut c = Command::new(BIN);
    c.args(args).args(cmd);
    if let Some(uid) = uid {
        c.uid(uid).gid(uid);
    }
    let o = c.output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).to_string(),
        String::from_utf8_lossy(&o.stderr).to_string(),
    )
}

fn run(args: &[String], cmd: &[&str]) -> (i32, String, String) {
    run_as(None, args, cmd)
}

fn make_dir(p: &Path, mode: u32) {
    std::fs::create_dir_all(p).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        sleep(20);
    }
}

/// A small tmpfs mounted on a state directory, unmounted (after its keeper is killed)
/// when the test ends, pass or fail.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        make_dir(at, 0o700);
        let st = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs on {}", at.display());
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        for pid in keeper_pids(&self.0) {
            kill9(pid);
        }
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system holding `file` to the last byte.
fn fill(file: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(file).unwrap();
    for chunk in [1 << 20, 64 << 10, 4096, 512, 1] {
        let buf = vec![0x5au8; chunk];
        while f.write_all(&buf).is_ok() {}
    }
    let _ = f.sync_all();
}

fn corrupt_copies(state: &Path) -> Vec<String> {
    std::fs::read_dir(state)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("store.corrupt-"))
        .collect()
}

const STORE_DOWN: &str = "DEFER_IF_PERMIT store unavailable";

/// A state directory on an 8 MB tmpfs, a triplet greylisted through a session, then the
/// disk filled to the last byte once the delay and a flush have passed (the triplet is on
/// disk). The tmpfs guard comes before the session, so that it is dropped after it.
fn greylisted_then_disk_full(name: &str) -> (TestDir, Tmpfs, Vec<String>, String, Session) {
    let t = TestDir::new(name);
    let tmpfs = Tmpfs::mount(&t.state(), "8m");
    let args = t.args(&[
        "greylist_delay=1s",
        "greylist_auto_whitelist_clients=0",
        "store_flush_interval=100ms",
        "keeper_idle_timeout=60s",
        &format!("store_failure_action={STORE_DOWN}"),
    ]);
    let a = request("192.0.2.1", "a@example.org", "b@example.com", "m1");
    let mut s = Session::start(&args);
    assert_eq!(s.ask(&a), GREYLISTED);
    sleep(1500);
    fill(&t.state().join("filler"));
    (t, tmpfs, args, a, s)
}

#[test]
fn a_full_disk_keeps_the_store_and_its_triplets() {
    if !have_root("a_full_disk_keeps_the_store_and_its_triplets") {
        return;
    }
    let (t, _tmpfs, args, a, s) = greylisted_then_disk_full("full");
    let keepers = t.keeper_pids();
    assert_eq!(keepers.len(), 1);
    kill9(keepers[0]);
    wait_for("the keeper to die", || t.keeper_pids().is_empty());
    let (code, err) = s.finish();
    assert_eq!((code, err.as_str()), (0, ""));

    // The disk is full: every answer still comes, the configured one. A new instance, so
    // that its first request starts a keeper (an instance that just lost its keeper waits
    // a moment before it starts another).
    let mut s = Session::start(&args);
    for (n, who) in ["192.0.2.7", "192.0.2.8", "192.0.2.9"].iter().enumerate() {
        let q = request(who, "c@example.org", "d@example.com", &format!("f{n}"));
        assert_eq!(s.ask(&q), STORE_DOWN, "request {n} on a full disk");
    }
    let (code, err) = s.finish();
    assert_eq!((code, err.as_str()), (0, ""));
    assert_eq!(corrupt_copies(&t.state()), Vec::<String>::new());
    assert!(t.state().join("store").is_dir(), "the store is still there");
    // Mail saw why, once: the instance's rate-limited warning names the store failure.
    assert_eq!(
        t.wait_log(
            "warning: greylist store unavailable, answering DEFER_IF_PERMIT store unavailable",
            1
        )
        .len(),
        1,
        "{:?}",
        t.log_lines("")
    );

    // Space again: the triplet greylisted before the disk filled passes.
    std::fs::remove_file(t.state().join("filler")).unwrap();
    let mut s = Session::start(&args);
    let reply = s.ask(&a);
    assert!(
        reply.starts_with("PREPEND X-Greylist: delayed "),
        "the old triplet did not pass: {reply:?}"
    );
    assert_eq!(s.finish(), (0, String::new()));
    assert_eq!(corrupt_copies(&t.state()), Vec::<String>::new());
}

#[test]
fn a_group_writable_state_directory_is_refused_with_the_fix() {
    let t = TestDir::new("gw");
    make_dir(&t.state(), 0o770);
    let args = t.args(&["store_failure_action=DEFER_IF_PERMIT store unavailable"]);
    let want = format!(
        "greyspf: configuration error: state directory {d} is group- or world-writable \
         (mode 0770): others could replace the keeper socket or the store; fix: chmod 0700 {d}\n",
        d = t.state().display()
    );
    let (code, out, err) = run(&args, &["--check-config"]);
    assert_eq!((code, err.as_str()), (78, want.as_str()));
    assert!(out.contains("state_directory = "), "{out}");
    // At start: the keeper refuses, the instance answers the store-failure action and
    // says why in the log.
    let (code, _, err) = run(&args, &["keeper"]);
    assert_eq!(code, 70);
    assert!(
        err.contains("is group- or world-writable (mode 0770)"),
        "{err}"
    );
    let (code, out, err) = run_stream(
        &args,
        request("192.0.2.1", "a@example.org", "b@example.com", "g").as_bytes(),
    );
    assert_eq!((code, err.as_str()), (0, ""));
    assert_eq!(actions(&out), [STORE_DOWN]);
    let logged = t.wait_log("greylisting is off: state directory", 1);
    assert!(logged[0].contains("fix: chmod 0700"), "{logged:?}");
    assert!(t.keeper_pids().is_empty());
    assert!(!t.state().join("store").exists());
}

#[test]
fn a_root_owned_state_directory_is_refused_for_another_user() {
    if !have_root("a_root_owned_state_directory_is_refused_for_another_user") {
        return;
    }
    let t = TestDir::new("rootown");
    // The test directory must be reachable by the unprivileged user.
    std::fs::set_permissions(&t.path, std::fs::Permissions::from_mode(0o755)).unwrap();
    make_dir(&t.state(), 0o755);
    let args = t.args(&[]);
    let (code, _, err) = run_as(Some(NOBODY), &args, &["--check-config"]);
    assert_eq!(code, 78, "{err}");
    let d = t.state().display().to_string();
    assert!(
        err.starts_with(&format!(
            "greyspf: configuration error: state directory {d} is owned by root, but greyspf runs as nobody (uid 65534)"
        )),
        "{err}"
    );
    assert!(
        err.ends_with(&format!("fix: chown -R nobody: {d}\n")),
        "{err}"
    );
    // `check` shows the same reason as the store error; nothing is created as root.
    let (code, out, _) = run_as(
        Some(NOBODY),
        &args,
        &[
            "check",
            "--client-address",
            "192.0.2.1",
            "--sender",
            "a@example.org",
            "--recipient",
            "b@example.com",
        ],
    );
    assert_eq!(code, 0);
    assert!(out.starts_with("action=DUNNO\n"), "{out}");
    assert!(
        out.contains("is owned by root, but greyspf runs as nobody"),
        "{out}"
    );
    assert_eq!(std::fs::read_dir(t.state()).unwrap().count(), 0);
    // Root running a command in a directory that belongs to the service user leaves
    // files the service user can use.
    std::os::unix::fs::chown(t.state(), Some(NOBODY), Some(NOBODY)).unwrap();
    std::fs::set_permissions(t.state(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let (code, _, err) = run(&args, &["stats"]);
    assert_eq!((code, err.as_str()), (0, ""));
    for f in ["keeper.lock", "store", "keeper.sock"] {
        let m = std::fs::metadata(t.state().join(f)).unwrap();
        assert_eq!((f, m.uid()), (f, NOBODY));
    }
}

#[test]
fn a_keeper_with_other_settings_is_retired() {
    let t = TestDir::new("drift");
    let base = ["greylist_delay=1h", "keeper_idle_timeout=30s"];
    let args = t.args(&base);
    let (code, out, _) = run_stream(
        &args,
        request("192.0.2.1", "a@example.org", "b@example.com", "d1").as_bytes(),
    );
    assert_eq!((code, actions(&out)), (0, vec![GREYLISTED.to_string()]));
    let first = t.keeper_pids();
    assert_eq!(first.len(), 1);

    // Same settings: the same keeper serves.
    let (code, _, _) = run_stream(
        &args,
        request("192.0.2.2", "a@example.org", "b@example.com", "d2").as_bytes(),
    );
    assert_eq!((code, t.keeper_pids()), (0, first.clone()));

    // Another maximum age: that keeper retires, one with the new settings takes over.
    let mut other = base.to_vec();
    other.push("greylist_max_age=30d");
    let args = t.args(&other);
    let (code, out, _) = run_stream(
        &args,
        request("192.0.2.3", "a@example.org", "b@example.com", "d3").as_bytes(),
    );
    assert_eq!((code, actions(&out)), (0, vec![GREYLISTED.to_string()]));
    let second = t.keeper_pids();
    assert_eq!(second.len(), 1);
    assert_ne!(second, first);
    assert_eq!(
        t.wait_log("keeper exiting: asked to retire", 1).len(),
        1,
        "the old keeper did not say why it left"
    );
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", second[0])).unwrap();
    assert!(
        String::from_utf8_lossy(&cmdline).contains("greylist_max_age=30d"),
        "the new keeper runs with the new settings"
    );

    // Privacy on: retired again, and the new keeper stores hashed keys.
    other.push("greylist_privacy=yes");
    let args = t.args(&other);
    let (code, out, _) = run_stream(
        &args,
        request("192.0.2.4", "a@example.org", "b@example.com", "d4").as_bytes(),
    );
    assert_eq!((code, actions(&out)), (0, vec![GREYLISTED.to_string()]));
    let third = t.keeper_pids();
    assert_eq!(third.len(), 1);
    assert_ne!(third, second);
    assert_eq!(t.wait_log("keeper exiting: asked to retire", 2).len(), 2);
    assert!(t.state().join("privacy.secret").exists());
}

#[test]
fn a_privacy_secret_others_can_read_is_refused() {
    let t = TestDir::new("secret");
    make_dir(&t.state(), 0o700);
    let secret = t.state().join("privacy.secret");
    std::fs::write(&secret, [7u8; 32]).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let args = t.args(&[
        "greylist_privacy=yes",
        &format!("store_failure_action={STORE_DOWN}"),
    ]);
    let (code, _, err) = run(&args, &["keeper"]);
    assert_eq!(code, 70);
    assert_eq!(
        err,
        format!(
            "greyspf: keeper: store: privacy_secret_file {}: readable or writable by others (mode 0644); it must \
             be 0600: chmod 0600 it, or remove it to start over with a new secret (stored \
             keys are then forgotten)\n",
            secret.display()
        )
    );
    let (code, out, _) = run_stream(
        &args,
        request("192.0.2.1", "a@example.org", "b@example.com", "s").as_bytes(),
    );
    assert_eq!((code, actions(&out)), (0, vec![STORE_DOWN.to_string()]));

    // Without a secret, a new one is written whole, mode 0600, with no temporary left.
    std::fs::remove_file(&secret).unwrap();
    let (code, out, _) = run_stream(
        &args,
        request("192.0.2.1", "a@example.org", "b@example.com", "s2").as_bytes(),
    );
    assert_eq!((code, actions(&out)), (0, vec![GREYLISTED.to_string()]));
    let m = std::fs::metadata(&secret).unwrap();
    assert_eq!((m.len(), m.mode() & 0o777), (32, 0o600));
    let names: Vec<String> = std::fs::read_dir(t.state())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("privacy"))
        .collect();
    assert_eq!(names, ["privacy.secret"]);
}

/// `privacy_secret_file` names the sled keeper's secret too: refused when others can read
/// it, created there (mode 0600, its directory made private) when missing, used for the
/// keys, and another file retires a keeper started with the first.
#[test]
fn the_keeper_uses_privacy_secret_file() {
    let t = TestDir::new("secretfile");
    make_dir(&t.state(), 0o700);
    let secret = t.path.join("keys").join("grey.secret");
    make_dir(secret.parent().unwrap(), 0o700);
    std::fs::write(&secret, [7u8; 32]).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o640)).unwrap();
    let opt = format!("privacy_secret_file={}", secret.display());
    let args = t.args(&[
        "greylist_privacy=yes",
        &opt,
        &format!("store_failure_action={STORE_DOWN}"),
    ]);
    let (code, _, err) = run(&args, &["keeper"]);
    assert_eq!(code, 70);
    assert_eq!(
        err,
        format!(
            "greyspf: keeper: store: privacy_secret_file {}: readable or writable by others \
             (mode 0640); it must be 0600: chmod 0600 it, or remove it to start over with a \
             new secret (stored keys are then forgotten)\n",
            secret.display()
        )
    );

    // Missing, in a directory that does not exist yet: made there, not in the state
    // directory, and the keys are hashed with it.
    std::fs::remove_dir_all(secret.parent().unwrap()).unwrap();
    let (code, out, _) = run_stream(
        &args,
        request("192.0.2.1", "a@example.org", "b@example.com", "s1").as_bytes(),
    );
    assert_eq!((code, actions(&out)), (0, vec![GREYLISTED.to_string()]));
    let m = std::fs::metadata(&secret).unwrap();
    assert_eq!((m.len(), m.mode() & 0o777), (32, 0o600));
    let dir_mode = std::fs::metadata(secret.parent().unwrap()).unwrap().mode();
    assert_eq!(dir_mode & 0o777, 0o700);
    assert!(!t.state().join("privacy.secret").exists());
    let key = greyspf::store::secret::KeyedHash::new(&std::fs::read(&secret).unwrap()).unwrap();
    let (code, listed, _) = run(&args, &["list"]);
    assert_eq!(code, 0);
    assert!(
        listed.contains(&key.key_part("a@example.org")),
        "keys hashed with the file's secret: {listed}"
    );
    assert!(!listed.contains("example"), "{listed}");

    // Another secret file: the running keeper retires, the next one uses the new file.
    let first = t.keeper_pids();
    let other = t.path.join("other.secret");
    let opt = format!("privacy_secret_file={}", other.display());
    let args = t.args(&["greylist_privacy=yes", &opt]);
    let (code, out, _) = run_stream(
        &args,
        request("192.0.2.1", "a@example.org", "b@example.com", "s2").as_bytes(),
    );
    assert_eq!((code, actions(&out)), (0, vec![GREYLISTED.to_string()]));
    assert_eq!(t.wait_log("keeper exiting: asked to retire", 1).len(), 1);
    assert_ne!(t.keeper_pids(), first);
    assert!(other.exists());
}

#[test]
fn a_symlink_in_place_of_the_lock_file_is_refused() {
    let t = TestDir::new("lock");
    make_dir(&t.state(), 0o700);
    let target = t.path.join("elsewhere");
    std::os::unix::fs::symlink(&target, t.state().join("keeper.lock")).unwrap();
    let args = t.args(&[&format!("store_failure_action={STORE_DOWN}")]);
    let (code, out, err) = run_stream(
        &args,
        request("192.0.2.1", "a@example.org", "b@example.com", "l").as_bytes(),
    );
    assert_eq!((code, err.as_str()), (0, ""));
    assert_eq!(actions(&out), [STORE_DOWN]);
    assert!(
        !target.exists(),
        "the lock was followed to {}",
        target.display()
    );
    assert!(t.keeper_pids().is_empty());
}

const GREYSPF_UID: u32 = 64123;

/// Runs `script` (sh) in a private mount namespace where /etc/passwd and /etc/group also
/// list a user and group greyspf (uid and gid `GREYSPF_UID`) and /var/lib is an empty
/// tmpfs; returns its standard output.
fn with_greyspf_user(t: &TestDir, script: &str) -> String {
    let passwd = t.path.join("passwd");
    let group = t.path.join("group");
    // Any greyspf entry of this machine (an installed package) gives way to the test's.
    let without = |path: &str| -> String {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with("greyspf:"))
            .map(|l| format!("{l}\n"))
            .collect()
    };
    let mut p = without("/etc/passwd");
    p.push_str(&format!(
        "greyspf:x:{GREYSPF_UID}:{GREYSPF_UID}::/var/lib/greyspf:/usr/sbin/nologin\n"
    ));
    std::fs::write(&passwd, p).unwrap();
    let mut g = without("/etc/group");
    g.push_str(&format!("greyspf:x:{GREYSPF_UID}:\n"));
    std::fs::write(&group, g).unwrap();
    let script = format!(
        "mount --bind {passwd} /etc/passwd
         mount --bind {group} /etc/group
         mount -t tmpfs tmpfs /var/lib
         {script}",
        passwd = passwd.display(),
        group = group.display(),
    );
    let o = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-ec", &script])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// Runs packaging/debian/postinst `configure` with a greyspf user, after `setup` (shell)
/// filled /var/lib/greyspf. Returns the script's stderr and `owner mode name` of every
/// entry of the state directory, the directory first.
fn postinst_in_namespace(t: &TestDir, setup: &str) -> (String, Vec<String>) {
    let postinst = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/debian/postinst");
    let err = t.path.join("err");
    let out = with_greyspf_user(
        t,
        &format!(
            "mkdir /var/lib/greyspf
             cd /var/lib/greyspf
             {setup}
             sh {postinst} configure 2>{err}
             cd /var/lib/greyspf
             stat -c '%U %a %n' . $(find . -mindepth 1 | LC_ALL=C sort)",
            postinst = postinst.display(),
            err = err.display(),
        ),
    );
    let err = std::fs::read_to_string(err).unwrap();
    (err, out.lines().map(str::to_string).collect())
}

#[test]
fn root_works_for_the_greyspf_user_when_it_exists() {
    if !have_root("root_works_for_the_greyspf_user_when_it_exists") {
        return;
    }
    let t = TestDir::new("rootmk");
    std::fs::set_permissions(&t.path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let args: Vec<String> = t
        .args(&["greylist_delay=1h"])
        .iter()
        .map(|a| format!("'{a}'"))
        .collect();
    // An administrator's first command, run as root before anything else, in the state
    // directory the package makes (the user greyspf's home): made for greyspf. Then a
    // root-owned one there is refused to root as well; another directory is root's own
    // business.
    let home = "-o state_directory=/var/lib/greyspf";
    let out = with_greyspf_user(
        &t,
        &format!(
            "{BIN} {args} {home} check --client-address 192.0.2.1 --sender a@example.org \
               --recipient b@example.com
             cd /var/lib/greyspf
             stat -c '%u %a %n' . keeper.lock store
             cd /
             rm -rf /var/lib/greyspf
             mkdir -m 0700 /var/lib/greyspf /var/lib/other
             {BIN} {args} {home} --check-config >/dev/null 2>&1 || echo \"check-config: $?\"
             {BIN} {args} {home} --check-config 2>&1 >/dev/null || true
             {BIN} {args} -o state_directory=/var/lib/other --check-config >/dev/null \
               && echo 'another directory: fine'",
            args = args.join(" "),
        ),
    );
    assert_eq!(
        out,
        format!(
            "action={GREYLISTED}\n\
             action=greylist, reason=new, remaining=3600, client_name=unknown, \
             client_address=192.0.2.1, sender=a@example.org, recipient=b@example.com\n\
             {GREYSPF_UID} 700 .\n\
             {GREYSPF_UID} 600 keeper.lock\n\
             {GREYSPF_UID} 755 store\n\
             check-config: 78\n\
             greyspf: configuration error: state directory /var/lib/greyspf is owned by \
             root, but the user greyspf exists and the policy processes Postfix runs as \
             greyspf could not use it; fix: chown -R greyspf: /var/lib/greyspf\n\
             another directory: fine\n"
        )
    );
}

#[test]
fn postinst_gives_a_state_directory_of_greyspf_files_back() {
    if !have_root("postinst_gives_a_state_directory_of_greyspf_files_back") {
        return;
    }
    // What `greyspf check` run as root before the package leaves behind.
    let t = TestDir::new("postinst");
    let made_by_root = "chmod 0755 .; mkdir -m 0700 store store.corrupt-1700000000
         touch store/db store/conf keeper.lock privacy.secret keeper.sock";
    let (err, listing) = postinst_in_namespace(&t, made_by_root);
    assert_eq!(
        err,
        "greyspf: gave /var/lib/greyspf and its files back to user greyspf\n"
    );
    assert_eq!(
        listing,
        [
            "greyspf 755 .",
            "greyspf 644 ./keeper.lock",
            "greyspf 644 ./keeper.sock",
            "greyspf 644 ./privacy.secret",
            "greyspf 700 ./store",
            "greyspf 700 ./store.corrupt-1700000000",
            "greyspf 644 ./store/conf",
            "greyspf 644 ./store/db",
        ]
    );

    // A file greyspf does not make: the directory is someone's, left alone, and said so.
    let t = TestDir::new("postinst2");
    let (err, listing) =
        postinst_in_namespace(&t, "chmod 0770 .; mkdir store; touch notes.txt keeper.lock");
    assert!(err.contains("holds files greyspf did not make"), "{err}");
    assert_eq!(
        listing,
        [
            "root 770 .",
            "root 644 ./keeper.lock",
            "root 644 ./notes.txt",
            "root 755 ./store",
        ]
    );
}

#[test]
fn a_disk_that_fills_under_a_running_keeper_recovers() {
    if !have_root("a_disk_that_fills_under_a_running_keeper_recovers") {
        return;
    }
    let (t, _tmpfs, args, a, mut s) = greylisted_then_disk_full("fullrun");
    // sled takes new triplets in memory until a flush fails; from then on the answers are
    // the configured ones, and the keeper leaves.
    let mut replies = std::collections::BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    for n in 0.. {
        let q = request(
            "192.0.2.9",
            &format!("c{n}@example.org"),
            "d@example.com",
            "f",
        );
        let r = s.ask(&q);
        *replies.entry(r.clone()).or_insert(0) += 1;
        if r == STORE_DOWN || Instant::now() > deadline {
            break;
        }
        sleep(10);
    }
    assert_eq!(replies.get(STORE_DOWN), Some(&1), "{replies:?}");
    assert_eq!(replies.len(), 2, "{replies:?}");
    assert_eq!(
        t.wait_log("keeper exiting: store I/O error", 1).len(),
        1,
        "{:?}",
        t.log_lines("")
    );
    assert_eq!(s.finish(), (0, String::new()));
    assert_eq!(corrupt_copies(&t.state()), Vec::<String>::new());

    std::fs::remove_file(t.state().join("filler")).unwrap();
    let mut s = Session::start(&args);
    let reply = s.ask(&a);
    assert!(
        reply.starts_with("PREPEND X-Greylist: delayed "),
        "the old triplet did not pass: {reply:?}"
    );
    assert_eq!(s.finish(), (0, String::new()));
}
