//! The harness against a real PostgreSQL: start, query, create a database, stop and start again, kill and start
//! again, and no process left behind. Each test skips (one `skipped:` line) on a machine without PostgreSQL.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rtc_pg_harness::{Error, Postgres, start_or_skip};

/// The processes that belong to the cluster in `data_dir`: the postmaster (`pgrep -f <data_dir>`: its command
/// line names the data dir) and every process working in it (sessions and background processes rewrite their
/// command line, but their working directory is the data dir).
fn processes_of(data_dir: &Path) -> Vec<u32> {
    let mut pids: Vec<u32> = Command::new("pgrep")
        .arg("-f")
        .arg(data_dir)
        .stderr(Stdio::null())
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let zombie = std::fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|s| Some(s.rsplit_once(')')?.1.trim_start().starts_with('Z')))
            .unwrap_or(true);
        if !zombie && std::fs::read_link(entry.path().join("cwd")).is_ok_and(|cwd| cwd == data_dir)
        {
            pids.push(pid);
        }
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// Waits up to 10 s for the cluster in `data_dir` to have no process; panics naming them when some remain.
fn assert_no_process(data_dir: &Path, when: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = processes_of(data_dir);
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{when}: processes of {} still running: {left:?}",
            data_dir.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn starts_answers_and_creates_databases() {
    let Some(pg) = start_or_skip("starts_answers_and_creates_databases") else {
        return;
    };
    assert!(pg.is_running());
    assert!(pg.pid().is_some_and(|p| p > 0));
    assert_eq!(
        pg.url(),
        format!("postgres://postgres@127.0.0.1:{}/postgres", pg.port())
    );
    assert_eq!(pg.psql("postgres", "SELECT 1").unwrap(), "1");
    assert_eq!(
        pg.psql("postgres", "SELECT 1, 'a'; SELECT 2").unwrap(),
        "1|a\n2"
    );

    pg.create_database("rtc_test").unwrap();
    assert_eq!(
        pg.url_db("rtc_test"),
        format!("postgres://postgres@127.0.0.1:{}/rtc_test", pg.port())
    );
    assert_eq!(
        pg.psql("rtc_test", "SELECT current_database()").unwrap(),
        "rtc_test"
    );
    assert_eq!(pg.psql("rtc_test", "SHOW server_encoding").unwrap(), "UTF8");
    let err = pg
        .psql("rtc_test", "SELECT * FROM no_such_table")
        .unwrap_err();
    assert!(
        matches!(&err, Error::Failed(m) if m.contains("no_such_table")),
        "{err}"
    );
    assert!(
        pg.create_database("rtc_test").is_err(),
        "a second CREATE DATABASE"
    );
}

#[test]
fn stop_and_start_again_keeps_the_data() {
    let Some(mut pg) = start_or_skip("stop_and_start_again_keeps_the_data") else {
        return;
    };
    let (port, data_dir) = (pg.port(), pg.data_dir());
    pg.psql(
        "postgres",
        "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'one'), (2, 'two')",
    )
    .unwrap();
    let old_pid = pg.pid().unwrap();

    pg.stop();
    assert!(!pg.is_running());
    assert_eq!(pg.pid(), None);
    assert_no_process(&data_dir, "after stop");
    assert!(
        pg.psql("postgres", "SELECT 1").is_err(),
        "a query to a stopped server"
    );
    pg.stop(); // a second stop does nothing

    pg.start_again().unwrap();
    assert!(pg.start_again().is_err(), "start_again while it runs");
    assert_eq!(pg.port(), port);
    assert_ne!(pg.pid(), Some(old_pid));
    assert_eq!(
        pg.psql("postgres", "SELECT id, v FROM t ORDER BY id")
            .unwrap(),
        "1|one\n2|two"
    );
}

#[test]
fn kill_and_start_again_recovers() {
    let Some(mut pg) = start_or_skip("kill_and_start_again_recovers") else {
        return;
    };
    let data_dir = pg.data_dir();
    pg.psql(
        "postgres",
        "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 1000)",
    )
    .unwrap();
    // A session open at the crash, in the middle of a statement.
    let mut session = Command::new(pg.bin_dir().join("psql"))
        .args(["-X", "-h", "127.0.0.1", "-p", &pg.port().to_string()])
        .args([
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-c",
            "SELECT pg_sleep(60)",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let wait = Instant::now() + Duration::from_secs(10);
    while pg
        .psql(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%'",
        )
        .unwrap()
        != "1"
    {
        assert!(Instant::now() < wait, "the sleeping session never showed");
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = processes_of(&data_dir);
    assert!(before.len() > 1, "postmaster and its processes: {before:?}");

    pg.kill();
    assert!(!pg.is_running());
    // Every process of the old server is gone when kill returns, sessions and background processes included.
    let left = processes_of(&data_dir);
    assert!(
        left.is_empty(),
        "left after kill: {left:?} (before: {before:?})"
    );
    let _ = session.wait();
    pg.kill(); // a second kill does nothing

    pg.start_again().unwrap();
    assert_eq!(
        pg.psql("postgres", "SELECT count(*) FROM t").unwrap(),
        "1000"
    );
    pg.psql("postgres", "INSERT INTO t VALUES (1001)").unwrap();
}

#[test]
fn drop_leaves_no_process_behind() {
    let Some(pg) = start_or_skip("drop_leaves_no_process_behind") else {
        return;
    };
    let data_dir = pg.data_dir();
    let dir = data_dir.parent().unwrap().to_path_buf();
    // A session still working when the harness goes: the fast shutdown ends it.
    let mut session = Command::new(pg.bin_dir().join("psql"))
        .args(["-X", "-h", "127.0.0.1", "-p", &pg.port().to_string()])
        .args([
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-c",
            "SELECT pg_sleep(60)",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(!processes_of(&data_dir).is_empty());

    let started = Instant::now();
    drop(pg);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "drop took {:?}",
        started.elapsed()
    );
    assert_no_process(&data_dir, "after drop");
    assert!(!dir.exists(), "{} still exists after drop", dir.display());
    let status = session.wait().unwrap();
    assert!(!status.success(), "the session outlived the server");
}

#[test]
fn drop_after_kill_and_servers_side_by_side() {
    let Some(mut a) = start_or_skip("drop_after_kill_and_servers_side_by_side") else {
        return;
    };
    let b = Postgres::start().unwrap();
    assert_ne!(a.port(), b.port());
    a.psql("postgres", "CREATE TABLE only_in_a (x int)")
        .unwrap();
    assert!(b.psql("postgres", "SELECT * FROM only_in_a").is_err());
    let (a_data, b_data) = (a.data_dir(), b.data_dir());
    a.kill();
    drop(a);
    drop(b);
    assert_no_process(&a_data, "after kill and drop");
    assert_no_process(&b_data, "after drop");
}

#[test]
fn start_again_on_a_taken_port_fails_with_the_log() {
    let Some(mut pg) = start_or_skip("start_again_on_a_taken_port_fails_with_the_log") else {
        return;
    };
    pg.stop();
    let squatter = std::net::TcpListener::bind(("127.0.0.1", pg.port())).unwrap();
    let err = pg.start_again().unwrap_err().to_string();
    assert!(err.contains(&format!("127.0.0.1:{}", pg.port())), "{err}");
    assert!(err.contains("could not") || err.contains("in use"), "{err}");
    assert!(!pg.is_running());
    assert_no_process(&pg.data_dir(), "after a failed start");
    drop(squatter);
    pg.start_again().unwrap();
    assert_eq!(pg.psql("postgres", "SELECT 1").unwrap(), "1");
}
