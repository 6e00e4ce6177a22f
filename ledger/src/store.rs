//! The ledger's embedded store: one SQLite database in WAL mode, its schema, and every operation as SQL.
//!
//! [`Store`] is used by one thread at a time: the writer thread (which wraps batches of operations in one
//! transaction, see [`crate::writer`]) or an offline command (`rtc-core ledger ...`). The schema is described in
//! `docs/ledger.md`; [`SCHEMA_VERSION`] is stored in SQLite's `user_version`.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use crate::backend::Abandoned;
use crate::error::{LedgerError, OpenError};
use crate::lock::WriterLock;
use crate::model::{
    AccountId, AccountRef, AccountStatus, Answer, CallInfo, CdrRecord, EntryKind, JournalEntry, Op,
    ReservationId, ReservationState, Settlement, available,
};
use rtc_money::Money;

/// The schema version this build writes and reads (SQLite `user_version`).
pub const SCHEMA_VERSION: i64 = 1;

/// The application id stamped in the database header (`PRAGMA application_id`): "rtcL".
const APPLICATION_ID: i64 = 0x7274_634c;

const SCHEMA_V1: &str = "
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE accounts (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    balance       INTEGER NOT NULL DEFAULT 0,
    reserved      INTEGER NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    credit_limit  INTEGER NOT NULL DEFAULT 0 CHECK (credit_limit >= 0),
    created_at_us INTEGER NOT NULL
);
CREATE TABLE reservations (
    id            INTEGER PRIMARY KEY,
    account       INTEGER NOT NULL REFERENCES accounts(id),
    call          TEXT NOT NULL,
    held          INTEGER NOT NULL CHECK (held >= 0),
    debited       INTEGER NOT NULL DEFAULT 0 CHECK (debited >= 0),
    state         TEXT NOT NULL CHECK (state IN ('open', 'committed', 'released', 'expired', 'recovered')),
    extensions    INTEGER NOT NULL DEFAULT 0,
    created_at_us INTEGER NOT NULL,
    updated_at_us INTEGER NOT NULL,
    expires_at_us INTEGER NOT NULL,
    settled_at_us INTEGER,
    charged       INTEGER,
    info          TEXT
);
CREATE INDEX reservations_open ON reservations(expires_at_us) WHERE state = 'open';
CREATE TABLE journal (
    seq            INTEGER PRIMARY KEY,
    at_us          INTEGER NOT NULL,
    account        INTEGER NOT NULL REFERENCES accounts(id),
    kind           TEXT NOT NULL CHECK (kind IN ('reserve', 'extend', 'commit', 'release', 'topup', 'adjustment',
                                                  'import', 'expiry', 'recovery')),
    balance_delta  INTEGER NOT NULL,
    reserved_delta INTEGER NOT NULL,
    balance_after  INTEGER NOT NULL,
    reserved_after INTEGER NOT NULL,
    reservation    INTEGER REFERENCES reservations(id),
    call           TEXT,
    reference      TEXT,
    actor          TEXT NOT NULL
);
CREATE INDEX journal_account ON journal(account, seq);
CREATE UNIQUE INDEX journal_reference ON journal(account, kind, reference)
    WHERE reference IS NOT NULL AND kind IN ('topup', 'adjustment', 'import');
CREATE TRIGGER journal_rows_are_immutable BEFORE UPDATE ON journal
    BEGIN SELECT RAISE(ABORT, 'journal rows are immutable'); END;
CREATE TRIGGER journal_rows_are_kept BEFORE DELETE ON journal
    BEGIN SELECT RAISE(ABORT, 'journal rows are never deleted'); END;
CREATE TABLE cdrs (
    seq           INTEGER PRIMARY KEY,
    uuid          TEXT NOT NULL UNIQUE,
    partner       TEXT,
    started_at_us INTEGER NOT NULL,
    ended_at_us   INTEGER NOT NULL,
    cost          INTEGER NOT NULL,
    reason        TEXT,
    record        TEXT NOT NULL
);
CREATE INDEX cdrs_ended ON cdrs(ended_at_us);
";

/// How to open a store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// The writer: takes the lock, creates the file when missing, checks and settles what a dead process left.
    Write,
    /// Offline reading (`rtc-core ledger balances|history|cdrs|check`): no lock (WAL lets a reader in beside the
    /// running writer); the file must exist.
    Read,
}

/// What opening found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Opened {
    /// The file was created now (a new, empty ledger).
    pub created: bool,
    /// The schema was migrated from this older version.
    pub migrated_from: Option<i64>,
}

/// One reservation as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReservationRow {
    /// Its id.
    pub id: ReservationId,
    /// Whose money.
    pub account: AccountId,
    /// The call's UUID.
    pub call: String,
    /// Money held now.
    pub held: Money,
    /// Debited against it so far (talk already paid for).
    pub debited: Money,
    /// Where it stands.
    pub state: ReservationState,
    /// Created, last changed, expires: µs since the epoch.
    pub created_at_us: i64,
    /// Last change (reservation, extension).
    pub updated_at_us: i64,
    /// When it frees itself.
    pub expires_at_us: i64,
    /// What is known of the call.
    pub info: CallInfo,
}

/// One account whose stored figures and journal disagree, or a reservation whose journal does not add up.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Discrepancy {
    /// Which account or reservation.
    pub what: String,
    /// What is stored.
    pub stored: Money,
    /// What the journal sums to.
    pub journal: Money,
}

/// What [`Store::check`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CheckReport {
    /// SQLite's `integrity_check` result lines (`["ok"]` when sound).
    pub integrity: Vec<String>,
    /// Accounts checked.
    pub accounts: u64,
    /// Journal entries summed.
    pub journal_entries: u64,
    /// Reservations checked, and how many are open.
    pub reservations: u64,
    /// Open reservations.
    pub open_reservations: u64,
    /// CDRs stored.
    pub cdrs: u64,
    /// Sum of every balance.
    pub total_balance: Money,
    /// Sum of every hold.
    pub total_reserved: Money,
    /// Where stored figures and the journal disagree (empty when the ledger balances).
    pub discrepancies: Vec<Discrepancy>,
}

impl CheckReport {
    /// The database is sound and its money adds up.
    pub fn ok(&self) -> bool {
        self.integrity == ["ok"] && self.discrepancies.is_empty()
    }
}

/// Why one operation inside a batch did not apply: a refusal (the batch goes on) or a storage failure (the
/// batch's transaction is rolled back).
#[derive(Debug)]
pub enum Failure {
    /// Refused: nothing of this operation was written.
    Refused(LedgerError),
    /// The database failed; the transaction must be rolled back.
    Storage(rusqlite::Error),
}

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Failure {
        Failure::Storage(e)
    }
}

