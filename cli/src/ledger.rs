//! `rtc-core ledger balances|history|import|check|cdrs`: the operators' commands on a ledger file.
//!
//! `balances`, `history`, `check` and `cdrs` only read (`Access::Read`): SQLite's WAL lets them in beside a module
//! that is writing the same file. `import` writes, so it takes the ledger's one-writer lock and is refused while a
//! module (or `rtc-core esl`) has the file open; the refusal names the holder's pid.
//!
//! Exit status: 0 done (for `check`: the ledger is sound and balances); 1 a problem (`check`: it found
//! discrepancies; otherwise bad arguments, a bad table, an unknown partner); 2 the ledger cannot be opened
//! (missing, locked, corrupt, written by a newer version, not a ledger).

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use rtc_audit::NumberPolicy;
use rtc_config::RtcConfig;
use rtc_config::local::LedgerPlace;
use rtc_ledger::store::{CdrReadError, Failure, now_us};
use rtc_ledger::{
    Access, AccountRef, Answer, CdrRecord, CheckReport, JournalEntry, Ledger, LedgerConfig,
    LedgerError, Location, Money, Op, OpenError, Request, Store,
};
use rtc_services::local::{OpeningBalances, Partners};
use serde_json::json;

/// Which ledger, and the subcommand.
#[derive(Args)]
pub struct LedgerArgs {
    /// The ledger file (the module's `rtc_core.db`), or a shared ledger's `postgres://` URL (balances, check).
    #[arg(long, global = true, value_name = "PATH|URL")]
    pub ledger: Option<PathBuf>,
    /// An rtc_core.conf.xml: the ledger its `<local>` `ledger` param names (unless --ledger is given), and the
    /// partners table `import` checks names against.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: LedgerCommand,
}

