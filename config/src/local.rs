//! The local backends' settings (`<local>`): where the embedded backends read their tables, where they put
//! CDRs, and where the ledger lives.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::audit::Numbers;

/// Where the local ledger lives, as the configuration says (`<local><param name="ledger">`).
#[derive(Clone, PartialEq, Eq)]
pub enum LedgerPlace {
    /// Not set: the host's default (the module: `rtc_core.db` in FreeSWITCH's db directory; `rtc-core esl`:
    /// `rtc_core.db` in its working directory; tests and the simulator: in memory).
    HostDefault,
    /// A file; a relative path is under the host's directory for the ledger.
    File(PathBuf),
    /// `:memory:`: nothing on disk, every balance lost at exit (trials and tests only).
    Memory,
    /// `postgres://…`: the shared ledger on PostgreSQL, one set of accounts for several nodes (the URL as given,
    /// or as its `file:`/`env:` reference holds it, password included; shown without it, `Debug` too).
    Postgres(String),
}

impl std::fmt::Debug for LedgerPlace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LedgerPlace::HostDefault => f.write_str("HostDefault"),
            LedgerPlace::File(path) => f.debug_tuple("File").field(path).finish(),
            LedgerPlace::Memory => f.write_str("Memory"),
            LedgerPlace::Postgres(url) => f
                .debug_tuple("Postgres")
                .field(&crate::secret::redact_url(url))
                .finish(),
        }
    }
}

/// How this node uses a shared ledger (`<local>` params `ledger-node-id`, `ledger-pool-size`, `ledger-timeout`,
/// `ledger-lease`, `ledger-ca-file`); unused by the embedded ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedLedger {
    /// This node's id among those sharing the ledger; `None`: the host's name.
    pub node_id: Option<String>,
    /// Connections to the database.
    pub pool_size: usize,
    /// Longest a batch of ledger operations may take before it counts as a database failure.
    pub timeout: Duration,
    /// How long this node's lease lasts without renewal, after which another node settles its calls' money.
    pub lease: Duration,
    /// Certificates (PEM) trusted for the database's TLS besides the system's roots; `None`: the system's only.
    pub ca_file: Option<PathBuf>,
    /// `ledger-global-limits shared`: the global limits of `<settings>` (`max-calls`, `max-cps`: most calls at
    /// once, most calls per second) counted across every node on the ledger, as (calls, per second); `None`:
    /// each node counts its own.
    pub global: Option<(u32, u32)>,
}

impl Default for SharedLedger {
    fn default() -> Self {
        SharedLedger {
            node_id: None,
            pool_size: 4,
            timeout: Duration::from_secs(2),
            lease: Duration::from_secs(15),
            ca_file: None,
            global: None,
        }
    }
}

/// Where the embedded (local) backends read their tables, and where they put CDRs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalFiles {
    /// `partners.csv`: who may call, from which addresses, with which limits.
    pub partners: PathBuf,
    /// `rates.csv`: price per destination prefix, per partner or default.
    pub rates: PathBuf,
    /// `routes.csv`: carriers and dial strings per destination prefix.
    pub routes: PathBuf,
    /// `balances.csv`: each partner's opening prepaid balance.
    pub balances: PathBuf,
    /// CDRs are also appended here as JSON lines when set (an export: the ledger keeps them anyway).
    pub cdr_file: Option<PathBuf>,
    /// How callers' and callees' numbers are written in the CDR exports (`cdr-file`, `rtc-core ledger cdrs`):
    /// `<audit>`'s `numbers`, which covers the audit trail too. The ledger keeps them in the clear for billing.
    pub cdr_numbers: Numbers,
    /// Where the ledger (balances, reservations, journal, CDRs) lives.
    pub ledger: LedgerPlace,
    /// How this node uses the ledger when it is shared (PostgreSQL).
    pub shared: SharedLedger,
}

impl LocalFiles {
    /// The default file names (`rtc_core/partners.csv`, ...) under `base_dir`.
    pub fn under(base_dir: &Path) -> LocalFiles {
        LocalFiles {
            partners: base_dir.join("rtc_core/partners.csv"),
            rates: base_dir.join("rtc_core/rates.csv"),
            routes: base_dir.join("rtc_core/routes.csv"),
            balances: base_dir.join("rtc_core/balances.csv"),
            cdr_file: None,
            cdr_numbers: Numbers::Plain,
            ledger: LedgerPlace::HostDefault,
            shared: SharedLedger::default(),
        }
    }
}