impl From<LedgerError> for Failure {
    fn from(e: LedgerError) -> Failure {
        Failure::Refused(e)
    }
}

/// The ledger's database.
pub struct Store {
    /// The SQLite connection.
    conn: Connection,
    /// The file (`None` for an in-memory ledger).
    path: Option<PathBuf>,
    /// The writer's lock (`Access::Write` on a file only).
    _lock: Option<WriterLock>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

fn sqlite(path: &Path, action: &'static str) -> impl FnOnce(rusqlite::Error) -> OpenError {
    let path = path.to_owned();
    move |source| match source.sqlite_error_code() {
        Some(rusqlite::ErrorCode::NotADatabase) => OpenError::NotALedger {
            path,
            detail: "the file is not an SQLite database".into(),
        },
        Some(rusqlite::ErrorCode::DatabaseCorrupt) => OpenError::Corrupt {
            path,
            detail: source.to_string(),
        },
        _ => OpenError::Sqlite {
            path,
            action,
            source,
        },
    }
}

impl Store {
    /// Opens (for [`Access::Write`], creating when missing) the ledger at `path`.
    pub fn open(path: &Path, access: Access) -> Result<(Store, Opened), OpenError> {
        let lock = match access {
            Access::Write => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|source| OpenError::Io {
                        path: path.to_owned(),
                        action: "cannot create the ledger's directory",
                        source,
                    })?;
                }
                Some(WriterLock::acquire(path)?)
            }
            Access::Read => None,
        };
        let exists = match std::fs::metadata(path) {
            Ok(m) if m.is_file() && m.len() == 0 => {
                return Err(OpenError::NotALedger {
                    path: path.to_owned(),
                    detail: "the file is empty (a ledger is never empty once created; remove the file only if \
                             you mean to start a new ledger from the opening balances)"
                        .into(),
                });
            }
            Ok(m) if m.is_file() => true,
            Ok(_) => {
                return Err(OpenError::NotALedger {
                    path: path.to_owned(),
                    detail: "not a regular file".into(),
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(source) => {
                return Err(OpenError::Io {
                    path: path.to_owned(),
                    action: "cannot read the ledger",
                    source,
                });
            }
        };
        if !exists && access == Access::Read {
            return Err(OpenError::Missing {
                path: path.to_owned(),
            });
        }
        if !exists {
            // Created here, readable by its owner only, so that SQLite's WAL and shared-memory files (which take
            // the database's mode) are too: the ledger holds partners' money and their callers' numbers.
            create_private(path).map_err(|source| OpenError::Io {
                path: path.to_owned(),
                action: "cannot create the ledger",
                source,
            })?;
        }
        let flags = match access {
            Access::Write => {
                OpenFlags::SQLITE_OPEN_READ_WRITE
                    | OpenFlags::SQLITE_OPEN_CREATE
                    | OpenFlags::SQLITE_OPEN_NO_MUTEX
            }
            Access::Read => OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        };
        let conn = Connection::open_with_flags(path, flags)
            .map_err(sqlite(path, "cannot open the ledger"))?;
        let mut store = Store {
            conn,
            path: Some(path.to_owned()),
            _lock: lock,
        };
        let opened = store.prepare(access, !exists)?;
        Ok((store, opened))
    }

    /// A ledger in memory (tests, the simulator's comparison, `bench ledger`'s in-memory run): the same schema
    /// and SQL, nothing on disk.
    pub fn memory() -> Result<Store, OpenError> {
        let path = Path::new(":memory:");
        let conn = Connection::open_in_memory().map_err(sqlite(path, "cannot open"))?;
        let mut store = Store {
            conn,
            path: None,
            _lock: None,
        };
        store.prepare(Access::Write, true)?;
        Ok(store)
    }

    /// The file, or `:memory:`.
    pub fn display_path(&self) -> String {
        self.path
            .as_ref()
            .map_or_else(|| ":memory:".to_string(), |p| p.display().to_string())
    }

    fn err_path(&self) -> PathBuf {
        self.path
            .clone()
            .unwrap_or_else(|| PathBuf::from(":memory:"))
    }

    /// Sets the connection up, creates or migrates the schema, and checks what a load must check.
    fn prepare(&mut self, access: Access, new: bool) -> Result<Opened, OpenError> {
        let path = self.err_path();
        let conn = &self.conn;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(sqlite(&path, "cannot set the busy timeout"))?;
        if access == Access::Write {
            // WAL: one writer and readers beside it (the offline commands while the module runs); FULL: a commit is
            // on disk (WAL fsynced) before it returns, so an answer the engine acts on survives a crash or power
            // loss. The cost is paid once per batch (group commit), not once per call.
            let mode: String = conn
                .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
                .map_err(sqlite(&path, "cannot read the database"))?;
            if self.path.is_some() && !mode.eq_ignore_ascii_case("wal") {
                return Err(OpenError::NotALedger {
                    path,
                    detail: format!("cannot switch to WAL mode (journal mode is {mode})"),
                });
            }
            conn.execute_batch(
                "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA wal_autocheckpoint = 0;",
            )
            .map_err(sqlite(&path, "cannot configure the database"))?;
        }
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(sqlite(&path, "cannot read the database"))?;
        let app: i64 = conn
            .query_row("PRAGMA application_id", [], |r| r.get(0))
            .map_err(sqlite(&path, "cannot read the database"))?;
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
            .map_err(sqlite(&path, "cannot read the database"))?;
        let mut opened = Opened::default();
        if version == 0 && tables == 0 && app == 0 {
            if !new {
                return Err(OpenError::NotALedger {
                    path,
                    detail: "an SQLite database without the ledger's tables".into(),
                });
            }
            if access == Access::Read {
                return Err(OpenError::Missing { path });
            }
            self.create()
                .map_err(sqlite(&path, "cannot create the ledger"))?;
            opened.created = true;
            return Ok(opened);
        }
        if app != APPLICATION_ID {
            return Err(OpenError::NotALedger {
                path,
                detail: match app {
                    0 => format!(
                        "an SQLite database without the ledger's tables ({tables} schema objects)"
                    ),
                    _ => format!(
                        "an SQLite database of another application (application_id {app:#x})"
                    ),
                },
            });
        }
        if version > SCHEMA_VERSION {
            return Err(OpenError::NewerSchema {
                path,
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        if version < 1 {
            return Err(OpenError::NotALedger {
                path,
                detail: format!("schema version {version} is not one this version knows"),
            });
        }
        // Versions between 1 and SCHEMA_VERSION would be migrated here, oldest first, in one transaction.
        // The small, always-read tables are checked at every open; the whole file (journal, CDRs) by
        // `rtc-core ledger check`, whose time grows with the file.
        for table in ["meta", "accounts", "reservations"] {
            let problems = quick_check(conn, Some(table))
                .map_err(sqlite(&path, "cannot check the database"))?;
            if problems != ["ok"] {
                return Err(OpenError::Corrupt {
                    path,
                    detail: problems.join("; "),
                });
            }
        }
        let held = self
            .held_mismatches()
            .map_err(sqlite(&path, "cannot read the database"))?;
        if !held.is_empty() {
            return Err(OpenError::Unbalanced {
                path,
                detail: describe(&held),
            });
        }
        Ok(opened)
    }

    fn create(&mut self) -> Result<(), rusqlite::Error> {
        let tx = self.conn.transaction()?;
        tx.execute_batch(SCHEMA_V1)?;
        tx.execute(
            "INSERT INTO meta(key, value) VALUES ('created_at_us', ?1), ('created_by', ?2)",
            params![
                now_us(),
                format!("rtc-ledger {}", env!("CARGO_PKG_VERSION"))
            ],
        )?;
        tx.execute_batch(&format!(
            "PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {SCHEMA_VERSION};"
        ))?;
        tx.commit()
    }

    /// Accounts whose `reserved` is not the sum of their open holds.
    fn held_mismatches(&self) -> Result<Vec<Discrepancy>, rusqlite::Error> {
        let mut stmt = self.conn.prepare(
            "SELECT a.name, a.reserved, COALESCE(SUM(r.held), 0) FROM accounts a
             LEFT JOIN reservations r ON r.account = a.id AND r.state = 'open'
             GROUP BY a.id HAVING a.reserved != COALESCE(SUM(r.held), 0)",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(Discrepancy {
                what: format!(
                    "reserved money of account {:?} against its open holds",
                    r.get::<_, String>(0)?
                ),
                stored: Money(r.get(1)?),
                journal: Money(r.get(2)?),
            })
        })?;
        rows.collect()
    }

    // ---- transactions ------------------------------------------------------------------------------

    /// Starts a write transaction (`BEGIN IMMEDIATE`: the write lock is taken now, not at the first write).
    pub fn begin(&mut self) -> Result<(), rusqlite::Error> {
        self.conn.execute_batch("BEGIN IMMEDIATE")
    }

    /// Commits the transaction: durable when this returns.
    pub fn commit(&mut self) -> Result<(), rusqlite::Error> {
        self.conn.execute_batch("COMMIT")
    }

    /// Rolls the transaction back (after a storage failure).
    pub fn rollback(&mut self) {
        if !self.conn.is_autocommit()
            && let Err(e) = self.conn.execute_batch("ROLLBACK")
        {
            log::error!("{}: rollback failed: {e}", self.display_path());
        }
    }

    /// Copies what the write-ahead log holds into the database file (SQLite's checkpoint, `PASSIVE`: it never waits
    /// for readers). The writer calls it when it has nothing queued, so that the copy (and its fsync) never
    /// delays a commit a call waits for; SQLite's own automatic checkpoint, which would run inside a commit, is
    /// off. Returns the WAL frames left uncopied (a reader still using them).
    pub fn checkpoint(&mut self) -> Result<i64, rusqlite::Error> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok(r.get::<_, i64>(1)? - r.get::<_, i64>(2)?)
            })
    }

    /// Runs `f` in one transaction (offline commands, opening): committed if it returns `Ok`.
    pub fn in_transaction<T>(
        &mut self,
        f: impl FnOnce(&mut Store) -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        self.begin()?;
        match f(self) {
            Ok(v) => match self.commit() {
                Ok(()) => Ok(v),
                Err(e) => {
                    self.rollback();
                    Err(Failure::Storage(e))
                }
            },
            Err(e) => {
                self.rollback();
                Err(e)
            }
        }
    }

    // ---- operations ------------------------------------------------------------------------------

    /// Applies one operation inside the current transaction. A refusal writes nothing of the operation (except a
    /// settlement's CDR, which is stored whatever happened to the money: a call's record is never dropped).
    pub fn apply(&mut self, op: &Op, now_us: i64, actor: &str) -> Result<Answer, Failure> {
        if let Err(e) = op.check_amounts() {
            // Refused before anything is written; a settlement's CDR is kept all the same.
            if let Some(cdr) = op.settlement_cdr() {
                self.store_cdr(cdr)?;
            }
            return Err(e.into());
        }
        match op {
            Op::Commit {
                reservation,
                account,
                cost,
                cdr,
            } => {
                let result = self.guarded(|s| {
                    s.settle(*reservation, account.as_ref(), Some(*cost), now_us, actor)
                });
                self.store_cdr_with(result, cdr.as_deref())
            }
            Op::Release {
                reservation,
                account,
                cdr,
            } => {
                let result =
                    self.guarded(|s| s.settle(*reservation, account.as_ref(), None, now_us, actor));
                self.store_cdr_with(result, cdr.as_deref())
            }
            Op::Account(_) | Op::Accounts => self.apply_one(op, now_us, actor),
            _ => self.guarded(|s| s.apply_one(op, now_us, actor)),
        }
    }

    /// Runs `f` inside a savepoint: a refusal undoes whatever `f` wrote before refusing, so that a refused
    /// operation never leaves half of itself behind; a storage failure is left to the caller (the whole batch is
    /// rolled back).
    fn guarded<T>(
        &mut self,
        f: impl FnOnce(&mut Store) -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        self.conn.prepare_cached("SAVEPOINT op")?.execute([])?;
        match f(self) {
            Ok(v) => {
                self.conn.prepare_cached("RELEASE op")?.execute([])?;
                Ok(v)
            }
            Err(Failure::Refused(e)) => {
                self.conn.prepare_cached("ROLLBACK TO op")?.execute([])?;
                self.conn.prepare_cached("RELEASE op")?.execute([])?;
                Err(Failure::Refused(e))
            }
            Err(storage) => Err(storage),
        }
    }

    fn apply_one(&mut self, op: &Op, now_us: i64, actor: &str) -> Result<Answer, Failure> {
        match op {
            Op::OpenAccount { name, credit_limit } => self
                .open_account(name, *credit_limit, now_us)
                .map(Answer::AccountOpened),
            Op::Reserve {
                account,
                amount,
                call,
                info,
                ttl,
                limits: _,
            } => self.reserve(
                account,
                *amount,
                call,
                info,
                ttl_us(now_us, *ttl),
                now_us,
                actor,
            ),
            Op::Extend {
                reservation,
                debit,
                unit,
                ttl,
                info,
            } => self.extend(
                *reservation,
                *debit,
                *unit,
                ttl_us(now_us, *ttl),
                info.as_ref(),
                now_us,
                actor,
            ),
            Op::Commit { .. } | Op::Release { .. } => {
                unreachable!("settlements are applied by `apply`")
            }
            Op::TopUp {
                account,
                amount,
                reference,
                actor,
            } => self.movement(account, *amount, reference, EntryKind::Topup, now_us, actor),
            Op::Adjust {
                account,
                amount,
                reference,
                actor,
            } => self.movement(
                account,
                *amount,
                reference,
                EntryKind::Adjustment,
                now_us,
                actor,
            ),
            Op::Import {
                name,
                amount,
                reference,
            } => self.import(name, *amount, reference, now_us, actor),
            Op::Cdr(cdr) => self.store_cdr(cdr).map(Answer::CdrStored),
            Op::Account(account) => {
                let id = self.resolve(account)?;
                self.account_status(id).map(Answer::Account)
            }
            Op::Accounts => self.accounts().map(Answer::Accounts).map_err(Failure::from),
        }
    }

    fn store_cdr_with(
        &mut self,
        result: Result<Settlement, Failure>,
        cdr: Option<&CdrRecord>,
    ) -> Result<Answer, Failure> {
        if let Err(Failure::Storage(_)) = result {
            return result.map(Answer::Settled);
        }
        if let Some(cdr) = cdr {
            self.store_cdr(cdr)?;
        }
        result.map(Answer::Settled)
    }

    fn open_account(
        &mut self,
        name: &str,
        credit_limit: Money,
        now_us: i64,
    ) -> Result<AccountId, Failure> {
        self.conn
            .prepare_cached(
                "INSERT INTO accounts(name, credit_limit, created_at_us) VALUES (?1, ?2, ?3)
                 ON CONFLICT(name) DO UPDATE SET credit_limit = excluded.credit_limit
                 WHERE credit_limit != excluded.credit_limit",
            )?
            .execute(params![name, credit_limit.0, now_us])?;
        let id = self
            .conn
            .prepare_cached("SELECT id FROM accounts WHERE name = ?1")?
            .query_row([name], |r| r.get(0))?;
        Ok(AccountId(id))
    }

    /// The account's id, or a refusal naming it.
    pub fn resolve(&self, account: &AccountRef) -> Result<AccountId, Failure> {
        let found: Option<i64> = match account {
            AccountRef::Id(id) => self
                .conn
                .prepare_cached("SELECT id FROM accounts WHERE id = ?1")?
                .query_row([id.0], |r| r.get(0))
                .optional()?,
            AccountRef::Name(name) => self
                .conn
                .prepare_cached("SELECT id FROM accounts WHERE name = ?1")?
                .query_row([name], |r| r.get(0))
                .optional()?,
        };
        found
            .map(AccountId)
            .ok_or_else(|| LedgerError::UnknownAccount(account.to_string()).into())
    }

    /// (balance, reserved, credit limit) of an account known to exist.
    fn money_of(&self, account: AccountId) -> Result<(Money, Money, Money), Failure> {
        let row = self
            .conn
            .prepare_cached("SELECT balance, reserved, credit_limit FROM accounts WHERE id = ?1")?
            .query_row([account.0], |r| {
                Ok((Money(r.get(0)?), Money(r.get(1)?), Money(r.get(2)?)))
            })
            .optional()?;
        row.ok_or_else(|| LedgerError::UnknownAccount(format!("account id {}", account.0)).into())
    }

    /// Moves an account's money and writes the journal entry; returns the figures after.
    #[allow(clippy::too_many_arguments)]
    fn post(
        &mut self,
        account: AccountId,
        kind: EntryKind,
        balance_delta: Money,
        reserved_delta: Money,
        reservation: Option<ReservationId>,
        call: Option<&str>,
        reference: Option<&str>,
        now_us: i64,
        actor: &str,
    ) -> Result<(Money, Money), Failure> {
        let (balance, reserved, _) = self.money_of(account)?;
        let balance = balance
            .checked_add(balance_delta)
            .ok_or(LedgerError::Overflow(balance_delta))?;
        let reserved = reserved
            .checked_add(reserved_delta)
            .ok_or(LedgerError::Overflow(reserved_delta))?;
        if balance_delta != Money::ZERO || reserved_delta != Money::ZERO {
            self.conn
                .prepare_cached("UPDATE accounts SET balance = ?2, reserved = ?3 WHERE id = ?1")?
                .execute(params![account.0, balance.0, reserved.0])?;
        }
        self.conn
            .prepare_cached(
                "INSERT INTO journal(at_us, account, kind, balance_delta, reserved_delta, balance_after,
                                     reserved_after, reservation, call, reference, actor)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?
            .execute(params![
                now_us,
                account.0,
                kind.name(),
                balance_delta.0,
                reserved_delta.0,
                balance.0,
                reserved.0,
                reservation.map(|r| r.0 as i64),
                call,
                reference,
                actor
            ])?;
        Ok((balance, reserved))
    }

    #[allow(clippy::too_many_arguments)]
    fn reserve(
        &mut self,
        account: &AccountRef,
        amount: Money,
        call: &str,
        info: &CallInfo,
        expires_at_us: i64,
        now_us: i64,
        actor: &str,
    ) -> Result<Answer, Failure> {
        let id = self.resolve(account)?;
        let (balance, reserved, limit) = self.money_of(id)?;
        let avail = available(balance, limit, reserved);
        if avail < amount {
            return Ok(Answer::Insufficient { available: avail });
        }
        let info = serde_json::to_string(info).unwrap_or_default();
        self.conn
            .prepare_cached(
                "INSERT INTO reservations(account, call, held, state, created_at_us, updated_at_us, expires_at_us,
                                          info)
                 VALUES (?1, ?2, ?3, 'open', ?4, ?4, ?5, ?6)",
            )?
            .execute(params![id.0, call, amount.0, now_us, expires_at_us, info])?;
        let reservation = ReservationId(self.conn.last_insert_rowid() as u64);
        let (balance, reserved) = self.post(
            id,
            EntryKind::Reserve,
            Money::ZERO,
            amount,
            Some(reservation),
            Some(call),
            None,
            now_us,
            actor,
        )?;
        Ok(Answer::Reserved {
            reservation,
            amount,
            available: available(balance, limit, reserved),
        })
    }

    /// A reservation's row, whatever its state.
    pub fn reservation(
        &self,
        id: ReservationId,
    ) -> Result<Option<ReservationRow>, rusqlite::Error> {
        self.conn
            .prepare_cached(
                "SELECT id, account, call, held, debited, state, created_at_us, updated_at_us, expires_at_us, info
                 FROM reservations WHERE id = ?1",
            )?
            .query_row([id.0 as i64], reservation_row)
            .optional()
    }

    fn open_reservation(
        &self,
        id: ReservationId,
        account: Option<&AccountRef>,
    ) -> Result<ReservationRow, Failure> {
        let row = self
            .reservation(id)?
            .ok_or(LedgerError::UnknownReservation(id))?;
        if row.state != ReservationState::Open {
            return Err(LedgerError::NotOpen {
                id,
                state: row.state,
            }
            .into());
        }
        if let Some(claimed) = account {
            let claimed = self.resolve(claimed)?;
            if claimed != row.account {
                return Err(LedgerError::AccountMismatch {
                    id,
                    owner: row.account,
                    claimed,
                }
                .into());
            }
        }
        Ok(row)
    }

    #[allow(clippy::too_many_arguments)]
    fn extend(
        &mut self,
        id: ReservationId,
        debit: Money,
        unit: Money,
        expires_at_us: i64,
        info: Option<&CallInfo>,
        now_us: i64,
        actor: &str,
    ) -> Result<Answer, Failure> {
        let row = self.open_reservation(id, None)?;
        let (balance, reserved, limit) = self.money_of(row.account)?;
        let avail = available(balance, limit, reserved);
        let wanted = row
            .debited
            .checked_add(debit)
            .ok_or(LedgerError::Overflow(debit))?;
        // What the hold plus the available money can pay for, at most the whole debit.
        let room = Money(
            row.held
                .0
                .saturating_add(avail.0.max(0))
                .saturating_sub(row.debited.0)
                .max(0),
        );
        let granted = if wanted <= row.held || room >= debit {
            debit
        } else if unit > Money::ZERO {
            Money(room.0 / unit.0 * unit.0)
        } else {
            Money::ZERO
        };
        let info_json = info.map(|i| serde_json::to_string(i).unwrap_or_default());
        if granted == Money::ZERO && debit > Money::ZERO {
            // Nothing can be granted: the call talks on what it has; its expiry still moves, since it is alive.
            self.conn
                .prepare_cached(
                    "UPDATE reservations SET updated_at_us = ?2, expires_at_us = ?3, info = COALESCE(?4, info)
                     WHERE id = ?1",
                )?
                .execute(params![id.0 as i64, now_us, expires_at_us, info_json])?;
            return Ok(Answer::Insufficient { available: avail });
        }
        let debited = Money(row.debited.0 + granted.0);
        let grow = Money((debited.0 - row.held.0).max(0));
        let held = Money(row.held.0 + grow.0);
        self.conn
            .prepare_cached(
                "UPDATE reservations SET held = ?2, debited = ?3, extensions = extensions + 1, updated_at_us = ?4,
                                         expires_at_us = ?5, info = COALESCE(?6, info)
                 WHERE id = ?1",
            )?
            .execute(params![
                id.0 as i64,
                held.0,
                debited.0,
                now_us,
                expires_at_us,
                info_json
            ])?;
        let (balance, reserved) = if grow > Money::ZERO {
            self.post(
                row.account,
                EntryKind::Extend,
                Money::ZERO,
                grow,
                Some(id),
                Some(&row.call),
                None,
                now_us,
                actor,
            )?
        } else {
            (balance, reserved)
        };
        Ok(Answer::Extended {
            granted,
            held,
            debited,
            available: available(balance, limit, reserved),
        })
    }

    /// Commits (`cost` given) or releases a reservation.
    fn settle(
        &mut self,
        id: ReservationId,
        account: Option<&AccountRef>,
        cost: Option<Money>,
        now_us: i64,
        actor: &str,
    ) -> Result<Settlement, Failure> {
        let row = self.open_reservation(id, account)?;
        let (state, kind) = match cost {
            Some(_) => (ReservationState::Committed, EntryKind::Commit),
            None => (ReservationState::Released, EntryKind::Release),
        };
        self.close_reservation(
            &row,
            state,
            kind,
            cost.unwrap_or(Money::ZERO),
            now_us,
            actor,
        )
    }

    /// Ends an open reservation: `charged` leaves the balance, the hold is freed.
    fn close_reservation(
        &mut self,
        row: &ReservationRow,
        state: ReservationState,
        kind: EntryKind,
        charged: Money,
        now_us: i64,
        actor: &str,
    ) -> Result<Settlement, Failure> {
        let changed = self
            .conn
            .prepare_cached(
                "UPDATE reservations SET state = ?2, held = 0, settled_at_us = ?3, charged = ?4
                 WHERE id = ?1 AND state = 'open'",
            )?
            .execute(params![row.id.0 as i64, state.name(), now_us, charged.0])?;
        if changed != 1 {
            return Err(LedgerError::UnknownReservation(row.id).into());
        }
        let (balance, _) = self.post(
            row.account,
            kind,
            Money(-charged.0),
            Money(-row.held.0),
            Some(row.id),
            Some(&row.call),
            None,
            now_us,
            actor,
        )?;
        Ok(Settlement {
            account: row.account,
            charged,
            released: Money((row.held.0 - charged.0).max(0)),
            excess: Money((charged.0 - row.held.0).max(0)),
            balance,
        })
    }

    fn movement(
        &mut self,
        account: &AccountRef,
        amount: Money,
        reference: &str,
        kind: EntryKind,
        now_us: i64,
        actor: &str,
    ) -> Result<Answer, Failure> {
        let id = self.resolve(account)?;
        let before: Option<i64> = self
            .conn
            .prepare_cached(
                "SELECT balance_delta FROM journal WHERE account = ?1 AND kind = ?2 AND reference = ?3",
            )?
            .query_row(params![id.0, kind.name(), reference], |r| r.get(0))
            .optional()?;
        if let Some(before) = before {
            if before != amount.0 {
                return Err(LedgerError::ReferenceReused {
                    reference: reference.to_string(),
                    kind: kind.name(),
                    amount: Money(before),
                }
                .into());
            }
            let (balance, _, _) = self.money_of(id)?;
            return Ok(Answer::Moved {
                balance,
                duplicate: true,
            });
        }
        let balance = self.move_balance(id, kind, amount, reference, now_us, actor)?;
        Ok(Answer::Moved {
            balance,
            duplicate: false,
        })
    }

    /// A movement of the balance alone (top-up, adjustment, import), under the operator's reference.
    fn move_balance(
        &mut self,
        id: AccountId,
        kind: EntryKind,
        amount: Money,
        reference: &str,
        now_us: i64,
        actor: &str,
    ) -> Result<Money, Failure> {
        let (balance, _) = self.post(
            id,
            kind,
            amount,
            Money::ZERO,
            None,
            None,
            Some(reference),
            now_us,
            actor,
        )?;
        Ok(balance)
    }

    fn import(
        &mut self,
        name: &str,
        amount: Money,
        reference: &str,
        now_us: i64,
        actor: &str,
    ) -> Result<Answer, Failure> {
        let id = self.open_account(name, self.credit_limit_of(name)?, now_us)?;
        let moved: i64 = self
            .conn
            .prepare_cached("SELECT count(*) FROM journal WHERE account = ?1")?
            .query_row([id.0], |r| r.get(0))?;
        if moved > 0 {
            return Ok(Answer::Imported(false));
        }
        self.move_balance(id, EntryKind::Import, amount, reference, now_us, actor)?;
        Ok(Answer::Imported(true))
    }

    fn credit_limit_of(&self, name: &str) -> Result<Money, rusqlite::Error> {
        Ok(Money(
            self.conn
                .prepare_cached("SELECT credit_limit FROM accounts WHERE name = ?1")?
                .query_row([name], |r| r.get(0))
                .optional()?
                .unwrap_or(0),
        ))
    }

    /// Stores a CDR; `false` when one for the call is stored already (the first one is kept).
    fn store_cdr(&mut self, cdr: &CdrRecord) -> Result<bool, Failure> {
        let record = serde_json::to_string(cdr).map_err(|e| {
            LedgerError::Storage(format!("CDR of call {} cannot be encoded: {e}", cdr.uuid))
        })?;
        let n = self
            .conn
            .prepare_cached(
                "INSERT INTO cdrs(uuid, partner, started_at_us, ended_at_us, cost, reason, record)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT(uuid) DO NOTHING",
            )?
            .execute(params![
                cdr.uuid,
                cdr.partner,
                cdr.started_at_us as i64,
                cdr.ended_at_us as i64,
                cdr.cost.0,
                cdr.reason,
                record
            ])?;
        Ok(n == 1)
    }

    // ---- reservations nobody settled ---------------------------------------------------------------

    /// Settles every open reservation (at start: whatever is open was left by a process that died, since the
    /// lock says no other is alive): what was debited up to the call's last interval is charged, the rest freed,
    /// and a CDR with reason `recovered` is written for the call.
    pub fn recover_all(&mut self, now_us: i64) -> Result<Vec<Abandoned>, Failure> {
        let rows = self.open_rows("SELECT id, account, call, held, debited, state, created_at_us, updated_at_us,
                                          expires_at_us, info FROM reservations WHERE state = 'open' ORDER BY id")?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            out.push(self.abandon(&row, ReservationState::Recovered, now_us)?);
        }
        Ok(out)
    }

    /// Settles open reservations whose expiry has passed (nobody extended or settled them in time): what was
    /// debited is charged, the rest freed. No CDR: the process that made them is alive and writes the call's.
    pub fn expire_due(&mut self, now_us: i64, limit: usize) -> Result<Vec<Abandoned>, Failure> {
        let rows = {
            let mut stmt = self.conn.prepare_cached(
                "SELECT id, account, call, held, debited, state, created_at_us, updated_at_us, expires_at_us, info
                 FROM reservations WHERE state = 'open' AND expires_at_us <= ?1 ORDER BY expires_at_us LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![now_us, limit as i64], reservation_row)?;
            rows.collect::<Result<Vec<_>, _>>()?
        };
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            out.push(self.abandon(&row, ReservationState::Expired, now_us)?);
        }
        Ok(out)
    }

    /// When the next open reservation expires.
    pub fn next_expiry(&self) -> Result<Option<i64>, rusqlite::Error> {
        self.conn
            .prepare_cached("SELECT min(expires_at_us) FROM reservations WHERE state = 'open'")?
            .query_row([], |r| r.get(0))
    }

    fn open_rows(&self, sql: &str) -> Result<Vec<ReservationRow>, rusqlite::Error> {
        let mut stmt = self.conn.prepare(sql)?;
        let rows = stmt.query_map([], reservation_row)?;
        rows.collect()
    }

    fn abandon(
        &mut self,
        row: &ReservationRow,
        state: ReservationState,
        now_us: i64,
    ) -> Result<Abandoned, Failure> {
        let (kind, actor) = match state {
            ReservationState::Recovered => (EntryKind::Recovery, "recovery"),
            _ => (EntryKind::Expiry, "expiry"),
        };
        let settled = self.close_reservation(row, state, kind, row.debited, now_us, actor)?;
        let account = self.account_name(row.account)?;
        let cdr = match state {
            ReservationState::Recovered => {
                let cdr = recovered_cdr(row, &account);
                self.store_cdr(&cdr)?;
                Some(cdr)
            }
            _ => None,
        };
        Ok(Abandoned {
            reservation: row.id,
            account,
            call: row.call.clone(),
            charged: settled.charged,
            released: settled.released,
            cdr,
        })
    }

    fn account_name(&self, id: AccountId) -> Result<String, rusqlite::Error> {
        self.conn
            .prepare_cached("SELECT name FROM accounts WHERE id = ?1")?
            .query_row([id.0], |r| r.get(0))
    }

    // ---- reading --------------------------------------------------------------------------------

    /// One account's figures.
    pub fn account_status(&self, id: AccountId) -> Result<AccountStatus, Failure> {
        self.conn
            .prepare_cached(
                "SELECT a.id, a.name, a.balance, a.reserved, a.credit_limit,
                        (SELECT count(*) FROM reservations r WHERE r.account = a.id AND r.state = 'open')
                 FROM accounts a WHERE a.id = ?1",
            )?
            .query_row([id.0], account_row)
            .optional()?
            .ok_or_else(|| LedgerError::UnknownAccount(format!("account id {}", id.0)).into())
    }

    /// Every account, by name.
    pub fn accounts(&self) -> Result<Vec<AccountStatus>, rusqlite::Error> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT a.id, a.name, a.balance, a.reserved, a.credit_limit,
                    (SELECT count(*) FROM reservations r WHERE r.account = a.id AND r.state = 'open')
             FROM accounts a ORDER BY a.name",
        )?;
        let rows = stmt.query_map([], account_row)?;
        rows.collect()
    }

    /// The account's most recent journal entries, oldest first (at most `limit`).
    pub fn history(
        &self,
        account: &AccountRef,
        limit: usize,
    ) -> Result<Vec<JournalEntry>, Failure> {
        let id = self.resolve(account)?;
        let mut stmt = self.conn.prepare_cached(
            "SELECT * FROM (SELECT j.seq, j.at_us, a.name, j.kind, j.balance_delta, j.reserved_delta, j.balance_after,
                                   j.reserved_after, j.reservation, j.call, j.reference, j.actor
                            FROM journal j JOIN accounts a ON a.id = j.account
                            WHERE j.account = ?1 ORDER BY j.seq DESC LIMIT ?2)
             ORDER BY seq",
        )?;
        let rows = stmt.query_map(params![id.0, limit as i64], journal_row)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Every journal entry after `after_seq`, in order (for tests and exports), at most `limit`.
    pub fn journal(
        &self,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<JournalEntry>, rusqlite::Error> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT j.seq, j.at_us, a.name, j.kind, j.balance_delta, j.reserved_delta, j.balance_after,
                    j.reserved_after, j.reservation, j.call, j.reference, j.actor
             FROM journal j JOIN accounts a ON a.id = j.account
             WHERE j.seq > ?1 ORDER BY j.seq LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![after_seq, limit as i64], journal_row)?;
        rows.collect()
    }

    /// CDRs of calls that ended in `[from_us, to_us)`, optionally of one partner, in the order they ended;
    /// `each` is called for every one (an export streams; the whole set never sits in memory).
    pub fn cdrs(
        &self,
        from_us: i64,
        to_us: i64,
        partner: Option<&str>,
        mut each: impl FnMut(CdrRecord) -> Result<(), std::io::Error>,
    ) -> Result<u64, CdrReadError> {
        let mut stmt = self.conn.prepare(
            "SELECT record FROM cdrs WHERE ended_at_us >= ?1 AND ended_at_us < ?2 AND (?3 IS NULL OR partner = ?3)
             ORDER BY ended_at_us, seq",
        )?;
        let mut rows = stmt.query(params![from_us, to_us, partner])?;
        let mut n = 0;
        while let Some(row) = rows.next()? {
            let text: String = row.get(0)?;
            let cdr: CdrRecord =
                serde_json::from_str(&text).map_err(|e| CdrReadError::Decode(e.to_string()))?;
            each(cdr).map_err(CdrReadError::Write)?;
            n += 1;
        }
        Ok(n)
    }

    /// The CDR stored for a call.
    pub fn cdr(&self, uuid: &str) -> Result<Option<CdrRecord>, rusqlite::Error> {
        let text: Option<String> = self
            .conn
            .prepare_cached("SELECT record FROM cdrs WHERE uuid = ?1")?
            .query_row([uuid], |r| r.get(0))
            .optional()?;
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
    }

    /// Every reservation (tests and checks), by id.
    pub fn reservations(&self) -> Result<Vec<ReservationRow>, rusqlite::Error> {
        self.open_rows(
            "SELECT id, account, call, held, debited, state, created_at_us, updated_at_us, expires_at_us, info
             FROM reservations ORDER BY id",
        )
    }

    /// The ledger's own `fsck`: SQLite's full `integrity_check`, then the money — every account's balance is its
    /// journal's sum, its reserved money is both the journal's sum of holds and the sum of its open reservations,
    /// and every settled reservation's holds net to zero.
    pub fn check(&self) -> Result<CheckReport, rusqlite::Error> {
        let mut report = CheckReport {
            integrity: integrity_check(&self.conn)?,
            ..CheckReport::default()
        };
        let mut stmt = self.conn.prepare(
            "SELECT a.name, a.balance, a.reserved,
                    COALESCE((SELECT SUM(balance_delta) FROM journal j WHERE j.account = a.id), 0),
                    COALESCE((SELECT SUM(reserved_delta) FROM journal j WHERE j.account = a.id), 0)
             FROM accounts a ORDER BY a.name",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                Money(r.get(1)?),
                Money(r.get(2)?),
                Money(r.get(3)?),
                Money(r.get(4)?),
            ))
        })?;
        for row in rows {
            let (name, balance, reserved, journal_balance, journal_reserved) = row?;
            report.accounts += 1;
            report.total_balance = Money(report.total_balance.0.saturating_add(balance.0));
            report.total_reserved = Money(report.total_reserved.0.saturating_add(reserved.0));
            if balance != journal_balance {
                report.discrepancies.push(Discrepancy {
                    what: format!("balance of account {name:?}"),
                    stored: balance,
                    journal: journal_balance,
                });
            }
            if reserved != journal_reserved {
                report.discrepancies.push(Discrepancy {
                    what: format!("reserved money of account {name:?}"),
                    stored: reserved,
                    journal: journal_reserved,
                });
            }
        }
        report.discrepancies.extend(self.held_mismatches()?);
        let mut stmt = self.conn.prepare(
            "SELECT r.id, r.state, r.held, COALESCE(SUM(j.reserved_delta), 0), r.charged,
                    COALESCE(-SUM(j.balance_delta), 0)
             FROM reservations r LEFT JOIN journal j ON j.reservation = r.id
             GROUP BY r.id
             HAVING COALESCE(SUM(j.reserved_delta), 0) != r.held
                 OR (r.state != 'open' AND COALESCE(r.charged, 0) != COALESCE(-SUM(j.balance_delta), 0))",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                Money(r.get(2)?),
                Money(r.get(3)?),
                Money(r.get::<_, Option<i64>>(4)?.unwrap_or(0)),
                Money(r.get(5)?),
            ))
        })?;
        for row in rows {
            let (id, state, held, journal_held, charged, journal_charged) = row?;
            if held != journal_held {
                report.discrepancies.push(Discrepancy {
                    what: format!("hold of reservation {id} ({state})"),
                    stored: held,
                    journal: journal_held,
                });
            } else {
                report.discrepancies.push(Discrepancy {
                    what: format!("charge of reservation {id} ({state})"),
                    stored: charged,
                    journal: journal_charged,
                });
            }
        }
        let count = |sql: &str| -> Result<u64, rusqlite::Error> {
            self.conn
                .query_row(sql, [], |r| r.get::<_, i64>(0))
                .map(|n| n as u64)
        };
        report.journal_entries = count("SELECT count(*) FROM journal")?;
        report.reservations = count("SELECT count(*) FROM reservations")?;
        report.open_reservations = count("SELECT count(*) FROM reservations WHERE state = 'open'")?;
        report.cdrs = count("SELECT count(*) FROM cdrs")?;
        Ok(report)
    }
}

