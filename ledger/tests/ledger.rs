//! The ledger against real SQLite files: two-phase reservations, debits while calls talk, top-ups, CDRs, expiry,
//! recovery after a crash, storage failures, and opening what is not a ledger.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use rtc_ledger::{
    AccountRef, Answer, CallInfo, CallLimits, CdrRecord, EntryKind, Ledger, LedgerConfig,
    LedgerError, Location, Money, Op, ReservationId, ReservationState, Store,
};

const WAIT: Duration = Duration::from_secs(10);

fn units(n: i64) -> Money {
    Money(n * Money::MICROS_PER_UNIT)
}

fn name(n: &str) -> AccountRef {
    AccountRef::Name(n.into())
}

fn open(path: &Path) -> Ledger {
    Ledger::open(LedgerConfig::new(Location::File(path.to_owned()))).unwrap()
}

fn call(l: &Ledger, op: Op) -> Result<Answer, LedgerError> {
    l.call(op, "test", WAIT)
}

fn top_up(l: &Ledger, account: &str, amount: Money, reference: &str) -> Answer {
    call(
        l,
        Op::TopUp {
            account: name(account),
            amount,
            reference: reference.into(),
            actor: "test".into(),
        },
    )
    .unwrap()
}

fn open_account(l: &Ledger, account: &str) {
    call(
        l,
        Op::OpenAccount {
            name: account.into(),
            credit_limit: Money::ZERO,
        },
    )
    .unwrap();
}

fn reserve(l: &Ledger, account: &str, amount: Money, uuid: &str) -> Result<Answer, LedgerError> {
    call(
        l,
        Op::Reserve {
            account: name(account),
            amount,
            call: uuid.into(),
            info: CallInfo {
                caller: "1000".into(),
                destination: "442071234567".into(),
                started_at_us: 1,
                ..CallInfo::default()
            },
            ttl: Duration::from_secs(3600),
            limits: CallLimits::default(),
        },
    )
}

fn reserved(answer: Result<Answer, LedgerError>) -> ReservationId {
    match answer {
        Ok(Answer::Reserved { reservation, .. }) => reservation,
        other => panic!("not reserved: {other:?}"),
    }
}

fn extend(l: &Ledger, r: ReservationId, debit: Money, unit: Money) -> Answer {
    call(
        l,
        Op::Extend {
            reservation: r,
            debit,
            unit,
            ttl: Duration::from_secs(3600),
            info: None,
        },
    )
    .unwrap()
}

fn cdr(uuid: &str, cost: Money) -> Box<CdrRecord> {
    Box::new(CdrRecord {
        uuid: uuid.into(),
        caller: "1000".into(),
        destination: "442071234567".into(),
        source_ip: Some("127.0.0.1".into()),
        partner: Some("acme".into()),
        final_state: "COMPLETED".into(),
        reason: None,
        hangup_cause: "NORMAL_CLEARING".into(),
        carrier: Some("carrier_b".into()),
        rate_per_minute: Some(Money(12_000)),
        setup_us: Some(900),
        talk_s: 61,
        billed_s: 66,
        cost,
        started_at_us: 1_000_000,
        ended_at_us: 70_000_000,
    })
}

fn account(l: &Ledger, n: &str) -> rtc_ledger::AccountStatus {
    match call(l, Op::Account(name(n))).unwrap() {
        Answer::Account(a) => a,
        other => panic!("{other:?}"),
    }
}

fn checked(path: &Path) -> rtc_ledger::CheckReport {
    let (store, _) = Store::open(path, rtc_ledger::Access::Read).unwrap();
    let report = store.check().unwrap();
    assert!(report.ok(), "{report:#?}");
    report
}

fn temp_ledger() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db").join("rtc_core.db");
    (dir, path)
}

