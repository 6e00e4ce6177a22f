//! A real, throwaway PostgreSQL for tests, with no mock: find the server binaries, initialise a cluster in a
//! temporary directory, serve it on 127.0.0.1 and a free port, and stop it (fast shutdown) or kill it (a crash)
//! by the PID of its postmaster, then start it again on the same data and port.
//!
//! # Layout
//! - [`find_bin_dir`]: the server binaries, through `RTC_PG_BIN` (a bindir; when set, nothing else is tried), else
//!   `pg_config --bindir`, else the highest `/usr/lib/postgresql/<version>/bin` (Debian's layout). The bindir must
//!   hold `initdb`, `postgres` and `psql`. When none is found the error is [`Error::Unavailable`], and
//!   [`start_or_skip`] prints the one line `skipped: <test>: <reason>` so that the test returns (and passes).
//! - [`Postgres::start`]: `initdb -D <dir>/data -U postgres -A trust` (superuser `postgres`, no password, UTF8, C
//!   locale), then `postgres -D <dir>/data` listening on 127.0.0.1 only, its socket in `<dir>/sock`, its output in
//!   `<dir>/postgres.log`. Ready means: `<data>/postmaster.pid` names the process we started and says `ready`,
//!   and the port accepts a TCP connection (at most 30 s).
//! - [`Postgres::psql`] and [`Postgres::create_database`]: the bindir's `psql` over TCP, for tests to set up and
//!   read tables.
//! - [`Postgres::stop`] (SIGINT: fast shutdown), [`Postgres::kill`] (SIGKILL to the postmaster and all its
//!   children, as a crash), [`Postgres::start_again`] (same data dir, same port), and `Drop` (stop, kill if it
//!   must, remove the directory). No postgres process outlives a [`Postgres`].
//!
//! PostgreSQL refuses to run as root. When the tests run as root, `initdb` and `postgres` run as the `postgres`
//! system user (set on the child process by `std`'s `CommandExt::uid`/`gid`, so the postmaster stays our own
//! child, with no `runuser`/`su` in between), and the temporary directory is handed to that user. Otherwise they
//! run as the current user. The clients (`psql`) connect over TCP as database user `postgres`, whoever runs them.
//!
//! Every command and every wait here is bounded in time; an error says what failed, where (the directory, the
//! port), and ends with the server's last log lines when they explain it.

use std::fs::File;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The environment variable naming the directory of the server binaries (`initdb`, `postgres`, `psql`).
pub const BIN_ENV: &str = "RTC_PG_BIN";

/// The database superuser [`Postgres::start`] creates (and, when the tests run as root, the system user the server
/// runs as).
pub const SUPERUSER: &str = "postgres";

/// The binaries a bindir must hold to be used.
const REQUIRED: [&str; 3] = ["initdb", "postgres", "psql"];

/// How long the server has to get ready after it is started.
const START_BOUND: Duration = Duration::from_secs(30);

/// How long a fast shutdown may take before the server is killed.
const STOP_BOUND: Duration = Duration::from_secs(30);

/// How long killed processes have to disappear.
const KILL_BOUND: Duration = Duration::from_secs(10);

/// How long `initdb` may run (it syncs the new cluster to disk).
const INITDB_BOUND: Duration = Duration::from_secs(120);

/// How long one `psql` may run.
const CLIENT_BOUND: Duration = Duration::from_secs(60);

/// Why there is no PostgreSQL for a test, or what went wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// This machine cannot run PostgreSQL (no binaries, or root without a `postgres` user): tests skip.
    #[error("{0}")]
    Unavailable(String),
    /// PostgreSQL is there but a step failed (initdb, start, a query): tests fail.
    #[error("{0}")]
    Failed(String),
}

/// A new PostgreSQL for `test`; `None` after printing the one line `skipped: <test>: <reason>` to stderr when
/// this machine has none ([`Error::Unavailable`]). Panics when one was found but does not start.
pub fn start_or_skip(test: &str) -> Option<Postgres> {
    match Postgres::start() {
        Ok(pg) => Some(pg),
        Err(Error::Unavailable(reason)) => {
            eprintln!("skipped: {test}: {reason}");
            None
        }
        Err(e) => panic!("{test}: PostgreSQL did not start: {e}"),
    }
}