/// `rtc-core ledger <command>`.
#[derive(Subcommand)]
pub enum LedgerCommand {
    /// Every account: partner, balance, reserved, available, credit limit, open reservations.
    Balances {
        /// One JSON object instead of a table (amounts in millionths, as in the CDRs).
        #[arg(long)]
        json: bool,
    },
    /// A partner's most recent journal entries, oldest first: every movement of its money.
    History {
        /// The partner (its account's name).
        partner: String,
        /// How many of the most recent entries.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// One JSON object instead of a table (amounts in millionths).
        #[arg(long)]
        json: bool,
    },
    /// Imports opening balances (balances.csv) into the accounts that never moved money; the others are
    /// skipped. Needs the ledger's write lock: not while a module has the ledger open.
    Import {
        /// The opening balances (`partner,balance`).
        balances: PathBuf,
        /// The partners table the names are checked against (default: the one --config names, else
        /// partners.csv beside the balances file).
        #[arg(long, value_name = "FILE")]
        partners: Option<PathBuf>,
        /// One JSON object instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// The ledger's fsck: SQLite's integrity check, then every balance against its journal. Exit status 0
    /// sound, 1 problems found, 2 the ledger cannot be opened.
    Check {
        /// One JSON object instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Exports the CDRs of calls that ended in [--from, --to) to stdout, oldest end first. With --config, the
    /// callers' and callees' numbers are written as its `<audit>` `numbers` says (plain, mask or encrypt).
    Cdrs {
        /// Start (inclusive): RFC 3339 (`2026-12-01T00:00:00Z`) or a date (`2026-12-01`, midnight UTC);
        /// default: the epoch.
        #[arg(long, value_parser = parse_time, value_name = "TIME")]
        from: Option<i64>,
        /// End (exclusive), as --from; default: now.
        #[arg(long, value_parser = parse_time, value_name = "TIME")]
        to: Option<i64>,
        /// Only this partner's calls.
        #[arg(long)]
        partner: Option<String>,
        /// csv: a header line, then one row per CDR (the JSON's fields and values); json: one JSON object
        /// per line (the engine's CDR). Amounts in millionths, times in µs since the epoch.
        #[arg(long, value_enum, default_value_t = CdrFormat::Csv)]
        format: CdrFormat,
    },
}

/// How `ledger cdrs` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CdrFormat {
    Csv,
    Json,
}

/// Why a command stopped.
enum Fail {
    /// The ledger cannot be opened (exit status 2).
    Open(String),
    /// Anything else (exit status 1).
    Other(String),
}

/// How long `import` waits for the ledger's writer.
const IMPORT_WAIT: Duration = Duration::from_secs(60);

/// Runs `rtc-core ledger ...`.
pub fn run(args: LedgerArgs) -> ExitCode {
    let name = match &args.command {
        LedgerCommand::Balances { .. } => "balances",
        LedgerCommand::History { .. } => "history",
        LedgerCommand::Import { .. } => "import",
        LedgerCommand::Check { .. } => "check",
        LedgerCommand::Cdrs { .. } => "cdrs",
    };
    match dispatch(args) {
        Ok(code) => code,
        Err(Fail::Open(e)) => {
            eprintln!("rtc-core ledger {name}: {e}");
            ExitCode::from(2)
        }
        Err(Fail::Other(e)) => {
            eprintln!("rtc-core ledger {name}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(args: LedgerArgs) -> Result<ExitCode, Fail> {
    let config = match &args.config {
        Some(file) => Some(RtcConfig::load_file(file).map_err(|e| Fail::Other(e.to_string()))?),
        None => None,
    };
    if let Some(url) = shared_url(args.ledger.as_deref(), config.as_ref()) {
        return shared(&url, args.command);
    }
    let path = ledger_path(args.ledger, args.config.as_deref(), config.as_ref())?;
    match args.command {
        LedgerCommand::Balances { json } => balances(&path, json),
        LedgerCommand::History {
            partner,
            limit,
            json,
        } => history(&path, &partner, limit, json),
        LedgerCommand::Import {
            balances,
            partners,
            json,
        } => {
            let partners = partners
                .or_else(|| config.as_ref().map(|c| c.local.partners.clone()))
                .unwrap_or_else(|| {
                    balances
                        .parent()
                        .unwrap_or(Path::new(""))
                        .join("partners.csv")
                });
            import(&path, &balances, &partners, json)
        }
        LedgerCommand::Check { json } => check(&path, json),
        LedgerCommand::Cdrs {
            from,
            to,
            partner,
            format,
        } => cdrs(
            &path,
            from.unwrap_or(0),
            to.unwrap_or_else(now_us),
            partner.as_deref(),
            format,
            &config.as_ref().map_or(NumberPolicy::Plain, |c| {
                rtc_services::number_policy(&c.local.cdr_numbers)
            }),
        ),
    }
}

/// The ledger file: `--ledger`, else the one the configuration places. A configuration that leaves it to the
/// host (or names a relative path, which the module takes under FreeSWITCH's db directory) cannot say where it
/// is from here.
fn ledger_path(
    ledger: Option<PathBuf>,
    config_file: Option<&Path>,
    config: Option<&RtcConfig>,
) -> Result<PathBuf, Fail> {
    if let Some(path) = ledger {
        return Ok(path);
    }
    let (Some(file), Some(config)) = (config_file, config) else {
        return Err(Fail::Other(
            "which ledger? give the file with --ledger PATH, or the module's configuration with --config \
             FILE (rtc_core.conf.xml)"
                .into(),
        ));
    };
    let file = file.display();
    match &config.local.ledger {
        LedgerPlace::File(path) if path.is_absolute() => Ok(path.clone()),
        LedgerPlace::File(path) => Err(Fail::Other(format!(
            "{file}: the ledger is {}, a path relative to FreeSWITCH's db directory (where the module keeps \
             it; `rtc-core esl` keeps it under its working directory), which rtc-core cannot know: give the file \
             with --ledger PATH, e.g. --ledger /var/lib/freeswitch/db/{}",
            path.display(),
            path.display()
        ))),
        LedgerPlace::HostDefault => Err(Fail::Other(format!(
            "{file} does not place the ledger (<local> param ledger is empty), so the module keeps it as \
             rtc_core.db in FreeSWITCH's db directory (`rtc-core esl`: in its working directory), which rtc-core \
             cannot know: give the file with --ledger PATH, e.g. --ledger /var/lib/freeswitch/db/rtc_core.db"
        ))),
        LedgerPlace::Memory => Err(Fail::Other(format!(
            "{file} keeps the ledger in memory (ledger = :memory:): there is no file to read"
        ))),
        LedgerPlace::Postgres(url) => Err(Fail::Other(format!(
            "{file} keeps the ledger on PostgreSQL ({})",
            rtc_ledger_pg::redact(url)
        ))),
    }
}

/// The shared ledger's URL: `--ledger postgres://…`, else the configuration's.
fn shared_url(ledger: Option<&Path>, config: Option<&RtcConfig>) -> Option<String> {
    match ledger.and_then(Path::to_str) {
        Some(text) if text.starts_with("postgres://") || text.starts_with("postgresql://") => {
            Some(text.to_string())
        }
        Some(_) => None,
        None => match config.map(|c| &c.local.ledger) {
            Some(LedgerPlace::Postgres(url)) => Some(url.clone()),
            _ => None,
        },
    }
}

/// The commands on a shared ledger: balances and check; the others read the embedded ledger's file only.
fn shared(url: &str, command: LedgerCommand) -> Result<ExitCode, Fail> {
    let place = rtc_ledger_pg::redact(url);
    match command {
        LedgerCommand::Balances { json } => {
            let accounts = rtc_ledger_pg::accounts(url).map_err(Fail::Open)?;
            print_balances(&place, &accounts, json);
            Ok(ExitCode::SUCCESS)
        }
        LedgerCommand::Check { json } => {
            let totals = rtc_ledger_pg::check(url).map_err(Fail::Open)?;
            let ok = totals.discrepancies.is_empty() && totals.balances == totals.journal;
            if json {
                println!(
                    "{}",
                    json!({
                        "ledger": place,
                        "ok": ok,
                        "balances": totals.balances,
                        "journal": totals.journal,
                        "reserved": totals.reserved,
                        "open_reservations": totals.open,
                        "discrepancies": totals.discrepancies,
                    })
                );
            } else {
                println!(
                    "{place}: balances {} against the journal's sum {}; reserved {} in {} open reservation(s)",
                    totals.balances, totals.journal, totals.reserved, totals.open
                );
                for d in &totals.discrepancies {
                    println!("  {d}");
                }
                println!("{}", if ok { "OK" } else { "PROBLEMS" });
            }
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        _ => Err(Fail::Other(format!(
            "{place} is the shared ledger on PostgreSQL: `rtc-core ledger` reads its balances and checks it \
             (balances, check); for the rest query the rtc_ledger schema (docs/ledger-postgres.md), or use \
             `rtc_core balance` and `rtc_core topup` in fs_cli"
        ))),
    }
}

fn open_read(path: &Path) -> Result<Store, Fail> {
    Store::open(path, Access::Read)
        .map(|(store, _)| store)
        .map_err(|e| Fail::Open(e.to_string()))
}

fn read_failed(path: &Path, e: impl std::fmt::Display) -> Fail {
    Fail::Other(format!("{}: cannot read the ledger: {e}", path.display()))
}

/// A movement: `+1.500000`, `-0.130000`, or `0`.
fn delta(m: Money) -> String {
    match m.0 {
        0 => "0".into(),
        n if n > 0 => format!("+{m}"),
        _ => m.to_string(),
    }
}

/// µs since the epoch as RFC 3339 in UTC (`2026-12-01T10:06:12.123456Z`).
pub(crate) fn rfc3339(us: i64) -> String {
    jiff::Timestamp::from_microsecond(us).map_or_else(|_| format!("{us} µs"), |t| t.to_string())
}

/// A time given on the command line: RFC 3339 with an offset, or a date (midnight UTC); µs since the epoch.
fn parse_time(text: &str) -> Result<i64, String> {
    if let Ok(t) = text.parse::<jiff::Timestamp>() {
        return Ok(t.as_microsecond());
    }
    let date: jiff::civil::Date = text.parse().map_err(|_| {
        format!(
            "{text:?} is not a time: RFC 3339 with its offset (2026-12-01T00:00:00Z, \
             2026-12-01T01:00:00+01:00) or a date (2026-12-01, midnight UTC)"
        )
    })?;
    jiff::tz::TimeZone::UTC
        .to_timestamp(date.at(0, 0, 0, 0))
        .map(jiff::Timestamp::as_microsecond)
        .map_err(|e| format!("{text:?}: {e}"))
}

/// Whether a column is text (left-aligned) or a figure (right-aligned).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Align {
    Left,
    Right,
}

/// Prints rows under their headers, each column as wide as its widest cell.
fn print_table(headers: &[(&str, Align)], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|(h, _)| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut out = String::new();
        for (i, cell) in cells.enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            let pad = widths[i].saturating_sub(cell.chars().count());
            match headers[i].1 {
                Align::Left => {
                    out.push_str(cell);
                    out.extend(std::iter::repeat_n(' ', pad));
                }
                Align::Right => {
                    out.extend(std::iter::repeat_n(' ', pad));
                    out.push_str(cell);
                }
            }
        }
        println!("{}", out.trim_end());
    };
    line(&mut headers.iter().map(|(h, _)| *h));
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
}

fn balances(path: &Path, as_json: bool) -> Result<ExitCode, Fail> {
    let store = open_read(path)?;
    let accounts = store.accounts().map_err(|e| read_failed(path, e))?;
    print_balances(&path.display().to_string(), &accounts, as_json);
    Ok(ExitCode::SUCCESS)
}

/// The accounts of the ledger at `place`: a table and its totals, or one JSON object.
fn print_balances(place: &str, accounts: &[rtc_ledger::AccountStatus], as_json: bool) {
    if as_json {
        let rows: Vec<serde_json::Value> = accounts
            .iter()
            .map(|a| {
                json!({
                    "partner": a.name,
                    "balance": a.balance,
                    "reserved": a.reserved,
                    "available": a.available(),
                    "credit_limit": a.credit_limit,
                    "open_reservations": a.open_reservations,
                })
            })
            .collect();
        println!("{}", json!({"ledger": place, "accounts": rows}));
        return;
    }
    let rows: Vec<Vec<String>> = accounts
        .iter()
        .map(|a| {
            vec![
                a.name.clone(),
                a.balance.to_string(),
                a.reserved.to_string(),
                a.available().to_string(),
                a.credit_limit.to_string(),
                a.open_reservations.to_string(),
            ]
        })
        .collect();
    use Align::{Left, Right};
    print_table(
        &[
            ("partner", Left),
            ("balance", Right),
            ("reserved", Right),
            ("available", Right),
            ("credit limit", Right),
            ("open reservations", Right),
        ],
        &rows,
    );
    let sum = |f: fn(&rtc_ledger::AccountStatus) -> Money| {
        Money(
            accounts
                .iter()
                .map(|a| f(a).0)
                .fold(0i64, i64::saturating_add),
        )
    };
    println!(
        "{} account(s) in {}: total balance {}, reserved {}",
        accounts.len(),
        place,
        sum(|a| a.balance),
        sum(|a| a.reserved)
    );
}

fn history(path: &Path, partner: &str, limit: usize, as_json: bool) -> Result<ExitCode, Fail> {
    let store = open_read(path)?;
    let entries: Vec<JournalEntry> = match store
        .history(&AccountRef::Name(partner.to_string()), limit)
    {
        Ok(entries) => entries,
        Err(Failure::Refused(LedgerError::UnknownAccount(_))) => {
            return Err(Fail::Other(format!(
                "{}: no account {partner:?} in the ledger (`rtc-core ledger balances` lists them)",
                path.display()
            )));
        }
        Err(Failure::Refused(e)) => return Err(read_failed(path, e)),
        Err(Failure::Storage(e)) => return Err(read_failed(path, e)),
    };
    if as_json {
        let rows: Vec<serde_json::Value> = entries
            .iter()
            .map(|e| {
                let mut v = serde_json::to_value(e).unwrap_or_default();
                if let Some(o) = v.as_object_mut() {
                    o.insert("time".into(), rfc3339(e.at_us).into());
                }
                v
            })
            .collect();
        println!(
            "{}",
            json!({"ledger": path.display().to_string(), "partner": partner, "entries": rows})
        );
        return Ok(ExitCode::SUCCESS);
    }
    let opt = |o: Option<String>| o.unwrap_or_else(|| "-".into());
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                rfc3339(e.at_us),
                e.kind.name().to_string(),
                delta(e.balance_delta),
                delta(e.reserved_delta),
                e.balance_after.to_string(),
                opt(e.reservation.map(|r| r.to_string())),
                opt(e.call.clone()),
                opt(e.reference.clone()),
                e.actor.clone(),
            ]
        })
        .collect();
    use Align::{Left, Right};
    print_table(
        &[
            ("time", Left),
            ("kind", Left),
            ("balance delta", Right),
            ("reserved delta", Right),
            ("balance after", Right),
            ("reservation", Right),
            ("call", Left),
            ("reference", Left),
            ("actor", Left),
        ],
        &rows,
    );
    println!(
        "{} journal entr{} of partner {partner:?} (the most recent, at most {limit})",
        entries.len(),
        if entries.len() == 1 { "y" } else { "ies" }
    );
    Ok(ExitCode::SUCCESS)
}

