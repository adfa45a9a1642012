//! tidemark-agent against a real PostgreSQL 15, archiving to a directory:
//! the archive holds exactly the committed transactions, in commit order,
//! compared with an independent reference slot on the same source; the
//! excluded table's rows never reach it; SIGTERM leaves everything durable.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tidemark_tests::agent::Process;
use tidemark_tests::reference::{archived_transactions, commit_end, reference_transactions, segment_keys};
use tidemark_tests::PgCluster;
use wal_format::pgoutput::{decode_message, DecodeOptions, Message};
use wal_format::segment::decode_segment;
use wal_format::Lsn;

const MARKER: &str = "TIDEMARK-SECRET-MARKER-8c1f";

struct Compared {
    /// Everything the archive holds.
    archived: Vec<Vec<Bytes>>,
    /// The archived transactions in the reference's range.
    comparable: Vec<Vec<Bytes>>,
    reference: Vec<Vec<Bytes>>,
}

/// Waits until the archive holds the reference slot's last transaction,
/// stops the agent with SIGTERM (it must exit 0), and lines both up.
fn stop_and_compare(pg: &PgCluster, archive: &Path, agent: &mut Process, excluded_oid: u32) -> Compared {
    let reference = reference_transactions(pg, "app", "reference", excluded_oid);
    let (first, last) = (commit_end(&reference[0]), commit_end(reference.last().unwrap()));
    wait_for("the archive to catch up", Duration::from_secs(60), || {
        archived_transactions(archive).last().map(|t| commit_end(t) >= last).unwrap_or(false)
    });
    let status = agent.terminate(Duration::from_secs(30)).expect("the agent stops on SIGTERM");
    assert!(status.success(), "exit {status:?}; output:\n{}", agent.output());
    let archived = archived_transactions(archive);
    // The agent's own sequence records may precede or follow the reference's range.
    let comparable = archived.iter().filter(|t| (first..=last).contains(&commit_end(t))).cloned().collect();
    Compared { archived, comparable, reference }
}