#[test]
fn a_call_reserves_extends_and_commits_and_the_journal_sums_to_the_balance() {
    let (_dir, path) = temp_ledger();
    let l = open(&path);
    assert!(l.opened().created);
    open_account(&l, "acme");
    assert_eq!(
        top_up(&l, "acme", units(10), "pay-1"),
        Answer::Moved {
            balance: units(10),
            duplicate: false
        }
    );
    let r = reserved(reserve(&l, "acme", units(1), "call-1"));
    let a = account(&l, "acme");
    assert_eq!(
        (a.balance, a.reserved, a.available()),
        (units(10), units(1), units(9))
    );
    // Debits within the hold take nothing more; past it the hold grows from the available money.
    assert_eq!(
        extend(&l, r, Money(600_000), Money::ZERO),
        Answer::Extended {
            granted: Money(600_000),
            held: units(1),
            debited: Money(600_000),
            available: units(9)
        }
    );
    assert_eq!(
        extend(&l, r, Money(600_000), Money::ZERO),
        Answer::Extended {
            granted: Money(600_000),
            held: Money(1_200_000),
            debited: Money(1_200_000),
            available: Money(8_800_000)
        }
    );
    let settled = call(
        &l,
        Op::Commit {
            reservation: r,
            account: Some(name("acme")),
            cost: Money(1_100_000),
            cdr: Some(cdr("call-1", Money(1_100_000))),
        },
    )
    .unwrap();
    let Answer::Settled(s) = settled else {
        panic!("{settled:?}")
    };
    assert_eq!(
        (s.charged, s.released, s.excess),
        (Money(1_100_000), Money(100_000), Money::ZERO)
    );
    assert_eq!(s.balance, Money(8_900_000));
    // A reservation resolves at most once.
    for op in [
        Op::Commit {
            reservation: r,
            account: None,
            cost: Money(1),
            cdr: None,
        },
        Op::Release {
            reservation: r,
            account: None,
            cdr: None,
        },
    ] {
        assert_eq!(
            call(&l, op),
            Err(LedgerError::NotOpen {
                id: r,
                state: ReservationState::Committed
            })
        );
    }
    drop(l);
    let report = checked(&path);
    assert_eq!(report.total_balance, Money(8_900_000));
    assert_eq!(report.cdrs, 1);
    let (store, _) = Store::open(&path, rtc_ledger::Access::Read).unwrap();
    let kinds: Vec<EntryKind> = store
        .history(&name("acme"), 100)
        .unwrap()
        .iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            EntryKind::Topup,
            EntryKind::Reserve,
            EntryKind::Extend,
            EntryKind::Commit
        ]
    );
    assert_eq!(store.cdr("call-1").unwrap().unwrap().cost, Money(1_100_000));
}

#[test]
fn an_extension_the_money_cannot_cover_is_granted_in_whole_units_or_refused() {
    let l = Ledger::open(LedgerConfig::new(Location::Memory)).unwrap();
    open_account(&l, "acme");
    top_up(&l, "acme", Money(2_500_000), "p");
    let r = reserved(reserve(&l, "acme", units(1), "c"));
    // 1.5 available besides the hold: asked 2.0 in units of 0.4 → 1.5 + what is left of the hold (1.0) = 2.5 of
    // room, so 2.0 is granted whole.
    assert!(matches!(
        extend(&l, r, units(2), Money(400_000)),
        Answer::Extended { granted, .. } if granted == units(2)
    ));
    // Room left: 0.5 → one unit of 0.4.
    assert_eq!(
        extend(&l, r, units(1), Money(400_000)),
        Answer::Extended {
            granted: Money(400_000),
            held: Money(2_400_000),
            debited: Money(2_400_000),
            available: Money(100_000)
        }
    );
    // All or nothing: refused, nothing held.
    assert_eq!(
        extend(&l, r, units(1), Money::ZERO),
        Answer::Insufficient {
            available: Money(100_000)
        }
    );
    // In units of 0.4 nothing fits either.
    assert_eq!(
        extend(&l, r, units(1), Money(400_000)),
        Answer::Insufficient {
            available: Money(100_000)
        }
    );
    assert_eq!(
        reserve(&l, "acme", Money(200_000), "d"),
        Ok(Answer::Insufficient {
            available: Money(100_000)
        })
    );
}