/// The directory of the server binaries: `RTC_PG_BIN`, else `pg_config --bindir`, else the highest
/// `/usr/lib/postgresql/<version>/bin`, the first that holds `initdb`, `postgres` and `psql`.
pub fn find_bin_dir() -> Result<PathBuf, Error> {
    let complete = |d: &Path| REQUIRED.iter().all(|b| d.join(b).is_file());
    if let Some(dir) = std::env::var_os(BIN_ENV).filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        let missing: Vec<&str> = REQUIRED
            .into_iter()
            .filter(|b| !dir.join(b).is_file())
            .collect();
        return if missing.is_empty() {
            Ok(dir)
        } else {
            Err(Error::Unavailable(format!(
                "{BIN_ENV}={} has no {} (it must name the bindir of a PostgreSQL server installation)",
                dir.display(),
                missing.join(", ")
            )))
        };
    }
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .filter(|d| complete(d));
    if let Some(dir) = from_pg_config {
        return Ok(dir);
    }
    let mut versions: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let key = version_key(e.file_name().to_str()?)?;
            Some((key, e.path().join("bin")))
        })
        .filter(|(_, d)| complete(d))
        .collect();
    versions.sort();
    versions.pop().map(|(_, d)| d).ok_or_else(|| {
        Error::Unavailable(format!(
            "PostgreSQL server binaries not found (set {BIN_ENV} to a bindir with initdb, postgres and psql, \
             put pg_config on PATH, or install Debian's postgresql package for /usr/lib/postgresql/<version>/bin)"
        ))
    })
}

/// `15` → `[15]`, `9.6` → `[9, 6]`; `None` for a name that is not a version.
fn version_key(name: &str) -> Option<Vec<u32>> {
    name.split('.').map(|p| p.parse().ok()).collect()
}

/// The system user the server runs as when the tests run as root.
#[derive(Clone, Copy, Debug)]
struct RunAs {
    /// Its user id.
    uid: u32,
    /// Its primary group id.
    gid: u32,
}

/// `None` when not root (the server runs as the current user), else the `postgres` user's ids.
fn run_as() -> Result<Option<RunAs>, Error> {
    let id = |args: &[&str]| -> Option<u32> {
        let out = Command::new("id")
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    match id(&["-u"]) {
        Some(0) => {}
        Some(_) => return Ok(None),
        None => {
            return Err(Error::Unavailable(
                "cannot tell whether this runs as root (`id -u` failed)".into(),
            ));
        }
    }
    match (id(&["-u", SUPERUSER]), id(&["-g", SUPERUSER])) {
        (Some(uid), Some(gid)) => Ok(Some(RunAs { uid, gid })),
        _ => Err(Error::Unavailable(format!(
            "running as root, which PostgreSQL refuses, and there is no `{SUPERUSER}` system user to run it as \
             (install the postgresql package, or `useradd --system {SUPERUSER}`)"
        ))),
    }
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> Result<u16, Error> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::Failed(format!("no free port on 127.0.0.1: {e}")))
}

/// Runs `cmd` (described by `what` in errors) for at most `bound`; its stdout when it succeeds, else an error
/// with its exit status and stderr. Killed when it overruns.
fn run(mut cmd: Command, what: &str, bound: Duration) -> Result<String, Error> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::Failed(format!("cannot start {what}: {e}")))?;
    // Read both pipes on threads of their own, so that a full pipe never stalls the child.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut text);
            }
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let out = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let err = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + bound;
    let mut nap = Duration::from_millis(1);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(nap);
                nap = (nap * 2).min(Duration::from_millis(20));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                // The pipes may still be held by its children: do not wait for the readers.
                return Err(Error::Failed(format!(
                    "{what} did not finish within {} s, killed",
                    bound.as_secs()
                )));
            }
            Err(e) => return Err(Error::Failed(format!("{what}: waiting for it: {e}"))),
        }
    };
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    if status.success() {
        Ok(out)
    } else {
        Err(Error::Failed(format!(
            "{what} failed ({status}): {}",
            err.trim()
        )))
    }
}

/// Removes the `PG*` variables of the test's environment (`PGHOST`, `PGOPTIONS`, `PGSERVICE`...) from `cmd`, so
/// that only the arguments given here decide where it connects and how; English messages.
fn clean_env(cmd: &mut Command) {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PG") {
            cmd.env_remove(name);
        }
    }
    cmd.env("LC_ALL", "C");
}

/// Whether process `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    proc_state(pid).is_some_and(|s| s != 'Z')
}