fn wait_for(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn agent(pg: &PgCluster, archive: &Path) -> Process {
    Process::start(
        "tidemark-agent",
        &["--source", &pg.connection_string("app"), "--archive", &format!("file://{}", archive.display())],
        &[
            ("TIDEMARK_SEGMENT_MAX_AGE", "200ms".into()),
            ("TIDEMARK_SEQUENCES_INTERVAL", "1s".into()),
            ("TIDEMARK_LOG", "info".into()),
        ],
    )
    .unwrap()
}

#[test]
fn an_idle_database_adds_nothing_to_the_archive() {
    let pg = PgCluster::start().unwrap();
    pg.create_database("app").unwrap();
    pg.psql("app", "CREATE TABLE t (id int PRIMARY KEY); CREATE SEQUENCE s").unwrap();
    let archive = tempfile::tempdir().unwrap();
    let mut agent = agent(&pg, archive.path());
    pg.wait_for_active_slot("app", "tidemark", Duration::from_secs(30)).unwrap();
    pg.psql("app", "INSERT INTO t VALUES (1); SELECT nextval('s')").unwrap();
    let end: Lsn = pg.psql("app", "SELECT pg_current_wal_lsn()").unwrap().parse().unwrap();
    // The insert, then the sequence record that follows nextval.
    wait_for("the write and the sequence record", Duration::from_secs(30), || {
        archived_transactions(archive.path()).last().is_some_and(|t| commit_end(t) > end)
    });
    let before = archived_transactions(archive.path()).len();
    // Three sequence intervals with nothing written.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(archived_transactions(archive.path()).len(), before, "an idle database must cost no segment");
    assert!(agent.terminate(Duration::from_secs(30)).unwrap().success());
}

#[test]
fn the_archive_holds_exactly_the_committed_transactions_in_commit_order() {
    let pg = PgCluster::start().unwrap();
    pg.create_database("app").unwrap();
    pg.psql(
        "app",
        "CREATE TABLE with_pk (id int PRIMARY KEY, v text);
         CREATE TABLE no_pk (a int, v text);
         CREATE TABLE toasty (id int PRIMARY KEY, big text, n int);
         ALTER TABLE toasty ALTER COLUMN big SET STORAGE EXTERNAL;
         CREATE TABLE e2e_one_time_keys_json (user_id text NOT NULL, key_id text NOT NULL, key_json text, UNIQUE (user_id, key_id));
         CREATE SEQUENCE events_stream_seq;",
    )
    .unwrap();
    pgbench(&pg, &["-i", "-q", "-s", "1"]);
    let archive = tempfile::tempdir().unwrap();
    let mut agent = agent(&pg, archive.path());
    pg.wait_for_active_slot("app", "tidemark", Duration::from_secs(30)).unwrap();
    pg.psql("app", "SELECT 'ok' FROM pg_create_logical_replication_slot('reference', 'pgoutput')").unwrap();

    // pgbench's load, concurrent writers, TOAST updates, tables without a
    // key, TRUNCATE, a table created mid-stream, and the excluded table.
    std::thread::scope(|s| {
        s.spawn(|| pgbench(&pg, &["-n", "-c", "4", "-j", "2", "-T", "4"]));
        for w in 0..4 {
            let pg = &pg;
            s.spawn(move || {
                for i in 0..25 {
                    let id = w * 1000 + i;
                    pg.psql("app", &format!("INSERT INTO with_pk VALUES ({id}, 'w{w}'); UPDATE with_pk SET v = v || '+' WHERE id = {id}; INSERT INTO no_pk VALUES ({id}, 'x'); SELECT nextval('events_stream_seq')")).unwrap();
                }
            });
        }
        s.spawn(|| {
            pg.psql("app", "INSERT INTO toasty SELECT 1, string_agg(md5(i::text), ''), 0 FROM generate_series(1, 300) i").unwrap();
            for n in 1..10 {
                pg.psql("app", &format!("UPDATE toasty SET n = {n}")).unwrap();
            }
            pg.psql("app", &format!("INSERT INTO e2e_one_time_keys_json VALUES ('@a:hs', 'k1', '{MARKER}'), ('@a:hs', 'k2', '{MARKER}')")).unwrap();
            pg.psql("app", &format!("UPDATE e2e_one_time_keys_json SET key_json = '{MARKER}-2'; DELETE FROM e2e_one_time_keys_json WHERE key_id = 'k1'")).unwrap();
            pg.psql("app", "BEGIN; CREATE TABLE mid (a int, v text); INSERT INTO mid VALUES (1, 'a'), (2, 'b'); UPDATE mid SET v = 'c' WHERE a = 1; DELETE FROM mid WHERE a = 2; COMMIT").unwrap();
            pg.psql("app", "UPDATE no_pk SET v = 'y' WHERE a < 10; DELETE FROM no_pk WHERE a = 1; TRUNCATE no_pk").unwrap();
            pg.psql("app", "TRUNCATE e2e_one_time_keys_json, with_pk").unwrap();
        });
    });
    let excluded_oid: u32 = pg.psql("app", "SELECT 'e2e_one_time_keys_json'::regclass::oid").unwrap().parse().unwrap();
    let Compared { archived, comparable, reference } = stop_and_compare(&pg, archive.path(), &mut agent, excluded_oid);
    assert_eq!(comparable.len(), reference.len(), "transaction count");
    for (i, (a, r)) in comparable.iter().zip(&reference).enumerate() {
        let show = |t: &[Bytes]| {
            t.iter()
                .map(|m| format!("{:?}", decode_message(m.clone(), &DecodeOptions::v1(), false).unwrap()))
                .collect::<Vec<_>>()
                .join("\n  ")
        };
        assert!(
            a == r,
            "transaction {i} differs from the reference (end {}):\narchive:\n  {}\nreference:\n  {}",
            commit_end(r),
            show(a),
            show(r)
        );
    }
    let ends: Vec<Lsn> = archived.iter().map(|t| commit_end(t)).collect();
    assert!(ends.windows(2).all(|w| w[0] < w[1]), "commit order");
    assert!(reference.len() > 1000, "the workload and pgbench ran ({} transactions)", reference.len());

    // Not one byte of the excluded table's rows, raw or decompressed.
    for entry in walk(archive.path()) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(!contains(&bytes, MARKER.as_bytes()), "{} holds the marker", entry.display());
        if entry.extension().is_some_and(|e| e == "seg") {
            let (_, records) = decode_segment(&bytes).unwrap();
            assert!(
                records.iter().all(|r| !contains(&r.raw, MARKER.as_bytes())),
                "a decompressed record holds the marker"
            );
        }
    }
    let confirmed =
        pg.psql("app", "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'tidemark'").unwrap();
    assert_eq!(
        confirmed.parse::<Lsn>().unwrap(),
        *ends.last().unwrap(),
        "the slot is acknowledged exactly to the archive's end"
    );
}