/// Why reading CDRs for an export stopped.
#[derive(Debug, thiserror::Error)]
pub enum CdrReadError {
    /// The database could not be read.
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    /// A stored record is not a CDR (a damaged row).
    #[error("a stored CDR cannot be read: {0}")]
    Decode(String),
    /// The output could not be written.
    #[error("cannot write the export: {0}")]
    Write(std::io::Error),
}

fn quick_check(conn: &Connection, table: Option<&str>) -> Result<Vec<String>, rusqlite::Error> {
    let sql = match table {
        Some(t) => format!("PRAGMA quick_check({t})"),
        None => "PRAGMA quick_check".to_string(),
    };
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    rows.collect()
}

fn integrity_check(conn: &Connection) -> Result<Vec<String>, rusqlite::Error> {
    let mut stmt = conn.prepare("PRAGMA integrity_check")?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    rows.collect()
}

fn describe(found: &[Discrepancy]) -> String {
    let mut parts: Vec<String> = found
        .iter()
        .take(5)
        .map(|d| format!("{}: stored {}, journal {}", d.what, d.stored, d.journal))
        .collect();
    if found.len() > 5 {
        parts.push(format!("and {} more", found.len() - 5));
    }
    parts.join("; ")
}

fn reservation_row(r: &rusqlite::Row<'_>) -> Result<ReservationRow, rusqlite::Error> {
    let state: String = r.get(5)?;
    let info: Option<String> = r.get(9)?;
    Ok(ReservationRow {
        id: ReservationId(r.get::<_, i64>(0)? as u64),
        account: AccountId(r.get(1)?),
        call: r.get(2)?,
        held: Money(r.get(3)?),
        debited: Money(r.get(4)?),
        state: ReservationState::from_name(&state).unwrap_or(ReservationState::Open),
        created_at_us: r.get(6)?,
        updated_at_us: r.get(7)?,
        expires_at_us: r.get(8)?,
        info: info
            .and_then(|i| serde_json::from_str(&i).ok())
            .unwrap_or_default(),
    })
}

