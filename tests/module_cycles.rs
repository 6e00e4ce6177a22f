//! Load and unload mod_rtc_core.so 50 times under the fake core: threads (the engine thread, the `rtc-io`
//! runtime's, the ledger's writer) and file descriptors must come back to where they started — after shutdown
//! returns, nothing of the module may still run. And what the ledger holds outlives the module: balances after an
//! unload and a load are what they were.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use freeswitch_sys as fs;
use rtc_fakehost::{FakeHost, Module, module_path};

const CONF: &str = r#"<configuration name="rtc_core.conf"><settings/></configuration>"#;

fn count(dir: &str) -> usize {
    std::fs::read_dir(dir)
        .map(|d| d.count())
        .unwrap_or_else(|e| panic!("cannot read {dir}: {e}"))
}

/// Waits (polling, at most 5 s) for the entries of `dir` to number `want` or fewer; the last count. A joined thread
/// can stay listed in /proc/self/task for a moment after its join returned. (Fewer: the test harness's thread of
/// another test of this file may end meanwhile.)
fn settles_at_most(dir: &str, want: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let n = count(dir);
        if n <= want || Instant::now() >= deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn shipped_conf() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("conf")
}

#[test]
fn fifty_load_unload_cycles_leave_no_thread_or_fd() {
    let _serial = FakeHost::lock();
    let host = FakeHost::get();
    // With the scrape endpoint on, and scraped every cycle: its socket and the runtime's blocking thread that
    // renders the page go too.
    let addr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        probe.local_addr().expect("addr").to_string()
    };
    let conf = CONF.replace(
        "<settings/>",
        &format!(r#"<settings><param name="metrics-listen" value="{addr}"/></settings>"#),
    );
    // The ledger file is opened and closed every cycle: its descriptors (database, WAL, lock) go too.
    let db = tempfile::tempdir().expect("db dir");
    host.start_over(Some(&conf), &shipped_conf(), Some(db.path()));
    let path = module_path();
    let (threads0, fds0) = (count("/proc/self/task"), count("/proc/self/fd"));
    for cycle in 0..50 {
        let module = Module::open(&path);
        let (status, _) = module.load();
        assert_eq!(
            status,
            fs::SWITCH_STATUS_SUCCESS,
            "cycle {cycle}: {}",
            host.log()
        );
        let loaded = count("/proc/self/task");
        assert!(
            loaded >= threads0 + 2,
            "cycle {cycle}: the engine thread and the rtc-io runtime while loaded ({loaded} threads, {threads0} before)"
        );
        host.fire(
            fs::SWITCH_EVENT_CHANNEL_CREATE,
            &[
                ("Unique-ID", "4b2a1c3e-9f10-4d2b-8a7e-0123456789ab"),
                ("Caller-Destination-Number", "1"),
            ],
        );
        let (_, out) = host.api("rtc_core", "status").expect("API");
        assert!(out.contains("live calls: 1"), "cycle {cycle}: {out}");
        let page = {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(&addr).expect("connect");
            s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n")
                .expect("write");
            let mut page = String::new();
            s.read_to_string(&mut page).expect("read");
            page
        };
        assert!(page.starts_with("HTTP/1.1 200 OK"), "cycle {cycle}: {page}");
        assert_eq!(module.shutdown(), fs::SWITCH_STATUS_SUCCESS);
        drop(module);
        let threads = settles_at_most("/proc/self/task", threads0);
        assert!(
            threads <= threads0,
            "cycle {cycle}: {threads} threads after unload, {threads0} before the first load"
        );
        assert_eq!(
            count("/proc/self/fd"),
            fds0,
            "cycle {cycle}: fds after unload"
        );
    }
}

#[test]
fn balances_outlive_an_unload_and_a_load() {
    let _serial = FakeHost::lock();
    let host = FakeHost::get();
    let db = tempfile::tempdir().expect("db dir");
    host.start_over(Some(CONF), &shipped_conf(), Some(db.path()));
    let path = module_path();
    let api = |cmd: &str| host.api("rtc_core", cmd).expect("API").1;

    let module = Module::open(&path);
    assert_eq!(module.load().0, fs::SWITCH_STATUS_SUCCESS, "{}", host.log());
    assert_eq!(
        api("topup globex 49.75 wire-2026-001"),
        "+OK globex balance 199.750000\n"
    );
    let before = api("balance");
    assert_eq!(module.shutdown(), fs::SWITCH_STATUS_SUCCESS);
    drop(module);

    // Loaded again on the same db directory: the ledger is the one left, not balances.csv again.
    let module = Module::open(&path);
    assert_eq!(module.load().0, fs::SWITCH_STATUS_SUCCESS, "{}", host.log());
    assert_eq!(api("balance"), before);
    assert!(
        before.contains("\nglobex,199.750000,0.000000,199.750000,0\n"),
        "{before}"
    );
    assert_eq!(
        api("topup globex 49.75 wire-2026-001"),
        "+OK globex balance 199.750000 (reference wire-2026-001 already applied)\n",
        "the reference is remembered too"
    );
    assert_eq!(module.shutdown(), fs::SWITCH_STATUS_SUCCESS);
}
