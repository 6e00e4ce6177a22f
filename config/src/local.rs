//! The local backends' settings (`<local>`): where the embedded backends read their tables, where they put
//! CDRs, and where the ledger lives.

use std::path::{Path, PathBuf};

/// Where the local ledger lives, as the configuration says (`<local><param name="ledger">`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LedgerPlace {
    /// Not set: the host's default (the module: `rtc_core.db` in FreeSWITCH's db directory; `rtc-core esl`:
    /// `rtc_core.db` in its working directory; tests and the simulator: in memory).
    HostDefault,
    /// A file; a relative path is under the host's directory for the ledger.
    File(PathBuf),
    /// `:memory:`: nothing on disk, every balance lost at exit (trials and tests only).
    Memory,
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
    /// Where the ledger (balances, reservations, journal, CDRs) lives.
    pub ledger: LedgerPlace,
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
            ledger: LedgerPlace::HostDefault,
        }
    }
}