fn account_row(r: &rusqlite::Row<'_>) -> Result<AccountStatus, rusqlite::Error> {
    Ok(AccountStatus {
        id: AccountId(r.get(0)?),
        name: r.get(1)?,
        balance: Money(r.get(2)?),
        reserved: Money(r.get(3)?),
        credit_limit: Money(r.get(4)?),
        open_reservations: r.get::<_, i64>(5)? as u64,
    })
}

fn journal_row(r: &rusqlite::Row<'_>) -> Result<JournalEntry, rusqlite::Error> {
    let kind: String = r.get(3)?;
    Ok(JournalEntry {
        seq: r.get(0)?,
        at_us: r.get(1)?,
        account: r.get(2)?,
        kind: EntryKind::from_name(&kind).unwrap_or(EntryKind::Adjustment),
        balance_delta: Money(r.get(4)?),
        reserved_delta: Money(r.get(5)?),
        balance_after: Money(r.get(6)?),
        reserved_after: Money(r.get(7)?),
        reservation: r.get::<_, Option<i64>>(8)?.map(|v| ReservationId(v as u64)),
        call: r.get(9)?,
        reference: r.get(10)?,
        actor: r.get(11)?,
    })
}

/// The CDR of a call whose reservation was settled at start, after the process that ran it died: what the
/// ledger knew of the call, the talk it is known to have had (from its answer to its last extension), and the
/// charge (what was debited).
/// The CDR written for a call whose reservation was settled by recovery (its process or node died): what the
/// reservation knew of the call, reason `recovered`, cost what was debited.
pub fn recovered_cdr(row: &ReservationRow, account: &str) -> CdrRecord {
    let info = &row.info;
    let last_seen = row.updated_at_us.max(0) as u64;
    let talk_s = info
        .answered_at_us
        .map_or(0, |a| last_seen.saturating_sub(a).div_ceil(1_000_000));
    CdrRecord {
        uuid: row.call.clone(),
        caller: info.caller.clone(),
        destination: info.destination.clone(),
        source_ip: info.source_ip.clone(),
        partner: Some(account.to_string()),
        final_state: if info.answered_at_us.is_some() {
            "COMPLETED".into()
        } else {
            "FAILED".into()
        },
        reason: Some("recovered".into()),
        hangup_cause: "NORMAL_UNSPECIFIED".into(),
        carrier: info.carrier.clone(),
        rate_per_minute: info.rate_per_minute,
        setup_us: None,
        talk_s,
        billed_s: info.paid_s,
        cost: row.debited,
        started_at_us: if info.started_at_us != 0 {
            info.started_at_us
        } else {
            row.created_at_us.max(0) as u64
        },
        ended_at_us: last_seen,
    }
}