#[test]
fn top_ups_are_idempotent_by_reference() {
    let l = Ledger::open(LedgerConfig::new(Location::Memory)).unwrap();
    open_account(&l, "acme");
    open_account(&l, "globex");
    top_up(&l, "acme", units(5), "wire-7");
    assert_eq!(
        top_up(&l, "acme", units(5), "wire-7"),
        Answer::Moved {
            balance: units(5),
            duplicate: true
        }
    );
    // The reference is per account.
    top_up(&l, "globex", units(3), "wire-7");
    let reused = call(
        &l,
        Op::TopUp {
            account: name("acme"),
            amount: units(6),
            reference: "wire-7".into(),
            actor: "api".into(),
        },
    );
    assert_eq!(
        reused,
        Err(LedgerError::ReferenceReused {
            reference: "wire-7".into(),
            kind: "topup",
            amount: units(5)
        })
    );
    for (amount, account) in [
        (Money::ZERO, "acme"),
        (units(-1), "acme"),
        (units(1), "nobody"),
    ] {
        let e = call(
            &l,
            Op::TopUp {
                account: name(account),
                amount,
                reference: "x".into(),
                actor: "api".into(),
            },
        )
        .unwrap_err();
        assert!(
            matches!(
                e,
                LedgerError::BadAmount(..) | LedgerError::UnknownAccount(_)
            ),
            "{e}"
        );
    }
    assert_eq!(account(&l, "acme").balance, units(5));
    assert_eq!(l.stats().refused, 4);
}

#[test]
fn imports_never_overwrite_live_balances() {
    let (_dir, path) = temp_ledger();
    let l = open(&path);
    let import = |n: &str, amount: Money| {
        call(
            &l,
            Op::Import {
                name: n.into(),
                amount,
                reference: "balances.csv:3".into(),
            },
        )
        .unwrap()
    };
    assert_eq!(import("acme", units(100)), Answer::Imported(true));
    assert_eq!(import("acme", units(999)), Answer::Imported(false));
    let r = reserved(reserve(&l, "acme", units(1), "c"));
    call(
        &l,
        Op::Release {
            reservation: r,
            account: None,
            cdr: None,
        },
    )
    .unwrap();
    assert_eq!(import("acme", units(999)), Answer::Imported(false));
    assert_eq!(import("globex", units(-2)), Answer::Imported(true));
    assert_eq!(account(&l, "acme").balance, units(100));
    assert_eq!(account(&l, "globex").balance, units(-2));
}

#[test]
fn a_reservation_nobody_settles_frees_itself_at_its_expiry() {
    let now = Arc::new(AtomicI64::new(1_000_000_000));
    let clock = now.clone();
    let mut config = LedgerConfig::new(Location::Memory);
    config.clock = Arc::new(move || clock.load(Ordering::SeqCst));
    config.expiry_every = Duration::from_millis(20);
    let l = Ledger::open(config).unwrap();
    open_account(&l, "acme");
    top_up(&l, "acme", units(10), "p");
    let short = call(
        &l,
        Op::Reserve {
            account: name("acme"),
            amount: units(2),
            call: "c1".into(),
            info: CallInfo::default(),
            ttl: Duration::from_secs(30),
            limits: CallLimits::default(),
        },
    );
    let r = reserved(short);
    call(
        &l,
        Op::Extend {
            reservation: r,
            debit: Money(300_000),
            unit: Money::ZERO,
            ttl: Duration::from_secs(30),
            info: None,
        },
    )
    .unwrap();
    let kept = reserved(reserve(&l, "acme", units(1), "c2"));
    now.fetch_add(31_000_000, Ordering::SeqCst);
    let deadline = std::time::Instant::now() + WAIT;
    while l.stats().expired_reservations == 0 {
        assert!(std::time::Instant::now() < deadline, "never expired");
        std::thread::sleep(Duration::from_millis(10));
    }
    let a = account(&l, "acme");
    // What was debited is charged, the rest of the hold freed; the other reservation (an hour) still holds.
    assert_eq!((a.balance, a.reserved), (Money(9_700_000), units(1)));
    assert_eq!(
        call(
            &l,
            Op::Commit {
                reservation: r,
                account: None,
                cost: units(1),
                cdr: None
            }
        ),
        Err(LedgerError::NotOpen {
            id: r,
            state: ReservationState::Expired
        })
    );
    assert!(matches!(
        call(
            &l,
            Op::Release {
                reservation: kept,
                account: None,
                cdr: None
            }
        ),
        Ok(Answer::Settled(_))
    ));
}

