//! Every failure an operator can meet at start ends with one clear message
//! naming the cause and the fix, a non-zero exit, and nothing already
//! archived harmed.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use tidemark_tests::agent::Process;
use tidemark_tests::PgCluster;

/// Every file of the archive with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.insert(path.strip_prefix(dir).unwrap().display().to_string(), std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

fn run_to_exit(args: &[&str], env: &[(&str, String)]) -> (i32, String) {
    let mut p = Process::start("tidemark-agent", args, env).unwrap();
    let status = p.wait_timeout(Duration::from_secs(60)).expect("the agent gives up by itself");
    (status.code().unwrap_or(-1), p.output())
}

fn archive_arg(dir: &Path) -> String {
    format!("file://{}", dir.display())
}

#[test]
fn an_unreachable_server_is_named_and_the_archive_is_untouched() {
    let pg = PgCluster::start().unwrap();
    pg.psql("postgres", "CREATE TABLE t (id int PRIMARY KEY)").unwrap();
    let archive = tempfile::tempdir().unwrap();
    let source = pg.connection_string("postgres");
    let mut agent = Process::start(
        "tidemark-agent",
        &["--source", &source, "--archive", &archive_arg(archive.path())],
        &[("TIDEMARK_SEGMENT_MAX_AGE", "100ms".into())],
    )
    .unwrap();
    pg.psql("postgres", "INSERT INTO t SELECT generate_series(1, 100)").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while snapshot(archive.path()).keys().filter(|k| k.starts_with("segments/")).count() == 0 {
        assert!(std::time::Instant::now() < deadline, "nothing archived: {}", agent.output());
        std::thread::sleep(Duration::from_millis(100));
    }
    // Ctrl-C stops it as cleanly as SIGTERM.
    assert!(agent.interrupt(Duration::from_secs(30)).unwrap().success(), "{}", agent.output());
    assert!(agent.output().contains("SIGINT received"), "{}", agent.output());
    let before = snapshot(archive.path());
    drop(pg);

    let (code, output) = run_to_exit(&["--source", &source, "--archive", &archive_arg(archive.path())], &[]);
    assert_ne!(code, 0);
    assert!(output.contains("cannot connect to PostgreSQL at postgres@127.0.0.1:"), "{output}");
    assert!(output.contains("check that the server runs"), "{output}");
    assert_eq!(snapshot(archive.path()), before, "the archive is unchanged");
}

#[test]
fn wrong_wal_level_and_missing_replication_privilege_say_how_to_fix_them() {
    let pg = PgCluster::start_with(&[("wal_level", "replica")]).unwrap();
    let archive = tempfile::tempdir().unwrap();
    let (code, output) =
        run_to_exit(&["--source", &pg.connection_string("postgres"), "--archive", &archive_arg(archive.path())], &[]);
    assert_ne!(code, 0);
    assert!(
        output.contains("wal_level is replica") && output.contains("ALTER SYSTEM SET wal_level = logical"),
        "{output}"
    );
    drop(pg);

    let pg = PgCluster::start().unwrap();
    pg.psql("postgres", "CREATE ROLE app LOGIN").unwrap();
    let source = format!("host=127.0.0.1 port={} user=app dbname=postgres", pg.port());
    let (code, output) = run_to_exit(&["--source", &source, "--archive", &archive_arg(archive.path())], &[]);
    assert_ne!(code, 0);
    assert!(output.contains("ALTER ROLE app REPLICATION"), "{output}");
    assert!(snapshot(archive.path()).is_empty(), "nothing was written");
}

#[test]
fn an_unwritable_archive_and_bad_settings_are_refused_before_streaming() {
    let pg = PgCluster::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"").unwrap();
    let (code, output) = run_to_exit(
        &["--source", &pg.connection_string("postgres"), "--archive", &archive_arg(&file.join("archive"))],
        &[],
    );
    assert_ne!(code, 0);
    assert!(
        output.contains("cannot create the archive directory") && output.contains("a-file is not a directory"),
        "{output}"
    );
    assert_eq!(pg.psql("postgres", "SELECT count(*) FROM pg_publication").unwrap(), "0", "the source is untouched");

    let (code, output) = run_to_exit(&["--archive", "s3-bucket/prefix"], &[]);
    assert_eq!(code, 2);
    assert!(
        output.contains("invalid archive \"s3-bucket/prefix\" (from flag --archive): expected file:///absolute/path"),
        "{output}"
    );
    let (code, output) =
        run_to_exit(&["--archive", &archive_arg(dir.path())], &[("TIDEMARK_SEGMENT_MAX_AGE", "forever".into())]);
    assert_eq!(code, 2);
    assert!(output.contains("TIDEMARK_SEGMENT_MAX_AGE"), "{output}");
    let (code, output) = run_to_exit(&[], &[]);
    assert_eq!(code, 2);
    assert!(output.contains("no archive given"), "{output}");
}
