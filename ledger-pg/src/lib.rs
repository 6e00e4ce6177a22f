//! mod_rtc_core's ledger on PostgreSQL: one set of partner accounts shared by several FreeSWITCH nodes.
//!
//! The same operations as the embedded SQLite ledger ([`rtc_ledger`]) — reserve, extend, commit, release,
//! top-up, adjustment, import, CDRs, journal — under the same writer ([`rtc_ledger::Ledger`]): the engine and
//! the services hold a [`rtc_ledger::LedgerHandle`] and never know which database keeps the money.
//!
//! - **No double spend.** Every operation is one server-side function (`schema.sql`) that reads and changes an
//!   account under its row lock: a reservation is made only if the available money covers it at that instant,
//!   whatever other nodes do; a reservation is settled at most once. A batch locks the accounts it touches in id
//!   order first, so two nodes' batches never deadlock.
//! - **Group commit over the network.** A batch is one transaction on one pooled connection (`tokio-postgres` on
//!   the writer's own single-threaded tokio runtime, with a `deadpool` pool). The calls' operations are set-based
//!   (`batch.rs`): worked out in memory under the locks the batch takes, written with one statement per table; an
//!   operator's operations in the batch run before them, one server-side function each, pipelined.
//! - **Shared call limits.** A reservation carries the partner's `max_concurrent` and `max_cps`; the account row
//!   counts open reservations (calls) and reservations per second across every node, exactly (no local budget:
//!   the row lock is taken anyway).
//! - **Nodes and leases.** Each node registers its id and renews a lease; when a node's lease runs out, the
//!   first survivor to see it marks it dead and settles its open reservations (what was debited is charged,
//!   the rest freed, a `recovered` CDR each) — once, whatever the number of survivors racing. A node restarted
//!   with the same id settles what its previous life left open before it takes calls.
//! - **Database failure.** The writer's breaker refuses new reservations at once while the database fails
//!   (the balance service's fail mode applies), keeps settlements and CDRs, and writes them once it answers.
//!   Settling twice is harmless: the second finds the reservation settled and changes nothing.
#![forbid(unsafe_code)]

mod batch;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use deadpool_postgres::Transaction;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use futures_util::future::join_all;
use rtc_ledger::{
    Abandoned, AccountId, AccountRef, AccountStatus, Answer, Backend, BatchOutcome, CallInfo,
    CdrRecord, EntryKind, Ledger, LedgerConfig, LedgerError, Op, OpenError, Opened, ReservationId,
    ReservationRow, ReservationState, StorageFailure,
};
use rtc_money::Money;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

/// The schema version this build creates and uses (`rtc_ledger.meta`, key `schema_version`).
pub const SCHEMA_VERSION: i64 = 1;

/// The schema: tables and the functions every operation runs as.
pub const SCHEMA_SQL: &str = include_str!("schema.sql");

/// How this node uses the shared ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgConfig {
    /// `postgres://user:password@host:port/db?...` (libpq's URL form).
    pub url: String,
    /// This node's id, unique among the nodes sharing the ledger (default: the host's name).
    pub node_id: String,
    /// Connections in the pool.
    pub pool_size: usize,
    /// Longest a batch (or opening) may take before it counts as a database failure.
    pub timeout: Duration,
    /// How long this node's lease lasts without renewal: after that, another node settles its reservations.
    pub lease: Duration,
    /// Certificates (PEM) trusted for the database's TLS besides the system's roots (a private CA).
    pub ca_file: Option<std::path::PathBuf>,
}

impl PgConfig {
    /// The defaults for a ledger at `url`: node id the host's name, 4 connections, 2 s, a 15 s lease.
    pub fn new(url: &str) -> PgConfig {
        PgConfig {
            url: url.to_string(),
            node_id: host_name(),
            pool_size: 4,
            timeout: Duration::from_secs(2),
            lease: Duration::from_secs(15),
            ca_file: None,
        }
    }
}