/// The state letter of process `pid` (`R`, `S`, `T`, `Z`...) from `/proc/<pid>/stat`; `None` when it is gone.
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

/// The live processes whose parent is `pid` (from `/proc/*/stat`).
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let child: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let mut after_name = stat.rsplit_once(')')?.1.split_whitespace();
            let state = after_name.next()?;
            let ppid: u32 = after_name.next()?.parse().ok()?;
            (ppid == pid && state != "Z").then_some(child)
        })
        .collect()
}

/// Sends `signal` (`INT`, `KILL`, `STOP`...) to `pids` with the `kill` command, or the shell's `kill` builtin on
/// machines without one. Errors (a process already gone) are ignored.
fn signal(signal: &str, pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
    let sent = Command::new("kill")
        .arg(format!("-{signal}"))
        .args(&pids)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if sent.is_err() {
        let _ = Command::new("sh")
            .args(["-c", &format!("kill -{signal} {}", pids.join(" "))])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Waits up to `bound` for `done`, checking every 20 ms; whether it came.
fn wait_until(bound: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + bound;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `"name"`, with any `"` doubled: an SQL identifier that is exactly `name`.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `name` with every byte outside the URL-unreserved set written `%XX`, for the path of a URL.
fn percent_encode(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The running postmaster.
#[derive(Debug)]
struct Server {
    /// The process we started: the postmaster itself (no wrapper), reaped when it ends.
    child: Child,
    /// Its pid (the child's, and the first line of `postmaster.pid`).
    pid: u32,
}

/// A throwaway PostgreSQL cluster in its own temporary directory; stopped (or killed) and removed when dropped.
#[derive(Debug)]
pub struct Postgres {
    /// The directory of the server and client binaries.
    bin_dir: PathBuf,
    /// The system user the server runs as, when the tests run as root.
    run_as: Option<RunAs>,
    /// The TCP port on 127.0.0.1, the same across [`Postgres::start_again`].
    port: u16,
    /// The postmaster while it runs; `None` after [`Postgres::stop`] or [`Postgres::kill`].
    server: Option<Server>,
    /// Holds `data/` (the cluster), `sock/` (its Unix socket) and `postgres.log`; removed on drop.
    dir: tempfile::TempDir,
}

impl Postgres {
    /// Finds the binaries, initialises a cluster in a new temporary directory and starts it on a free port of
    /// 127.0.0.1; returns once it accepts connections (at most 30 s). [`Error::Unavailable`] when this machine has
    /// no PostgreSQL to run; [`Error::Failed`] (naming the step, the directory and the log's last lines) otherwise.
    pub fn start() -> Result<Postgres, Error> {
        let bin_dir = find_bin_dir()?;
        let run_as = run_as()?;
        let dir = tempfile::Builder::new()
            .prefix("rtc-pg-")
            .tempdir()
            .map_err(|e| Error::Failed(format!("cannot make a temp dir for PostgreSQL: {e}")))?;
        let d = dir.path();
        let sock = d.join("sock");
        std::fs::create_dir(&sock)
            .map_err(|e| Error::Failed(format!("cannot make {}: {e}", sock.display())))?;
        if let Some(user) = run_as {
            for path in [d, &sock] {
                std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid)).map_err(|e| {
                    Error::Failed(format!(
                        "cannot hand {} to the {SUPERUSER} user (uid {}): {e}",
                        path.display(),
                        user.uid
                    ))
                })?;
            }
        }
        let mut pg = Postgres {
            port: free_port()?,
            bin_dir,
            run_as,
            server: None,
            dir,
        };
        let data = pg.data_dir();
        let mut initdb = pg.server_command("initdb");
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", SUPERUSER, "-A", "trust", "--no-instructions"])
            .args(["-E", "UTF8", "--locale=C"]);
        run(
            initdb,
            &format!("initdb -D {}", data.display()),
            INITDB_BOUND,
        )?;
        pg.launch()?;
        Ok(pg)
    }

    /// Starts the server again on the same data dir and port, after [`Postgres::stop`] or [`Postgres::kill`]
    /// (then it recovers from its WAL first); returns once it accepts connections (at most 30 s). An error when it
    /// is running.
    pub fn start_again(&mut self) -> Result<(), Error> {
        if let Some(server) = &self.server {
            return Err(Error::Failed(format!(
                "PostgreSQL in {} already runs (pid {}); stop or kill it first",
                self.data_dir().display(),
                server.pid
            )));
        }
        self.launch()
    }

    /// Fast shutdown: SIGINT to the postmaster (it ends the sessions, checkpoints and exits once all its
    /// processes have), waiting for it at most 30 s; after that it is killed as by [`Postgres::kill`]. Nothing
    /// when it is not running.
    pub fn stop(&mut self) {
        let Some(mut server) = self.server.take() else {
            return;
        };
        signal("INT", &[server.pid]);
        let ended = wait_until(STOP_BOUND, || {
            matches!(server.child.try_wait(), Ok(Some(_))) || !alive(server.pid)
        });
        if ended {
            let _ = server.child.wait();
        } else {
            eprintln!(
                "PostgreSQL (pid {}, {}) did not stop within {} s of SIGINT; killing it",
                server.pid,
                self.data_dir().display(),
                STOP_BOUND.as_secs()
            );
            self.crash(server);
        }
    }

    /// Kills the server as a crash would: SIGKILL to the postmaster and to all its processes (sessions,
    /// checkpointer, WAL writer...), which would otherwise live on for a while and hold its shared memory,
    /// so that [`Postgres::start_again`] could not start. Returns once they are gone (at most 10 s). Nothing when it
    /// is not running.
    pub fn kill(&mut self) {
        if let Some(server) = self.server.take() {
            self.crash(server);
        }
    }

    /// Whether the server runs (started and neither stopped nor killed, and its postmaster still alive).
    pub fn is_running(&self) -> bool {
        self.server.as_ref().is_some_and(|s| alive(s.pid))
    }

    /// The URL of the `postgres` database: `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        self.url_db("postgres")
    }

    /// The URL of database `db` (percent-encoded as needed): `postgres://postgres@127.0.0.1:<port>/<db>`.
    pub fn url_db(&self, db: &str) -> String {
        format!(
            "postgres://{SUPERUSER}@127.0.0.1:{}/{}",
            self.port,
            percent_encode(db)
        )
    }

    /// Its TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its address, 127.0.0.1 and [`Postgres::port`].
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The postmaster's pid while it runs; `None` after [`Postgres::stop`] or [`Postgres::kill`].
    pub fn pid(&self) -> Option<u32> {
        self.server.as_ref().map(|s| s.pid)
    }

    /// The cluster's data directory (`<temp dir>/data`).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The directory of the binaries in use (for tests that need another, such as `pg_dump`).
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The server's log file (its stdout and stderr, warnings and worse; appended to by each start).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// The last `n` lines of the server's log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = std::fs::read(self.log_path()).unwrap_or_default();
        let log = String::from_utf8_lossy(&log);
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Creates database `name` (exactly that name: it is quoted), owned by `postgres`.
    pub fn create_database(&self, name: &str) -> Result<(), Error> {
        self.psql(
            "postgres",
            &format!("CREATE DATABASE {}", quote_ident(name)),
        )
        .map(drop)
    }

    /// Runs `sql` (one or more statements) in database `db` with `psql -X -q -A -t -v ON_ERROR_STOP=1` over TCP
    /// as `postgres`, at most 60 s. Its output, unaligned and without headers (`|` between columns, one row a
    /// line), with the final newline removed; an error with psql's message when a statement fails.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, Error> {
        let mut cmd = Command::new(self.bin_dir.join("psql"));
        clean_env(&mut cmd);
        cmd.env("PGCONNECT_TIMEOUT", "10")
            .args(["-X", "-q", "-A", "-t", "-h", "127.0.0.1"])
            .args(["-p", &self.port.to_string(), "-U", SUPERUSER, "-d", db])
            .args(["-v", "ON_ERROR_STOP=1", "-c", sql]);
        let what = format!("psql -p {} -d {db} -c {sql:?}", self.port);
        let out = run(cmd, &what, CLIENT_BOUND)?;
        Ok(out.trim_end_matches('\n').to_owned())
    }

    /// A command for the server binary `name`, run as the server's user, in the temp dir, with a clean
    /// environment.
    fn server_command(&self, name: &str) -> Command {
        let mut cmd = Command::new(self.bin_dir.join(name));
        clean_env(&mut cmd);
        cmd.current_dir(self.dir.path());
        if let Some(user) = self.run_as {
            cmd.uid(user.uid).gid(user.gid);
        }
        cmd
    }

    /// Starts the postmaster on the data dir and port and waits until it is ready; on failure it is killed and
    /// the error ends with its log's last lines.
    fn launch(&mut self) -> Result<(), Error> {
        let log_path = self.log_path();
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| Error::Failed(format!("cannot open {}: {e}", log_path.display())))?;
        let log_err = log
            .try_clone()
            .map_err(|e| Error::Failed(format!("{}: {e}", log_path.display())))?;
        let data = self.data_dir();
        let mut cmd = self.server_command("postgres");
        cmd.arg("-D")
            .arg(&data)
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-p",
                &self.port.to_string(),
            ])
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                self.dir.path().join("sock").display()
            ))
            .args(["-c", "fsync=on", "-c", "max_connections=100"])
            .args([
                "-c",
                "shared_buffers=32MB",
                "-c",
                "log_min_messages=warning",
            ])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        let child = cmd.spawn().map_err(|e| {
            Error::Failed(format!(
                "cannot start {}: {e}",
                self.bin_dir.join("postgres").display()
            ))
        })?;
        let pid = child.id();
        self.server = Some(Server { child, pid });
        let pid_file = data.join("postmaster.pid");
        // postmaster.pid: line 1 the pid, line 8 the status, `ready` once it accepts connections. Checking the
        // pid skips a stale file left by a killed server.
        let pid_file_ready = || {
            let text = std::fs::read_to_string(&pid_file).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines.first().and_then(|l| l.trim().parse::<u32>().ok()) == Some(pid)
                && lines.get(7).is_some_and(|l| l.trim() == "ready")
        };
        let addr = self.addr();
        let deadline = Instant::now() + START_BOUND;
        loop {
            let exited = match self.server.as_mut().map(|s| s.child.try_wait()) {
                Some(Ok(Some(status))) => Some(status.to_string()),
                _ => None,
            };
            if let Some(status) = exited {
                self.server = None;
                return Err(self.start_error(&format!("exited ({status}) before it was ready")));
            }
            if pid_file_ready() && TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(self.start_error(&format!(
                    "was not ready within {} s (killed)",
                    START_BOUND.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The error for a server that did not start: `why`, where, and the log's last lines.
    fn start_error(&self, why: &str) -> Error {
        Error::Failed(format!(
            "PostgreSQL ({} -D {} on 127.0.0.1:{}) {why}; last lines of {}:\n{}",
            self.bin_dir.join("postgres").display(),
            self.data_dir().display(),
            self.port,
            self.log_path().display(),
            self.log_tail(20)
        ))
    }

    /// SIGKILL to `server` and all its child processes, then waits for them to be gone.
    fn crash(&self, mut server: Server) {
        let pid = server.pid;
        // Stopped, the postmaster cannot fork (or restart) processes while its children are listed and killed.
        signal("STOP", &[pid]);
        wait_until(Duration::from_secs(1), || {
            proc_state(pid).is_none_or(|s| s == 'T' || s == 'Z')
        });
        let children = children_of(pid);
        signal("KILL", &children);
        signal("KILL", &[pid]);
        let reaped = wait_until(KILL_BOUND, || {
            matches!(server.child.try_wait(), Ok(Some(_)))
        });
        let gone = wait_until(KILL_BOUND, || !children.iter().any(|&c| alive(c)));
        if !reaped || !gone {
            eprintln!(
                "PostgreSQL (pid {pid}, {}): processes still alive {} s after SIGKILL: {:?}",
                self.data_dir().display(),
                KILL_BOUND.as_secs(),
                std::iter::once(pid)
                    .chain(children)
                    .filter(|&p| alive(p))
                    .collect::<Vec<_>>()
            );
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "PostgreSQL on 127.0.0.1:{} ({}), last lines of its log:\n{}",
                self.port,
                self.data_dir().display(),
                self.log_tail(20)
            );
        }
        self.stop();
        // `dir` (the TempDir) is removed after this, when the fields drop.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_order_numerically() {
        let mut v: Vec<Vec<u32>> = ["9.6", "15", "10", "16"]
            .into_iter()
            .filter_map(version_key)
            .collect();
        v.sort();
        assert_eq!(v.last(), Some(&vec![16]));
        assert_eq!(v.first(), Some(&vec![9, 6]));
        assert_eq!(version_key("main"), None);
    }

    #[test]
    fn names_are_quoted_and_encoded() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(percent_encode("rtc_test-1"), "rtc_test-1");
        assert_eq!(percent_encode("a b/é"), "a%20b%2F%C3%A9");
    }
}