fn ttl_us(now_us: i64, ttl: std::time::Duration) -> i64 {
    now_us.saturating_add(ttl.as_micros().min(i64::MAX as u128) as i64)
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Creates an empty file readable and writable by its owner only.
pub(crate) fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// Most batches committed before the WAL is copied back even while requests keep coming.
const CHECKPOINT_BATCHES: u64 = 8000;

impl crate::backend::Backend for Store {
    fn apply_batch(
        &mut self,
        ops: &[(&Op, &'static str)],
        now_us: i64,
        upkeep: bool,
    ) -> Result<crate::backend::BatchOutcome, crate::backend::StorageFailure> {
        let failed = |e: rusqlite::Error| crate::backend::StorageFailure(e.to_string());
        let mut answers = Vec::with_capacity(ops.len());
        let outcome = (|| -> Result<crate::backend::BatchOutcome, rusqlite::Error> {
            self.begin()?;
            for (op, actor) in ops {
                match self.apply(op, now_us, actor) {
                    Ok(answer) => answers.push(Ok(answer)),
                    Err(Failure::Refused(e)) => answers.push(Err(e)),
                    Err(Failure::Storage(e)) => return Err(e),
                }
            }
            let mut settled = Vec::new();
            if upkeep {
                settled = match self.expire_due(now_us, 1000) {
                    Ok(e) => e,
                    Err(Failure::Storage(e)) => return Err(e),
                    Err(Failure::Refused(e)) => {
                        log::error!(
                            "{}: expiry of reservations refused: {e}",
                            self.display_path()
                        );
                        Vec::new()
                    }
                };
            }
            let commit_started = std::time::Instant::now();
            self.commit()?;
            Ok(crate::backend::BatchOutcome {
                answers: std::mem::take(&mut answers),
                settled,
                commit_us: commit_started.elapsed().as_micros() as u64,
            })
        })();
        outcome.map_err(|e| {
            self.rollback();
            failed(e)
        })
    }

    fn idle(&mut self) {
        if let Err(e) = self.checkpoint() {
            log::warn!("{}: WAL checkpoint failed: {e}", self.display_path());
        }
    }

    /// The WAL is copied back into the database when the writer is idle (a turn with nothing to do), when
    /// nothing waits after a thousand batches, and at the latest every few thousand batches, so that it cannot
    /// grow without bound.
    fn idle_due(&self, batches: u64, busy: bool, queued: bool) -> bool {
        match batches {
            0 => false,
            n if n >= CHECKPOINT_BATCHES => true,
            n if n >= CHECKPOINT_BATCHES / 8 => !queued,
            _ => !busy && !queued,
        }
    }
}