/// The TLS of the connections, as the HTTP services': rustls (ring), the system's trusted roots and the
/// certificates of `ca_file`. Used when the server offers TLS (`sslmode=prefer`, the default) or must
/// (`sslmode=require`); the server's certificate is always verified. `sslmode=disable` connects in plain text.
pub fn tls(
    ca_file: Option<&std::path::Path>,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, String> {
    use rustls::pki_types::pem::PemObject;
    // rustls wants a process-wide provider; an error means one is installed already, which serves as well.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| format!("{}: cannot read the CA file: {e}", path.display()))?;
        let mut found = 0;
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
            let cert =
                cert.map_err(|e| format!("{}: not PEM certificates: {e}", path.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("{}: a certificate rustls refuses: {e}", path.display()))?;
            found += 1;
        }
        if found == 0 {
            return Err(format!("{}: no certificate found", path.display()));
        }
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// The host's name (`/etc/hostname`, else `HOSTNAME`, else `localhost`).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme + 3 => {
            let creds = &url[scheme + 3..at];
            match creds.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &creds[..colon],
                    &url[at..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Opens the shared ledger: creates or checks the schema, registers this node (refusing an id a live node
/// holds), settles what this node's previous life left open (each with a `recovered` CDR), and starts the
/// writer. `ledger`'s location is not used.
pub fn open(config: PgConfig, ledger: LedgerConfig) -> Result<Ledger, OpenError> {
    // Opening drives the client's futures (connection, TLS, schema, registration) to completion with `block_on`,
    // which keeps them on the calling thread's stack: run it on a thread of its own with room for them, whatever
    // thread asks (a FreeSWITCH thread's stack is small).
    let place = redact(&config.url);
    std::thread::Builder::new()
        .name("rtc-ledger-open".into())
        .stack_size(OPEN_STACK)
        .spawn(move || open_here(config, ledger))
        .map_err(OpenError::Thread)?
        .join()
        .unwrap_or_else(|_| {
            Err(OpenError::Database {
                place,
                action: "cannot open the ledger",
                detail: "the opening thread panicked (logged)".into(),
            })
        })
}

/// The opening thread's stack.
const OPEN_STACK: usize = 8 << 20;

fn open_here(config: PgConfig, ledger: LedgerConfig) -> Result<Ledger, OpenError> {
    let place = redact(&config.url);
    let db = |action: &'static str| {
        let place = place.clone();
        move |detail: String| OpenError::Database {
            place,
            action,
            detail,
        }
    };
    if config.node_id.is_empty() || config.node_id.len() > 128 {
        return Err(db("bad node id")(format!(
            "node id {:?} must be 1 to 128 characters",
            config.node_id
        )));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| db("cannot start the ledger's runtime")(e.to_string()))?;
    let mut pg: tokio_postgres::Config = config
        .url
        .parse()
        .map_err(|e: tokio_postgres::Error| db("bad database URL")(e.to_string()))?;
    pg.connect_timeout(config.timeout);
    pg.application_name(format!("mod_rtc_core {}", config.node_id));
    let tls = tls(config.ca_file.as_deref()).map_err(|e| db("bad TLS settings")(e))?;
    let manager = Manager::from_config(
        pg,
        tls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(config.pool_size.max(1))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(config.timeout))
        .create_timeout(Some(config.timeout))
        .build()
        .map_err(|e| db("cannot build the connection pool")(e.to_string()))?;
    let now = (ledger.clock)();
    let opening = runtime.block_on(Box::pin(async {
        tokio::time::timeout(config.timeout * 5, prepare(&pool, &config, now, &place))
            .await
            .unwrap_or_else(|_| {
                Err(db("cannot open the ledger")(format!(
                    "no answer within {:?}",
                    config.timeout * 5
                )))
            })
    }))?;
    let (opened, incarnation, recovered) = opening;
    for r in &recovered {
        r.log_recovered(&place, "this node's previous run");
    }
    log::info!(
        "{place}: ledger on PostgreSQL, node {:?} (run {incarnation}), lease {:?}",
        config.node_id,
        config.lease
    );
    live_here().insert(live_key(&place, &config.node_id));
    let backend = PgBackend {
        runtime,
        pool,
        config,
        incarnation,
        place: place.clone(),
    };
    Ledger::start(Box::new(backend), &place, ledger, opened, recovered)
}

/// Creates or checks the schema, registers the node, recovers its previous run.
async fn prepare(
    pool: &Pool,
    config: &PgConfig,
    now: i64,
    place: &str,
) -> Result<(Opened, i64, Vec<Abandoned>), OpenError> {
    let db = |action: &'static str| {
        move |e: &dyn std::fmt::Display| OpenError::Database {
            place: place.to_string(),
            action,
            detail: e.to_string(),
        }
    };
    let mut client = pool.get().await.map_err(|e| db("cannot connect")(&e))?;
    let mut opened = Opened::default();
    {
        let tx = client
            .transaction()
            .await
            .map_err(|e| db("cannot begin")(&pg_error(&e)))?;
        // One node at a time creates or migrates the schema.
        tx.execute("SELECT pg_advisory_xact_lock(7274634)", &[])
            .await
            .map_err(|e| db("cannot lock the schema")(&pg_error(&e)))?;
        let exists: bool = one(&tx,
                "SELECT EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = 'rtc_ledger' AND tablename = 'meta')",
                &[],
            )
            .await
            .map_err(|e| db("cannot read the database")(&pg_error(&e)))?
            .get(0);
        if exists {
            let version: Option<String> = opt(
                &tx,
                "SELECT value FROM rtc_ledger.meta WHERE key = 'schema_version'",
                &[],
            )
            .await
            .map_err(|e| db("cannot read the schema version")(&pg_error(&e)))?
            .map(|r| r.get(0));
            let version: i64 = version.and_then(|v| v.parse().ok()).unwrap_or(0);
            if version > SCHEMA_VERSION {
                return Err(db("schema too new")(&format!(
                    "ledger schema version {version} is newer than this version's ({SCHEMA_VERSION}); run the \
                     version that wrote it, or a newer one"
                )));
            }
            if version < 1 {
                return Err(db("not a ledger")(&format!(
                    "schema rtc_ledger has no schema version this version knows ({version})"
                )));
            }
            // Versions between 1 and SCHEMA_VERSION would be migrated here, oldest first, in this transaction.
        } else {
            tx.batch_execute("CREATE SCHEMA IF NOT EXISTS rtc_ledger")
                .await
                .map_err(|e| db("cannot create the schema")(&pg_error(&e)))?;
            tx.batch_execute(SCHEMA_SQL)
                .await
                .map_err(|e| db("cannot create the ledger's tables")(&pg_error(&e)))?;
            tx.execute(
                "INSERT INTO rtc_ledger.meta(key, value) VALUES ('schema_version', $1), ('created_at_us', $2), \
                 ('created_by', $3)",
                &[
                    &SCHEMA_VERSION.to_string(),
                    &now.to_string(),
                    &format!("rtc-ledger-pg {} on node {}", env!("CARGO_PKG_VERSION"), config.node_id),
                ],
            )
            .await
            .map_err(|e| db("cannot create the ledger")(&pg_error(&e)))?;
            opened.created = true;
        }
        tx.commit()
            .await
            .map_err(|e| db("cannot commit the schema")(&pg_error(&e)))?;
    }
    let tx = client
        .transaction()
        .await
        .map_err(|e| db("cannot begin")(&pg_error(&e)))?;
    let holder = opt(
        &tx,
        "SELECT state, lease_until_us, host, pid FROM rtc_ledger.nodes WHERE id = $1 FOR UPDATE",
        &[&config.node_id],
    )
    .await
    .map_err(|e| db("cannot read the nodes")(&pg_error(&e)))?;
    let me = host_name();
    if let Some(row) = holder {
        let state: String = row.get(0);
        let lease_until_us: i64 = row.get(1);
        let host: String = row.get(2);
        let pid: i32 = row.get(3);
        // A run of this host that is gone (its process ended, or in this process its ledger was dropped) left
        // the id behind; anything else holds it.
        let dead_here = host == me
            && if pid as u32 == std::process::id() {
                !live_here().contains(&live_key(place, &config.node_id))
            } else {
                !std::path::Path::new(&format!("/proc/{pid}")).exists()
            };
        if state == "alive" && lease_until_us > now && !dead_here {
            return Err(OpenError::NodeInUse {
                place: place.to_string(),
                node: config.node_id.clone(),
                holder: format!("host {host}, pid {pid}"),
                lease_until_us,
            });
        }
    }
    let lease_us = config.lease.as_micros() as i64;
    let incarnation: i64 = one(&tx,
            "INSERT INTO rtc_ledger.nodes(id, incarnation, state, lease_until_us, started_at_us, host, pid)
             VALUES ($1, 1, 'alive', $2, $3, $4, $5)
             ON CONFLICT (id) DO UPDATE SET incarnation = rtc_ledger.nodes.incarnation + 1, state = 'alive',
                 lease_until_us = EXCLUDED.lease_until_us, started_at_us = EXCLUDED.started_at_us,
                 host = EXCLUDED.host, pid = EXCLUDED.pid, taken_over_by = NULL, taken_over_at_us = NULL
             RETURNING incarnation",
            &[
                &config.node_id,
                &(now + lease_us),
                &now,
                &me,
                &(std::process::id() as i32),
            ],
        )
        .await
        .map_err(|e| db("cannot register the node")(&pg_error(&e)))?
        .get(0);
    let mut recovered = Vec::new();
    loop {
        let batch = abandon(
            &tx,
            &config.node_id,
            Some(std::slice::from_ref(&config.node_id)),
            now,
        )
        .await
        .map_err(|e| db("cannot settle what this node left open")(&pg_error(&e)))?;
        let done = batch.len() < ABANDON_LIMIT as usize;
        recovered.extend(batch);
        if done {
            break;
        }
    }
    tx.commit()
        .await
        .map_err(|e| db("cannot commit the node's registration")(&pg_error(&e)))?;
    Ok((opened, incarnation, recovered))
}

/// The nodes this process runs, by database and id: two ledgers of one process never share an id.
fn live_here() -> std::sync::MutexGuard<'static, BTreeSet<String>> {
    static LIVE: std::sync::Mutex<BTreeSet<String>> = std::sync::Mutex::new(BTreeSet::new());
    LIVE.lock().unwrap_or_else(|p| p.into_inner())
}

fn live_key(place: &str, node: &str) -> String {
    format!("{place}\u{0}{node}")
}

/// One row of a statement prepared once per connection (the pool keeps each connection's statements).
async fn one(
    tx: &Transaction<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Row, tokio_postgres::Error> {
    let statement = tx.prepare_cached(sql).await?;
    tx.query_one(&statement, params).await
}

/// At most one row, as [`one`].
async fn opt(
    tx: &Transaction<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Option<Row>, tokio_postgres::Error> {
    let statement = tx.prepare_cached(sql).await?;
    tx.query_opt(&statement, params).await
}

/// Every row, as [`one`].
async fn all(
    tx: &Transaction<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, tokio_postgres::Error> {
    let statement = tx.prepare_cached(sql).await?;
    tx.query(&statement, params).await
}

/// Most reservations one upkeep settles (the rest wait for the next).
const ABANDON_LIMIT: i32 = 1000;

/// Settles open reservations: of `nodes` (taken over, with CDRs stored), or (None) those past their expiry.
async fn abandon(
    tx: &Transaction<'_>,
    node: &str,
    nodes: Option<&[String]>,
    now: i64,
) -> Result<Vec<Abandoned>, tokio_postgres::Error> {
    let rows = all(
        tx,
        "SELECT id, account, call, charged, released, debited, created_at_us, updated_at_us, info
             FROM rtc_ledger.abandon($1, $2, $3, $4)",
        &[&node, &nodes, &now, &ABANDON_LIMIT],
    )
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let account: String = r.get(1);
        let info: Option<String> = r.get(8);
        let row = ReservationRow {
            id: ReservationId(r.get::<_, i64>(0) as u64),
            account: AccountId(0),
            call: r.get(2),
            held: Money::ZERO,
            debited: Money(r.get(5)),
            state: if nodes.is_some() {
                ReservationState::Recovered
            } else {
                ReservationState::Expired
            },
            created_at_us: r.get(6),
            updated_at_us: r.get(7),
            expires_at_us: now,
            info: info
                .and_then(|i| serde_json::from_str::<CallInfo>(&i).ok())
                .unwrap_or_default(),
        };
        let cdr = match nodes {
            Some(_) => {
                let cdr = rtc_ledger::recovered_cdr(&row, &account);
                store_cdr(tx, node, &cdr).await?;
                Some(cdr)
            }
            None => None,
        };
        out.push(Abandoned {
            reservation: row.id,
            account,
            call: row.call,
            charged: Money(r.get(3)),
            released: Money(r.get(4)),
            cdr,
        });
    }
    Ok(out)
}

async fn store_cdr(
    tx: &Transaction<'_>,
    node: &str,
    cdr: &CdrRecord,
) -> Result<bool, tokio_postgres::Error> {
    let record = serde_json::to_string(cdr).unwrap_or_default();
    let row = one(
        tx,
        "SELECT rtc_ledger.store_cdr($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            &cdr.uuid,
            &cdr.partner,
            &(cdr.started_at_us as i64),
            &(cdr.ended_at_us as i64),
            &cdr.cost.0,
            &cdr.reason,
            &node,
            &record,
        ],
    )
    .await?;
    Ok(row.get(0))
}

/// A database error with its server message, detail and code when there are.
fn pg_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!(
            "{} ({}){}",
            db.message(),
            db.code().code(),
            db.detail().map(|d| format!(": {d}")).unwrap_or_default()
        ),
        None => match std::error::Error::source(e) {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        },
    }
}