#[test]
fn a_crash_leaves_nothing_open_after_the_next_start() {
    let (_dir, path) = temp_ledger();
    let l = open(&path);
    open_account(&l, "acme");
    top_up(&l, "acme", units(20), "p");
    let talking = reserved(reserve(&l, "acme", units(1), "talking"));
    call(
        &l,
        Op::Extend {
            reservation: talking,
            debit: Money(1_500_000),
            unit: Money::ZERO,
            ttl: Duration::from_secs(3600),
            info: Some(CallInfo {
                caller: "1000".into(),
                destination: "4930123".into(),
                source_ip: Some("192.0.2.10".into()),
                started_at_us: 5_000_000,
                answered_at_us: Some(6_000_000),
                rate_per_minute: Some(Money(25_000)),
                carrier: Some("carrier_a".into()),
                paid_s: 3600,
            }),
        },
    )
    .unwrap();
    let ringing = reserved(reserve(&l, "acme", units(1), "ringing"));
    l.crash();
    // The lock died with the writer: the next start opens the file and settles both.
    let l = open(&path);
    let recovered = l.recovered();
    assert_eq!(recovered.len(), 2);
    assert_eq!(recovered[0].reservation, talking);
    assert_eq!(
        (recovered[0].charged, recovered[0].released),
        (Money(1_500_000), Money::ZERO)
    );
    assert_eq!(recovered[1].reservation, ringing);
    assert_eq!(
        (recovered[1].charged, recovered[1].released),
        (Money::ZERO, units(1))
    );
    let cdr = recovered[0].cdr.as_ref().unwrap();
    assert_eq!(cdr.reason.as_deref(), Some("recovered"));
    assert_eq!(
        (cdr.final_state.as_str(), cdr.cost, cdr.billed_s),
        ("COMPLETED", Money(1_500_000), 3600)
    );
    assert_eq!(cdr.carrier.as_deref(), Some("carrier_a"));
    assert_eq!(recovered[1].cdr.as_ref().unwrap().final_state, "FAILED");
    let a = account(&l, "acme");
    assert_eq!(
        (a.balance, a.reserved, a.open_reservations),
        (Money(18_500_000), Money::ZERO, 0)
    );
    drop(l);
    let report = checked(&path);
    assert_eq!(report.cdrs, 2);
    assert_eq!(report.open_reservations, 0);
    // Nothing is recovered twice.
    assert!(open(&path).recovered().is_empty());
}

#[test]
fn two_writers_never_share_a_ledger() {
    let (_dir, path) = temp_ledger();
    let first = open(&path);
    let e = Ledger::open(LedgerConfig::new(Location::File(path.clone())))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&format!(
            "open for writing by process {}",
            std::process::id()
        )),
        "{e}"
    );
    assert!(e.starts_with(&path.display().to_string()), "{e}");
    // Readers may look while it runs.
    open_account(&first, "acme");
    let (store, _) = Store::open(&path, rtc_ledger::Access::Read).unwrap();
    assert_eq!(store.accounts().unwrap().len(), 1);
}

#[test]
fn what_is_not_a_ledger_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let refused = |path: &Path| -> String {
        match Ledger::open(LedgerConfig::new(Location::File(path.to_owned()))) {
            Ok(_) => panic!("{} opened", path.display()),
            Err(e) => e.to_string(),
        }
    };
    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    let e = refused(&empty);
    assert!(
        e.starts_with(&format!(
            "{}: not a ledger: the file is empty",
            empty.display()
        )),
        "{e}"
    );

    let text = dir.path().join("text.db");
    std::fs::write(&text, vec![b'x'; 8192]).unwrap();
    let e = refused(&text);
    assert!(
        e.contains("not a ledger: the file is not an SQLite database"),
        "{e}"
    );

    let other = dir.path().join("other.db");
    let conn = rusqlite_connection(&other);
    conn.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
        .unwrap();
    drop(conn);
    let e = refused(&other);
    assert!(
        e.contains("an SQLite database without the ledger's tables"),
        "{e}"
    );

    let newer = dir.path().join("newer.db");
    drop(open(&newer));
    rusqlite_connection(&newer)
        .execute_batch("PRAGMA user_version = 7")
        .unwrap();
    let e = refused(&newer);
    assert!(
        e.contains("schema version 7 is newer than this version's (1)"),
        "{e}"
    );

    // Damage: flip bytes in the middle of the accounts table's page.
    let corrupt = dir.path().join("corrupt.db");
    {
        let l = open(&corrupt);
        for i in 0..200 {
            open_account(&l, &format!("partner-{i:04}-with-a-long-name"));
        }
    }
    checkpoint(&corrupt);
    let (root, page): (i64, i64) = {
        let conn = rusqlite_connection(&corrupt);
        let root = conn
            .query_row(
                "SELECT rootpage FROM sqlite_schema WHERE name = 'accounts'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let page = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .unwrap();
        (root, page)
    };
    let mut bytes = std::fs::read(&corrupt).unwrap();
    let start = ((root - 1) * page) as usize;
    for b in &mut bytes[start..start + 64] {
        *b = 0x5a;
    }
    std::fs::write(&corrupt, &bytes).unwrap();
    let e = refused(&corrupt);
    assert!(e.contains("corrupt") || e.contains("malformed"), "{e}");
    assert!(e.contains(&corrupt.display().to_string()), "{e}");
}