fn import(path: &Path, balances: &Path, partners: &Path, as_json: bool) -> Result<ExitCode, Fail> {
    // Checked as the module checks them: every name a partner, each once, every amount a decimal.
    let partners = Partners::load(partners).map_err(|e| Fail::Other(e.to_string()))?;
    let opening =
        OpeningBalances::load(balances, &partners).map_err(|e| Fail::Other(e.to_string()))?;
    let ledger = Ledger::open(LedgerConfig::new(Location::File(path.to_owned())))
        .map_err(|e| Fail::Open(e.to_string()))?;
    let created = ledger.opened().created;
    let recovered = ledger.recovered().len();
    // One transaction: a storage failure imports none of them.
    let (tx, rx) = crossbeam_channel::unbounded();
    let requests = opening
        .rows
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let tx = tx.clone();
            Request::new(
                Op::Import {
                    name: row.name.to_string(),
                    amount: row.balance,
                    reference: opening.reference(row),
                },
                "cli",
                Some(Box::new(move |answer| {
                    let _ = tx.send((i, answer));
                })),
            )
        })
        .collect();
    drop(tx);
    ledger.submit_all(requests);
    let mut answers: Vec<Option<Result<Answer, LedgerError>>> = vec![None; opening.rows.len()];
    for _ in 0..opening.rows.len() {
        match rx.recv_timeout(IMPORT_WAIT) {
            Ok((i, answer)) => answers[i] = Some(answer),
            Err(_) => break,
        }
    }
    let close = ledger.close();
    let mut imported = Vec::new();
    let mut skipped = Vec::new();
    for (row, answer) in opening.rows.iter().zip(answers) {
        match answer {
            Some(Ok(Answer::Imported(true))) => imported.push(row),
            Some(Ok(_)) => skipped.push(row),
            Some(Err(e)) => {
                return Err(Fail::Other(format!(
                    "{}: the opening balance of {:?} ({}) was not imported: {e}",
                    path.display(),
                    row.name.as_str(),
                    opening.reference(row)
                )));
            }
            None => {
                return Err(Fail::Other(format!(
                    "{}: the ledger did not answer the import within {IMPORT_WAIT:?} (closed: {close:?})",
                    path.display()
                )));
            }
        }
    }
    if as_json {
        let amounts = |rows: &[&rtc_services::local::Opening]| -> Vec<serde_json::Value> {
            rows.iter()
                .map(|r| json!({"partner": r.name.as_str(), "balance": r.balance, "reference": opening.reference(r)}))
                .collect()
        };
        println!(
            "{}",
            json!({
                "ledger": path.display().to_string(),
                "created": created,
                "recovered_reservations": recovered,
                "imported": amounts(&imported),
                "skipped": amounts(&skipped),
            })
        );
        return Ok(ExitCode::SUCCESS);
    }
    if created {
        println!("{}: new ledger created", path.display());
    }
    if recovered > 0 {
        println!(
            "{}: {recovered} reservation(s) left open by a process that stopped were settled (CDR reason \
             recovered), as the module's next start would have",
            path.display()
        );
    }
    println!(
        "imported {} opening balance(s) from {}:",
        imported.len(),
        balances.display()
    );
    for row in &imported {
        println!(
            "  {:<20} {:>18}  ({})",
            row.name.as_str(),
            row.balance.to_string(),
            opening.reference(row)
        );
    }
    if skipped.is_empty() {
        println!("skipped none");
    } else {
        println!(
            "skipped {} (those accounts already moved money: their ledger balance stands; use `rtc_core topup`):",
            skipped.len()
        );
        for row in &skipped {
            println!("  {}", row.name.as_str());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn check(path: &Path, as_json: bool) -> Result<ExitCode, Fail> {
    let store = match Store::open(path, Access::Read) {
        Ok((store, _)) => store,
        // It opened far enough to find that its holds do not add up: a finding, not a file that cannot be read.
        Err(e @ OpenError::Unbalanced { .. }) => {
            if as_json {
                println!(
                    "{}",
                    json!({"ledger": path.display().to_string(), "ok": false, "error": e.to_string()})
                );
            } else {
                println!("PROBLEMS: {e}");
            }
            return Ok(ExitCode::FAILURE);
        }
        Err(e) => return Err(Fail::Open(e.to_string())),
    };
    let report = store.check().map_err(|e| {
        Fail::Open(format!(
            "{}: the ledger cannot be read to its end ({e}): it is damaged; restore it from a backup",
            path.display()
        ))
    })?;
    if as_json {
        let mut v = serde_json::to_value(&report).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.insert("ledger".into(), path.display().to_string().into());
            o.insert("ok".into(), report.ok().into());
        }
        println!("{v}");
    } else {
        print_check(path, &report);
    }
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_check(path: &Path, r: &CheckReport) {
    println!("ledger {}", path.display());
    let integrity_ok = r.integrity == ["ok"];
    let rows = [
        (
            "SQLite integrity",
            if integrity_ok {
                "ok".to_string()
            } else {
                format!("{} problem(s)", r.integrity.len())
            },
        ),
        ("accounts", r.accounts.to_string()),
        ("journal entries", r.journal_entries.to_string()),
        (
            "reservations",
            format!("{} ({} open)", r.reservations, r.open_reservations),
        ),
        ("CDRs", r.cdrs.to_string()),
        ("total balance", r.total_balance.to_string()),
        ("total reserved", r.total_reserved.to_string()),
        (
            "discrepancies",
            if r.discrepancies.is_empty() {
                "none".to_string()
            } else {
                r.discrepancies.len().to_string()
            },
        ),
    ];
    for (k, v) in rows {
        println!("  {k:<18} {v}");
    }
    if !integrity_ok {
        println!("SQLite integrity_check:");
        for line in &r.integrity {
            println!("  {line}");
        }
    }
    if !r.discrepancies.is_empty() {
        println!("discrepancies (stored figure against what the journal sums to):");
        for d in &r.discrepancies {
            println!("  {}: stored {}, journal {}", d.what, d.stored, d.journal);
        }
    }
    if r.ok() {
        println!("the ledger is sound: every balance and hold is its journal's sum");
    } else {
        println!(
            "PROBLEMS: the ledger {}; restore it from a backup, and find out what changed the file",
            match (integrity_ok, r.discrepancies.is_empty()) {
                (false, true) => "is damaged",
                (true, false) => "does not balance",
                _ => "is damaged and does not balance",
            }
        );
    }
}

/// The CSV columns of `ledger cdrs`: the fields of the JSON CDR, in its order.
pub(crate) const CDR_COLUMNS: [&str; 16] = [
    "uuid",
    "caller",
    "destination",
    "source_ip",
    "partner",
    "final_state",
    "reason",
    "hangup_cause",
    "carrier",
    "rate_per_minute",
    "setup_us",
    "talk_s",
    "billed_s",
    "cost",
    "started_at_us",
    "ended_at_us",
];

/// One CDR as a CSV row: each column the JSON field's value (empty for null).
fn csv_row(cdr: &CdrRecord) -> Vec<String> {
    let value = serde_json::to_value(cdr).unwrap_or_default();
    CDR_COLUMNS
        .iter()
        .map(|c| match value.get(c) {
            None | Some(serde_json::Value::Null) => String::new(),
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        })
        .collect()
}

fn cdrs(
    path: &Path,
    from_us: i64,
    to_us: i64,
    partner: Option<&str>,
    format: CdrFormat,
    numbers: &NumberPolicy,
) -> Result<ExitCode, Fail> {
    // The CDRs of record keep the numbers; the export writes them as the configuration says.
    let export = |mut cdr: CdrRecord| {
        if *numbers != NumberPolicy::Plain {
            cdr.caller = numbers.apply(&cdr.caller);
            cdr.destination = numbers.apply(&cdr.destination);
        }
        cdr
    };
    if from_us >= to_us {
        return Err(Fail::Other(format!(
            "--from {} is not before --to {}: nothing ended in between",
            rfc3339(from_us),
            rfc3339(to_us)
        )));
    }
    let store = open_read(path)?;
    let out = BufWriter::new(std::io::stdout().lock());
    let result = match format {
        CdrFormat::Json => {
            let mut out = out;
            store
                .cdrs(from_us, to_us, partner, |cdr| {
                    serde_json::to_writer(&mut out, &export(cdr))?;
                    out.write_all(b"\n")
                })
                .and_then(|n| out.flush().map(|()| n).map_err(CdrReadError::Write))
        }
        CdrFormat::Csv => {
            let mut w = csv::Writer::from_writer(out);
            w.write_record(CDR_COLUMNS)
                .map_err(|e| CdrReadError::Write(e.into()))
                .and_then(|()| {
                    store.cdrs(from_us, to_us, partner, |cdr| {
                        w.write_record(csv_row(&export(cdr))).map_err(Into::into)
                    })
                })
                .and_then(|n| w.flush().map(|()| n).map_err(CdrReadError::Write))
        }
    };
    match result {
        Ok(n) => {
            eprintln!(
                "{n} CDR(s) of calls that ended from {} to {}{}",
                rfc3339(from_us),
                rfc3339(to_us),
                partner.map_or(String::new(), |p| format!(" (partner {p:?})"))
            );
            Ok(ExitCode::SUCCESS)
        }
        // The reader went away (`| head`): what it took was written.
        Err(CdrReadError::Write(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Err(read_failed(path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_or_dates_at_midnight_utc() {
        assert_eq!(
            parse_time("2026-12-01T00:00:00Z"),
            Ok(1_796_083_200_000_000)
        );
        assert_eq!(parse_time("2026-12-01"), Ok(1_796_083_200_000_000));
        assert_eq!(
            parse_time("2026-12-01T01:00:00+01:00"),
            Ok(1_796_083_200_000_000)
        );
        assert!(parse_time("yesterday").unwrap_err().contains("RFC 3339"));
        assert_eq!(rfc3339(1_796_083_200_000_000), "2026-12-01T00:00:00Z");
        assert_eq!(
            rfc3339(1_796_083_200_000_001),
            "2026-12-01T00:00:00.000001Z"
        );
    }

    #[test]
    fn the_csv_columns_are_the_json_cdrs_fields() {
        let cdr = CdrRecord {
            uuid: "u".into(),
            caller: "c".into(),
            destination: "d".into(),
            source_ip: None,
            partner: Some("acme".into()),
            final_state: "COMPLETED".into(),
            reason: None,
            hangup_cause: "NORMAL_CLEARING".into(),
            carrier: None,
            rate_per_minute: Some(Money(10_000)),
            setup_us: None,
            talk_s: 1,
            billed_s: 6,
            cost: Money(1_000),
            started_at_us: 2,
            ended_at_us: 3,
        };
        let value = serde_json::to_value(&cdr).unwrap();
        let keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, CDR_COLUMNS);
        assert_eq!(csv_row(&cdr)[4], "acme");
        assert_eq!(csv_row(&cdr)[6], "");
        assert_eq!(csv_row(&cdr)[9], "10000");
    }
}