/// The ledger's storage on PostgreSQL, run by the writer thread.
struct PgBackend {
    /// The writer's own single-threaded runtime: the client's I/O runs on the writer thread, never on the engine's
    /// or FreeSWITCH's.
    runtime: tokio::runtime::Runtime,
    /// The connections.
    pool: Pool,
    /// This node.
    config: PgConfig,
    /// This node's run (bumped at every start): a lease renewal by an older run fails.
    incarnation: i64,
    /// The database, for messages.
    place: String,
}

impl Drop for PgBackend {
    fn drop(&mut self) {
        live_here().remove(&live_key(&self.place, &self.config.node_id));
    }
}

/// Why a batch failed: a storage failure (nothing applied), or one the database rolled back whole and that can
/// simply run again (a deadlock or serialization failure).
enum BatchError {
    Retry(String),
    Failed(String),
}

impl From<tokio_postgres::Error> for BatchError {
    fn from(e: tokio_postgres::Error) -> BatchError {
        let text = pg_error(&e);
        match e.code().map(|c| c.code()) {
            Some("40P01" | "40001") => BatchError::Retry(text),
            _ => BatchError::Failed(text),
        }
    }
}

impl Backend for PgBackend {
    fn apply_batch(
        &mut self,
        ops: &[(&Op, &'static str)],
        now_us: i64,
        upkeep: bool,
    ) -> Result<BatchOutcome, StorageFailure> {
        let started = Instant::now();
        let mut outcome = BatchOutcome::default();
        if !ops.is_empty() {
            let mut attempt = 0;
            loop {
                attempt += 1;
                let run = self.within(self.run_ops(ops, now_us));
                match run {
                    Ok((answers, commit_us)) => {
                        outcome.answers = answers;
                        outcome.commit_us = commit_us;
                        break;
                    }
                    Err(BatchError::Retry(why)) if attempt < 4 => {
                        log::info!(
                            "{}: batch rolled back by the database ({why}); run again",
                            self.place
                        );
                    }
                    Err(BatchError::Retry(why) | BatchError::Failed(why)) => {
                        return Err(StorageFailure(why));
                    }
                }
            }
        }
        if upkeep {
            let run = self.within(self.upkeep(now_us));
            match run {
                Ok((settled, new_run)) => {
                    outcome.settled = settled;
                    if let Some(run) = new_run {
                        self.incarnation = run;
                    }
                }
                // The operations are committed: their answers stand; upkeep runs again at the next turn.
                Err(BatchError::Retry(why) | BatchError::Failed(why)) => {
                    log::warn!(
                        "{}: upkeep (lease, take-over, expiry) failed: {why}",
                        self.place
                    );
                    if ops.is_empty() {
                        return Err(StorageFailure(why));
                    }
                }
            }
        }
        log::trace!(
            "{}: batch of {} in {:?}",
            self.place,
            ops.len(),
            started.elapsed()
        );
        Ok(outcome)
    }

    fn close(&mut self) {
        let node = self.config.node_id.clone();
        let incarnation = self.incarnation;
        let pool = self.pool.clone();
        let timeout = self.config.timeout;
        let place = self.place.clone();
        // A node that leaves with nothing open says so; one that leaves reservations open (settlements the
        // database would not take) keeps its lease to run out, so that another node settles them.
        let left = self.runtime.block_on(async move {
            tokio::time::timeout(timeout, async move {
                let client = pool.get().await.map_err(|e| e.to_string())?;
                client
                    .execute(
                        "UPDATE rtc_ledger.nodes SET state = 'stopped'
                         WHERE id = $1 AND incarnation = $2 AND state = 'alive' AND NOT EXISTS (
                             SELECT 1 FROM rtc_ledger.reservations WHERE node = $1 AND state = 'open')",
                        &[&node, &incarnation],
                    )
                    .await
                    .map_err(|e| pg_error(&e))
            })
            .await
            .unwrap_or_else(|_| Err("no answer".into()))
        });
        match left {
            Ok(1) => log::info!(
                "{place}: node {:?} left the shared ledger",
                self.config.node_id
            ),
            Ok(_) => log::warn!(
                "{place}: node {:?} leaves reservations open; another node settles them when its lease runs out",
                self.config.node_id
            ),
            Err(e) => log::warn!(
                "{place}: node {:?} could not say it left ({e}); another node takes it over when its lease runs out",
                self.config.node_id
            ),
        }
        self.pool.close();
    }
}

/// The parameters of one account reference: (id, name).
fn account_params(account: &AccountRef) -> (Option<i64>, Option<String>) {
    match account {
        AccountRef::Id(id) => (Some(id.0), None),
        AccountRef::Name(name) => (None, Some(name.clone())),
    }
}

/// One function's answer row.
struct Res {
    code: String,
    id: Option<i64>,
    a: Option<i64>,
    b: Option<i64>,
}

impl Res {
    fn of(row: &Row) -> Res {
        Res {
            code: row.get(0),
            id: row.get(1),
            a: row.get(2),
            b: row.get(3),
        }
    }
    fn m(v: Option<i64>) -> Money {
        Money(v.unwrap_or(0))
    }
}

impl PgBackend {
    /// Runs `work` on the writer's runtime, a database failure if it takes longer than the timeout.
    fn within<T>(
        &self,
        work: impl Future<Output = Result<T, BatchError>>,
    ) -> Result<T, BatchError> {
        let timeout = self.config.timeout;
        // The batch's futures live on the heap: the writer thread's stack holds only their polls.
        self.runtime.block_on(Box::pin(async {
            tokio::time::timeout(timeout, work)
                .await
                .unwrap_or_else(|_| {
                    Err(BatchError::Failed(format!(
                        "no answer from the database within {timeout:?}"
                    )))
                })
        }))
    }

    /// One transaction: lock the accounts in id order, run every operation pipelined, commit.
    async fn run_ops(
        &self,
        ops: &[(&Op, &'static str)],
        now: i64,
    ) -> Result<(Vec<Result<Answer, LedgerError>>, u64), BatchError> {
        let mut client = self
            .pool
            .get()
            .await
            .map_err(|e| BatchError::Failed(format!("cannot get a connection: {e}")))?;
        let tx = client.transaction().await?;
        // What calls do runs set-based (batch.rs); an operator's operations run one function each, first, so that a
        // reservation in the same batch sees a top-up. Every account either part touches is locked first, in id
        // order, so two nodes' batches never deadlock.
        let (calls, others): (Vec<usize>, Vec<usize>) =
            (0..ops.len()).partition(|&i| batch::is_call_op(ops[i].0));
        let mut answers: Vec<Option<Result<Answer, LedgerError>>> =
            (0..ops.len()).map(|_| None).collect();
        if !others.is_empty() {
            let (names, ids, reservations) = batch::accounts_named(ops);
            one(
                &tx,
                "SELECT rtc_ledger.lock_accounts($1, $2, $3)",
                &[&names, &ids, &reservations],
            )
            .await?;
            let futures = others
                .iter()
                .map(|&i| self.apply(&tx, ops[i].0, ops[i].1, now));
            for (&i, a) in others.iter().zip(join_all(futures).await) {
                answers[i] = Some(a?);
            }
        }
        if !calls.is_empty() {
            let call_ops: Vec<(&Op, &'static str)> = calls.iter().map(|&i| ops[i]).collect();
            let call_answers = batch::run(&tx, &self.config.node_id, &call_ops, now).await?;
            for (&i, a) in calls.iter().zip(call_answers) {
                answers[i] = Some(a);
            }
        }
        let commit_started = Instant::now();
        tx.commit().await?;
        let answers = answers
            .into_iter()
            .map(|a| {
                a.unwrap_or_else(|| {
                    Err(LedgerError::Storage("an operation went unanswered".into()))
                })
            })
            .collect();
        Ok((answers, commit_started.elapsed().as_micros() as u64))
    }

    /// One operator's operation (an account opened, a top-up, an adjustment, an import, a query) inside the batch's
    /// transaction: `Ok(Err(_))` is a refusal that changed nothing.
    async fn apply(
        &self,
        tx: &Transaction<'_>,
        op: &Op,
        actor: &str,
        now: i64,
    ) -> Result<Result<Answer, LedgerError>, tokio_postgres::Error> {
        let node = self.config.node_id.as_str();
        if let Err(e) = op.check_amounts() {
            return Ok(Err(e));
        }
        Ok(match op {
            Op::OpenAccount { name, credit_limit } => {
                let row = one(
                    tx,
                    "SELECT * FROM rtc_ledger.open_account($1, $2, $3)",
                    &[name, &credit_limit.0, &now],
                )
                .await?;
                Ok(Answer::AccountOpened(AccountId(
                    Res::of(&row).id.unwrap_or(0),
                )))
            }
            Op::TopUp {
                account,
                amount,
                reference,
                actor,
            }
            | Op::Adjust {
                account,
                amount,
                reference,
                actor,
            } => {
                let kind = match op {
                    Op::TopUp { .. } => EntryKind::Topup,
                    _ => EntryKind::Adjustment,
                };
                self.movement(tx, account, *amount, reference, kind, actor, now)
                    .await?
            }
            Op::Import {
                name,
                amount,
                reference,
            } => {
                let row = one(
                    tx,
                    "SELECT * FROM rtc_ledger.import($1, $2, $3, $4, $5, $6)",
                    &[&node, name, &amount.0, reference, &now, &actor],
                )
                .await?;
                Ok(Answer::Imported(Res::of(&row).a == Some(1)))
            }
            Op::Account(account) => {
                let (id, name) = account_params(account);
                let row = opt(tx,
                        "SELECT id, name, balance, reserved, credit_limit, open_calls FROM rtc_ledger.accounts
                         WHERE id = rtc_ledger.account_of($1, $2)",
                        &[&id, &name],
                    )
                    .await?;
                match row {
                    Some(row) => Ok(Answer::Account(account_status(&row))),
                    None => Err(LedgerError::UnknownAccount(account.to_string())),
                }
            }
            Op::Accounts => {
                let rows = all(tx,
                        "SELECT id, name, balance, reserved, credit_limit, open_calls FROM rtc_ledger.accounts
                         ORDER BY name",
                        &[],
                    )
                    .await?;
                Ok(Answer::Accounts(rows.iter().map(account_status).collect()))
            }
            // What calls do runs in the calls' batch (batch.rs).
            call => Err(LedgerError::Storage(format!(
                "{} is run by the calls' batch, not one function at a time",
                call.name()
            ))),
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn movement(
        &self,
        tx: &Transaction<'_>,
        account: &AccountRef,
        amount: Money,
        reference: &str,
        kind: EntryKind,
        actor: &str,
        now: i64,
    ) -> Result<Result<Answer, LedgerError>, tokio_postgres::Error> {
        let (id, name) = account_params(account);
        let row = one(
            tx,
            "SELECT * FROM rtc_ledger.movement($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &self.config.node_id,
                &id,
                &name,
                &amount.0,
                &reference,
                &kind.name(),
                &now,
                &actor,
            ],
        )
        .await?;
        let r = Res::of(&row);
        Ok(match r.code.as_str() {
            "moved" => Ok(Answer::Moved {
                balance: Res::m(r.a),
                duplicate: r.b == Some(1),
            }),
            "reference_reused" => Err(LedgerError::ReferenceReused {
                reference: reference.to_string(),
                kind: kind.name(),
                amount: Res::m(r.a),
            }),
            _ => Err(LedgerError::UnknownAccount(account.to_string())),
        })
    }

    /// Renews the lease, takes over nodes whose lease ran out, settles their reservations and expired ones.
    async fn upkeep(&self, now: i64) -> Result<(Vec<Abandoned>, Option<i64>), BatchError> {
        let mut client = self
            .pool
            .get()
            .await
            .map_err(|e| BatchError::Failed(format!("cannot get a connection: {e}")))?;
        let tx = client.transaction().await?;
        let node = self.config.node_id.clone();
        let lease_us = self.config.lease.as_micros() as i64;
        let mut new_run = None;
        let renewed: bool = one(
            &tx,
            "SELECT rtc_ledger.renew($1, $2, $3)",
            &[&node, &self.incarnation, &(now + lease_us)],
        )
        .await?
        .get(0);
        if !renewed {
            // Our lease ran out (the database was out of reach longer than the lease) and another node took us
            // over: what we had open is settled. Go on as a new run.
            let incarnation: i64 = one(&tx,
                    "UPDATE rtc_ledger.nodes SET incarnation = incarnation + 1, state = 'alive', lease_until_us = $2,
                            taken_over_by = NULL, taken_over_at_us = NULL
                     WHERE id = $1 RETURNING incarnation",
                    &[&node, &(now + lease_us)],
                )
                .await?
                .get(0);
            log::error!(
                "{}: node {node:?} was taken over by another node (its lease of {:?} ran out); the reservations it \
                 had open were settled there, and its calls' settlements are refused as settled already (their \
                 CDRs are kept); going on as run {incarnation}",
                self.place,
                self.config.lease
            );
            new_run = Some(incarnation);
        }
        let taken: Vec<String> = all(&tx, "SELECT rtc_ledger.take_over($1, $2)", &[&node, &now])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for dead in &taken {
            log::warn!(
                "{}: node {dead:?} stopped renewing its lease: taken over by {node:?}; its open reservations are \
                 settled here",
                self.place
            );
        }
        let dead: Vec<String> = all(&tx,
                "SELECT n.id FROM rtc_ledger.nodes n WHERE n.state = 'dead' AND EXISTS (
                     SELECT 1 FROM rtc_ledger.reservations r WHERE r.node = n.id AND r.state = 'open')",
                &[],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut settled = Vec::new();
        if !dead.is_empty() {
            settled.extend(abandon(&tx, &node, Some(&dead), now).await?);
        }
        settled.extend(abandon(&tx, &node, None, now).await?);
        tx.commit().await?;
        Ok((settled, new_run))
    }
}

fn account_status(row: &Row) -> AccountStatus {
    AccountStatus {
        id: AccountId(row.get(0)),
        name: row.get(1),
        balance: Money(row.get(2)),
        reserved: Money(row.get(3)),
        credit_limit: Money(row.get(4)),
        open_reservations: row.get::<_, i32>(5) as u64,
    }
}

/// What a database's money looks like as a whole: for checks and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Totals {
    /// Sum of every account's balance.
    pub balances: Money,
    /// Sum of every account's reserved money.
    pub reserved: Money,
    /// Sum of every journal entry's balance movement.
    pub journal: Money,
    /// Open reservations.
    pub open: i64,
    /// Accounts whose balance is not their journal's sum, or whose reserved money is not their open holds.
    pub discrepancies: Vec<String>,
}

/// Runs `work` with a connection of its own to `url` (offline reading: checks, tests, operators' commands).
fn offline<T>(
    url: &str,
    work: impl AsyncFnOnce(&tokio_postgres::Client) -> Result<T, String>,
) -> Result<T, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(url, tls(None)?)
            .await
            .map_err(|e| format!("{}: {}", redact(url), pg_error(&e)))?;
        let conn = tokio::spawn(connection);
        let result = work(&client).await;
        drop(client);
        let _ = conn.await;
        result
    })
}

/// Reads the ledger's totals and checks every account against its journal and open holds (`rtc-core ledger
/// check` for PostgreSQL, and the tests' proof that no money appeared or vanished).
pub fn check(url: &str) -> Result<Totals, String> {
    offline(url, async |client| {
        let q = |e: tokio_postgres::Error| pg_error(&e);
        let row = client
            .query_one(
                "SELECT COALESCE(SUM(balance), 0)::bigint, COALESCE(SUM(reserved), 0)::bigint,
                        (SELECT COALESCE(SUM(balance_delta), 0)::bigint FROM rtc_ledger.journal),
                        (SELECT count(*) FROM rtc_ledger.reservations WHERE state = 'open')
                 FROM rtc_ledger.accounts",
                &[],
            )
            .await
            .map_err(q)?;
        let calls = client
            .query_one(
                "SELECT t.open_calls, (SELECT count(*) FROM rtc_ledger.reservations WHERE state = 'open')
                 FROM rtc_ledger.totals t WHERE t.id = 1",
                &[],
            )
            .await
            .map_err(q)?;
        let (counted, open): (i32, i64) = (calls.get(0), calls.get(1));
        let mut totals = Totals {
            balances: Money(row.get(0)),
            reserved: Money(row.get(1)),
            journal: Money(row.get(2)),
            open: row.get(3),
            discrepancies: Vec::new(),
        };
        if i64::from(counted) != open {
            totals.discrepancies.push(format!(
                "all nodes' calls: {counted} counted against {open} open reservations"
            ));
        }
        for r in client
            .query(
                "SELECT a.name, a.balance, COALESCE(j.sum, 0)::bigint, a.reserved, COALESCE(h.held, 0)::bigint,
                        a.open_calls, COALESCE(h.n, 0)
                 FROM rtc_ledger.accounts a
                 LEFT JOIN (SELECT account, SUM(balance_delta) AS sum FROM rtc_ledger.journal GROUP BY account) j
                        ON j.account = a.id
                 LEFT JOIN (SELECT account, SUM(held) AS held, count(*) AS n FROM rtc_ledger.reservations
                            WHERE state = 'open' GROUP BY account) h ON h.account = a.id
                 WHERE a.balance <> COALESCE(j.sum, 0) OR a.reserved <> COALESCE(h.held, 0)
                    OR a.open_calls <> COALESCE(h.n, 0)",
                &[],
            )
            .await
            .map_err(q)?
        {
            let name: String = r.get(0);
            totals.discrepancies.push(format!(
                "account {name:?}: balance {} against journal {}, reserved {} against open holds {}, calls {} \
                 against open reservations {}",
                Money(r.get(1)),
                Money(r.get(2)),
                Money(r.get(3)),
                Money(r.get(4)),
                r.get::<_, i32>(5),
                r.get::<_, i64>(6)
            ));
        }
        Ok(totals)
    })
}

/// Shared by tests and benchmarks: a [`LedgerConfig`] whose location is unused (the database is the URL's).
pub fn ledger_config() -> LedgerConfig {
    LedgerConfig::new(rtc_ledger::Location::Memory)
}

/// One node as the shared ledger knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRow {
    /// Its id.
    pub id: String,
    /// `alive`, `stopped` or `dead` (taken over).
    pub state: String,
    /// Until when its lease runs (µs since the epoch).
    pub lease_until_us: i64,
    /// The node that took it over, if one did.
    pub taken_over_by: Option<String>,
}

/// The nodes on the ledger.
pub fn nodes(url: &str) -> Result<Vec<NodeRow>, String> {
    offline(url, async |client| {
        let rows = client
            .query(
                "SELECT id, state, lease_until_us, taken_over_by FROM rtc_ledger.nodes ORDER BY id",
                &[],
            )
            .await
            .map_err(|e| pg_error(&e))?;
        Ok(rows
            .iter()
            .map(|r| NodeRow {
                id: r.get(0),
                state: r.get(1),
                lease_until_us: r.get(2),
                taken_over_by: r.get(3),
            })
            .collect())
    })
}

/// The money one node moved since a moment, from the shared journal (the simulator's summary).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeSummary {
    /// Opening balances imported.
    pub opening_balances: Money,
    /// Money paid in.
    pub topups: Money,
    /// Held for calls: reservations and their extensions.
    pub held: Money,
    /// Charged by commits.
    pub charged: Money,
    /// Charged by recovery or expiry (a dead node's calls settled here, or reservations nobody settled).
    pub charged_by_recovery: Money,
    /// Held money given back at settlement.
    pub released: Money,
    /// Journal entries written.
    pub journal_entries: u64,
    /// Still held by this node's open reservations.
    pub reserved_at_end: Money,
    /// CDRs this node stored for calls that ended since.
    pub cdrs_stored: u64,
}

/// What node `node` moved in the shared ledger from `since_us` on.
pub fn node_summary(url: &str, node: &str, since_us: i64) -> Result<NodeSummary, String> {
    offline(url, async |client| {
        let q = |e: tokio_postgres::Error| pg_error(&e);
        let mut s = NodeSummary::default();
        for r in client
            .query(
                "SELECT kind, COALESCE(SUM(balance_delta), 0)::bigint, COALESCE(SUM(reserved_delta), 0)::bigint,
                        COALESCE(SUM(GREATEST(balance_delta - reserved_delta, 0)), 0)::bigint, count(*)
                 FROM rtc_ledger.journal WHERE node = $1 AND at_us >= $2 GROUP BY kind",
                &[&node, &since_us],
            )
            .await
            .map_err(q)?
        {
            let kind: String = r.get(0);
            let (balance, reserved, freed) = (
                Money(r.get(1)),
                Money(r.get(2)),
                Money(r.get(3)),
            );
            s.journal_entries += r.get::<_, i64>(4) as u64;
            match kind.as_str() {
                "import" => s.opening_balances = balance,
                "topup" => s.topups = balance,
                "reserve" | "extend" => s.held = Money(s.held.0 + reserved.0),
                "commit" => {
                    s.charged = Money(-balance.0);
                    s.released = Money(s.released.0 + freed.0);
                }
                "release" | "expiry" | "recovery" => {
                    if kind != "release" {
                        s.charged_by_recovery = Money(s.charged_by_recovery.0 - balance.0);
                    }
                    s.released = Money(s.released.0 + freed.0);
                }
                _ => {}
            }
        }
        let row = client
            .query_one(
                "SELECT COALESCE(SUM(held), 0)::bigint FROM rtc_ledger.reservations WHERE node = $1 AND state = 'open'",
                &[&node],
            )
            .await
            .map_err(q)?;
        s.reserved_at_end = Money(row.get(0));
        let row = client
            .query_one(
                "SELECT count(*) FROM rtc_ledger.cdrs WHERE node = $1 AND ended_at_us >= $2",
                &[&node, &since_us],
            )
            .await
            .map_err(q)?;
        s.cdrs_stored = row.get::<_, i64>(0) as u64;
        Ok(s)
    })
}

/// Most open calls any one account has right now (a benchmark samples it to measure a limit's overshoot).
pub fn peak_open_calls(url: &str) -> Result<i64, String> {
    offline(url, async |client| {
        let row = client
            .query_one(
                "SELECT COALESCE(MAX(open_calls), 0)::bigint FROM rtc_ledger.accounts",
                &[],
            )
            .await
            .map_err(|e| pg_error(&e))?;
        Ok(row.get(0))
    })
}

/// Every account's money, by name (`rtc-core ledger balances` on a shared ledger).
pub fn accounts(url: &str) -> Result<Vec<AccountStatus>, String> {
    offline(url, async |client| {
        let rows = client
            .query(
                "SELECT id, name, balance, reserved, credit_limit, open_calls FROM rtc_ledger.accounts ORDER BY name",
                &[],
            )
            .await
            .map_err(|e| pg_error(&e))?;
        Ok(rows.iter().map(account_status).collect())
    })
}