fn pgbench(pg: &PgCluster, args: &[&str]) {
    let out = std::process::Command::new(pg.bin_dir().join("pgbench"))
        .args(["-h", "127.0.0.1", "-p", &pg.port().to_string(), "-U", "postgres"])
        .args(args)
        .arg("app")
        .output()
        .unwrap();
    assert!(out.status.success(), "pgbench {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn sigkill_at_random_moments_leaves_no_gap_and_no_duplicate() {
    let pg = PgCluster::start().unwrap();
    pg.create_database("app").unwrap();
    pg.psql("app", "CREATE TABLE events (id bigserial PRIMARY KEY, body text); CREATE TABLE no_pk (a int, b text)")
        .unwrap();
    let archive = tempfile::tempdir().unwrap();
    let mut agent = agent(&pg, archive.path());
    pg.wait_for_active_slot("app", "tidemark", Duration::from_secs(30)).unwrap();
    pg.psql("app", "SELECT 'ok' FROM pg_create_logical_replication_slot('reference', 'pgoutput')").unwrap();
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    eprintln!("kill schedule seed {seed}");
    let mut rng = seed;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        for w in 0..2 {
            let (pg, stop) = (&pg, &stop);
            s.spawn(move || {
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    pg.psql("app", &format!("INSERT INTO events (body) SELECT 'w{w}-{i}-' || g FROM generate_series(1, 3) g; INSERT INTO no_pk VALUES ({i}, 'x'); UPDATE no_pk SET b = 'y' WHERE a = {i}")).unwrap();
                    i += 1;
                }
            });
        }
        for kill in 0..20 {
            std::thread::sleep(Duration::from_millis(150 + next(600)));
            agent.kill();
            assert!(agent.try_wait().is_some(), "kill {kill}");
            agent = self::agent(&pg, archive.path());
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let Compared { comparable, reference, .. } = stop_and_compare(&pg, archive.path(), &mut agent, 0);
    let ends = |ts: &[Vec<Bytes>]| ts.iter().map(|t| commit_end(t)).collect::<Vec<_>>();
    let (a, r) = (ends(&comparable), ends(&reference));
    let missing: Vec<_> = r.iter().filter(|e| !a.contains(e)).collect();
    let extra: Vec<_> = a.iter().filter(|e| !r.contains(e)).collect();
    let duplicated = a.len() - a.iter().collect::<std::collections::BTreeSet<_>>().len();
    assert!(
        a == r,
        "archive {} vs reference {} transactions: missing {missing:?}, extra {extra:?}, {duplicated} duplicated (seed {seed})",
        a.len(),
        r.len()
    );
    assert!(comparable == reference, "transaction contents differ (seed {seed})");
    assert!(reference.len() > 50, "writes ran during the kills ({} transactions)", reference.len());
}

/// The agent's peak resident memory, from the kernel.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap()
}

#[test]
fn a_one_gigabyte_transaction_passes_through_in_bounded_memory() {
    let pg = PgCluster::start_with(&[("max_wal_size", "4GB")]).unwrap();
    pg.create_database("app").unwrap();
    pg.psql("app", "CREATE TABLE big (id int PRIMARY KEY, payload text)").unwrap();
    let archive = tempfile::tempdir().unwrap();
    let mut agent = agent(&pg, archive.path());
    pg.wait_for_active_slot("app", "tidemark", Duration::from_secs(30)).unwrap();
    // 1,000,000 rows of 1,024 bytes each, in one transaction.
    pg.psql("app", "INSERT INTO big SELECT g, repeat(md5(g::text), 32) FROM generate_series(1, 1000000) g").unwrap();
    let end: Lsn = pg.psql("app", "SELECT pg_current_wal_lsn()").unwrap().parse().unwrap();
    let segments = || segment_keys(archive.path());
    wait_for("the big transaction to be archived", Duration::from_secs(600), || {
        assert!(agent.try_wait().is_none(), "the agent died: {}", agent.output());
        segments().iter().any(|k| k.end >= end)
    });
    let peak = peak_rss_kib(agent.pid());
    eprintln!("tidemark-agent peak RSS with a 1 GB transaction: {} MiB", peak / 1024);
    assert!(agent.terminate(Duration::from_secs(60)).unwrap().success());
    let big = segments().into_iter().find(|k| k.end >= end).unwrap();
    let mut file = std::fs::File::open(archive.path().join(big.to_string())).unwrap();
    let reader = wal_format::segment::SegmentReader::new(&mut file).unwrap();
    let header = *reader.header();
    assert!(header.raw_len > 1_000_000_000, "the segment holds over 1 GB of changes ({} bytes)", header.raw_len);
    let inserts = reader.filter(|r| matches!(r.as_ref().unwrap().message, Message::Insert(_))).count();
    assert_eq!(inserts, 1_000_000);
    assert!(peak < 256 * 1024, "peak RSS {} MiB: memory is not bounded", peak / 1024);
}