fn rusqlite_connection(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).unwrap()
}

fn checkpoint(path: &Path) {
    rusqlite_connection(path)
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
}

/// A small tmpfs of its own, unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// `None` (and a printed line) where this process may not mount.
    fn mount(bytes: u64) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status();
        match status {
            Ok(s) if s.success() => Some(SmallDisk { dir }),
            _ => {
                println!(
                    "skipped: cannot mount a small tmpfs here (needs root); the full-disk path is not exercised"
                );
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

#[test]
fn a_full_disk_rolls_the_batch_back_and_settlements_wait_for_it() {
    let Some(disk) = SmallDisk::mount(4 << 20) else {
        return;
    };
    let path = disk.path().join("rtc_core.db");
    let mut config = LedgerConfig::new(Location::File(path.clone()));
    config.retry_every = Duration::from_millis(50);
    let l = Ledger::open(config).unwrap();
    open_account(&l, "acme");
    top_up(&l, "acme", units(100), "p");
    let r = reserved(reserve(&l, "acme", units(1), "c"));
    // Fill the disk: SQLite's own "database or disk is full" from here on.
    let filler = disk.path().join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 << 10];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
    }
    let mut refused = Ok(Answer::Imported(false));
    for n in 0..200 {
        refused = reserve(&l, "acme", units(1), &format!("{n}-{}", "x".repeat(4000)));
        if refused.is_err() {
            break;
        }
    }
    assert!(
        matches!(refused, Err(LedgerError::Storage(_))),
        "{refused:?}"
    );
    // A settlement that cannot be written now waits instead of being lost.
    let (tx, rx) = crossbeam_channel::bounded(1);
    l.submit(rtc_ledger::Request::new(
        Op::Commit {
            reservation: r,
            account: None,
            cost: units(1),
            cdr: Some(cdr("c", units(1))),
        },
        "test",
        Some(Box::new(move |a| {
            let _ = tx.send(a);
        })),
    ));
    std::thread::sleep(Duration::from_millis(300));
    assert!(rx.try_recv().is_err(), "answered while the disk is full");
    assert_eq!(l.stats().waiting, 1);
    assert!(l.stats().storage_failures >= 2);
    std::fs::remove_file(&filler).unwrap();
    let answer = rx.recv_timeout(WAIT).unwrap();
    assert!(matches!(answer, Ok(Answer::Settled(_))), "{answer:?}");
    assert_eq!(l.stats().waiting, 0);
    drop(l);
    let report = checked(&path);
    assert_eq!(report.cdrs, 1);
}

#[test]
fn requests_made_together_are_one_transaction_answered_in_order() {
    let l = Ledger::open(LedgerConfig::new(Location::Memory)).unwrap();
    let before = l.stats().batches;
    let answers = l
        .call_all(
            vec![
                Op::OpenAccount {
                    name: "acme".into(),
                    credit_limit: Money::ZERO,
                },
                Op::Import {
                    name: "acme".into(),
                    amount: units(3),
                    reference: "balances.csv:2".into(),
                },
                Op::Account(name("nobody")),
                Op::Account(name("acme")),
            ],
            "test",
            WAIT,
        )
        .unwrap();
    assert_eq!(l.stats().batches, before + 1);
    assert!(matches!(answers[0], Ok(Answer::AccountOpened(_))));
    assert_eq!(answers[1], Ok(Answer::Imported(true)));
    assert!(matches!(answers[2], Err(LedgerError::UnknownAccount(_))));
    assert!(matches!(&answers[3], Ok(Answer::Account(a)) if a.balance == units(3)));
}
