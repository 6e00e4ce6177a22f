//! A real FreeSWITCH for live tests and benchmarks: find the installed build, write a minimal configuration into a
//! temporary directory, start it there listening on 127.0.0.1 only, drive it over its event socket, and stop it by
//! the PID in its run directory.
//!
//! FreeSWITCH is found through `FREESWITCH_PREFIX` (`<prefix>/bin/freeswitch`; when set, nothing else is
//! tried), else `pkg-config --variable=prefix freeswitch`, else a `freeswitch` binary on `PATH`. When none is
//! found, [`Install::find`] prints one `skipped: ...` line and the test returns (and passes).
//!
//! [`FreeSwitch::start`] writes `conf/freeswitch.xml`, which includes `conf/autoload_configs/*.xml` and
//! `conf/dialplan/*.xml`: the modules to load, the core (`switch.conf`), the log file, the event socket on a free
//! port of 127.0.0.1, optionally a SIP profile on 127.0.0.1, the caller's dialplan, and any further files the
//! caller gives (written last, so they may replace the defaults). The installation's modules are linked into a
//! temporary mod dir, beside any extra module the caller brings. It runs `freeswitch -nonat -nonatmap -np -nc -nf
//! -nocal` with every directory (`-base -conf -mod -log -db -run -temp -cache -storage -recordings -sounds -certs
//! -scripts`) inside the temporary directory, so nothing of the host's installation is read or written besides
//! its modules. `-nc` daemonises: the process started is not FreeSWITCH, whose PID is read from
//! `run/freeswitch.pid`. Dropping [`FreeSwitch`] sends SIGTERM, waits, and sends SIGKILL if it must; when the
//! thread is panicking (a failed test) the directory is kept and its path printed.
//!
//! Nothing here knows the module under test: its `.so`, its configuration and its tables are passed in through
//! [`Options`].

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long [`FreeSwitch::start`] waits for FreeSWITCH to be ready.
const START_BOUND: Duration = Duration::from_secs(60);

/// The directories FreeSWITCH is given, each `-<name> <dir>/<name>`.
const DIRS: [&str; 12] = [
    "conf",
    "mod",
    "log",
    "db",
    "run",
    "temp",
    "cache",
    "storage",
    "recordings",
    "sounds",
    "certs",
    "scripts",
];

/// The modules [`Options::default`] loads at startup: logging, the event socket, the API commands, the dialplan
/// applications, the XML dialplan and the loopback endpoint.
pub const DEFAULT_MODULES: [&str; 6] = [
    "mod_logfile",
    "mod_event_socket",
    "mod_commands",
    "mod_dptools",
    "mod_dialplan_xml",
    "mod_loopback",
];

/// An installed FreeSWITCH.
#[derive(Clone, Debug)]
pub struct Install {
    /// The installation prefix.
    pub prefix: PathBuf,
    /// `<prefix>/bin/freeswitch`.
    pub bin: PathBuf,
    /// Its modules: `<prefix>/mod`, or `<prefix>/lib/freeswitch/mod` (distribution packages).
    pub mod_dir: PathBuf,
}

impl Install {
    /// The installation to test against, or `None` after printing the one line
    /// `skipped: <test>: FreeSWITCH not found (...)`.
    pub fn find(test: &str) -> Option<Install> {
        let found = Install::locate();
        if found.is_none() {
            println!(
                "skipped: {test}: FreeSWITCH not found (set FREESWITCH_PREFIX, or PKG_CONFIG_PATH for pkg-config, \
                 or put freeswitch on PATH)"
            );
        }
        found
    }

    /// The installation found through `FREESWITCH_PREFIX`, else pkg-config, else `PATH`; prints nothing.
    pub fn locate() -> Option<Install> {
        let has_bin = |p: &Path| p.join("bin/freeswitch").is_file();
        let prefix =
            if let Some(p) = std::env::var_os("FREESWITCH_PREFIX").filter(|p| !p.is_empty()) {
                Some(PathBuf::from(p)).filter(|p| has_bin(p))
            } else {
                Command::new("pkg-config")
                    .args(["--variable=prefix", "freeswitch"])
                    .stderr(Stdio::null())
                    .output()
                    .ok()
                    .filter(|o| o.status.success())
                    .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
                    .filter(|p| has_bin(p))
                    .or_else(|| {
                        let path = std::env::var_os("PATH")?;
                        std::env::split_paths(&path)
                            .map(|d| d.join("freeswitch"))
                            .find(|b| b.is_file())
                            .and_then(|b| b.canonicalize().ok())
                            .and_then(|b| b.parent()?.parent().map(Path::to_path_buf))
                            .filter(|p| has_bin(p))
                    })
            }?;
        let mod_dir = [prefix.join("mod"), prefix.join("lib/freeswitch/mod")]
            .into_iter()
            .find(|d| d.join("mod_event_socket.so").is_file())
            .unwrap_or_else(|| prefix.join("mod"));
        Some(Install {
            bin: prefix.join("bin/freeswitch"),
            mod_dir,
            prefix,
        })
    }
}

/// What the test's FreeSWITCH runs besides the event socket.
#[derive(Debug)]
pub struct Options {
    /// `<context>` elements of the XML dialplan (written inside `<include>` to `conf/dialplan/default.xml`).
    pub dialplan: String,
    /// The event socket's password (default `ClueCon`).
    pub password: String,
    /// A SIP profile `test` on 127.0.0.1 and a free port ([`FreeSwitch::sip_port`]), its calls into the
    /// dialplan's `public` context; loads `mod_sofia`.
    pub sip_profile: bool,
    /// Further files: paths relative to `conf/` (`autoload_configs/x.conf.xml`, `x/table.csv`) and their text.
    pub files: Vec<(PathBuf, String)>,
    /// Further modules: the file name in the temp mod dir (`mod_x.so`) and the `.so` copied there. Loaded only
    /// when named in [`Options::modules`] or by the test (`load mod_x`).
    pub extra_modules: Vec<(String, PathBuf)>,
    /// Environment variables for the FreeSWITCH process, besides the test's own.
    pub env: Vec<(String, String)>,
    /// Modules loaded at startup (default [`DEFAULT_MODULES`]).
    pub modules: Vec<String>,
    /// The core's log level (`switch.conf` `loglevel`, default `info`); `log/freeswitch.log` gets all it logs.
    pub log_level: String,
    /// The directory to run in, when the caller needs its path for a file's text; a new one when `None`.
    pub dir: Option<tempfile::TempDir>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            dialplan: String::new(),
            password: "ClueCon".into(),
            sip_profile: false,
            files: Vec::new(),
            extra_modules: Vec::new(),
            env: Vec::new(),
            modules: DEFAULT_MODULES.iter().map(|m| (*m).to_owned()).collect(),
            log_level: "info".into(),
            dir: None,
        }
    }
}

/// A new temporary directory for [`Options::dir`].
pub fn temp_dir() -> std::io::Result<tempfile::TempDir> {
    tempfile::Builder::new().prefix("rtc-fs-live-").tempdir()
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Waits up to `bound` for `f` to give `Some`, trying every 50 ms; panics naming `what` when it does not.
pub fn wait_for<T>(what: &str, bound: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + bound;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The configuration files [`FreeSwitch::start`] writes before the caller's, relative to `conf/`.
fn config_files(
    opts: &Options,
    esl_port: u16,
    sip_port: Option<u16>,
) -> Vec<(&'static str, String)> {
    let rtp = 20_000 + (esl_port % 20) * 1000;
    let mut modules: String = opts
        .modules
        .iter()
        .map(|m| format!("  <load module=\"{m}\"/>\n"))
        .collect();
    if sip_port.is_some() && !opts.modules.iter().any(|m| m == "mod_sofia") {
        modules.push_str("  <load module=\"mod_sofia\"/>\n");
    }
    let (password, log_level, dialplan) = (&opts.password, &opts.log_level, &opts.dialplan);
    let mut files = vec![
        (
            "freeswitch.xml",
            r#"<?xml version="1.0"?>
<document type="freeswitch/xml">
  <X-PRE-PROCESS cmd="set" data="local_ip_v4=127.0.0.1"/>
  <section name="configuration">
    <X-PRE-PROCESS cmd="include" data="autoload_configs/*.xml"/>
  </section>
  <section name="dialplan">
    <X-PRE-PROCESS cmd="include" data="dialplan/*.xml"/>
  </section>
</document>
"#
            .to_owned(),
        ),
        (
            "autoload_configs/modules.conf.xml",
            format!("<configuration name=\"modules.conf\"><modules>\n{modules}</modules></configuration>\n"),
        ),
        (
            "autoload_configs/switch.conf.xml",
            format!(
                r#"<configuration name="switch.conf"><settings>
  <param name="loglevel" value="{log_level}"/><param name="max-sessions" value="4000"/>
  <param name="sessions-per-second" value="2000"/><param name="dump-cores" value="no"/>
  <param name="rtp-start-port" value="{rtp}"/><param name="rtp-end-port" value="{}"/>
</settings></configuration>
"#,
                rtp + 999
            ),
        ),
        (
            "autoload_configs/logfile.conf.xml",
            r#"<configuration name="logfile.conf"><settings><param name="rotate-on-hup" value="true"/></settings>
<profiles><profile name="default"><settings><param name="rollover" value="0"/></settings>
<mappings><map name="all" value="debug,info,notice,warning,err,crit,alert"/></mappings></profile></profiles>
</configuration>
"#
            .to_owned(),
        ),
        (
            "autoload_configs/event_socket.conf.xml",
            format!(
                r#"<configuration name="event_socket.conf"><settings>
  <param name="nat-map" value="false"/><param name="listen-ip" value="127.0.0.1"/>
  <param name="listen-port" value="{esl_port}"/><param name="password" value="{password}"/>
</settings></configuration>
"#
            ),
        ),
        (
            "dialplan/default.xml",
            format!("<include>\n{dialplan}\n</include>\n"),
        ),
    ];
    if let Some(sip_port) = sip_port {
        files.push((
            "autoload_configs/sofia.conf.xml",
            format!(
                r#"<configuration name="sofia.conf"><global_settings><param name="log-level" value="0"/></global_settings>
<profiles><profile name="test"><settings>
  <param name="auth-calls" value="false"/><param name="dialplan" value="XML"/><param name="context" value="public"/>
  <param name="codec-prefs" value="PCMU,PCMA"/><param name="inbound-codec-negotiation" value="generous"/>
  <param name="sip-ip" value="127.0.0.1"/><param name="rtp-ip" value="127.0.0.1"/>
  <param name="ext-sip-ip" value="127.0.0.1"/><param name="ext-rtp-ip" value="127.0.0.1"/>
  <param name="sip-port" value="{sip_port}"/><param name="manage-presence" value="false"/>
  <param name="rtp-timer-name" value="soft"/><param name="tls" value="false"/>
</settings></profile></profiles></configuration>
"#
            ),
        ));
    }
    files
}

/// A running FreeSWITCH in its own temporary directory; stopped by PID when dropped.
pub struct FreeSwitch {
    /// Where its configuration (`conf/`), modules (`mod/`), logs (`log/`), run dir and other state live.
    pub dir: tempfile::TempDir,
    /// Its event socket port on 127.0.0.1.
    pub esl_port: u16,
    /// Its event socket password.
    pub password: String,
    /// Its SIP profile's port on 127.0.0.1, with [`Options::sip_profile`].
    pub sip_port: Option<u16>,
    /// Its process id (from `run/freeswitch.pid`).
    pub pid: u32,
    /// The process started (it forks the daemon and exits), reaped on drop.
    launcher: Child,
    /// Keep the directory when dropped (start failed).
    keep: bool,
}

impl FreeSwitch {
    /// Writes the configuration, links the modules, starts FreeSWITCH and returns once it answers `status` with
    /// "is ready" on its event socket (at most 60 s). On failure FreeSWITCH is stopped and its directory kept;
    /// the error names it.
    pub fn start(install: &Install, mut opts: Options) -> Result<FreeSwitch, String> {
        for (name, so) in &opts.extra_modules {
            if !so.is_file() {
                return Err(format!(
                    "no {} to copy as {name}: build it first",
                    so.display()
                ));
            }
        }
        let mut dir = match opts.dir.take() {
            Some(dir) => dir,
            None => temp_dir().map_err(|e| format!("temp dir: {e}"))?,
        };
        let d = dir.path().to_path_buf();
        let esl_port = free_port();
        let sip_port = opts.sip_profile.then(free_port);
        let setup = || -> Result<(), String> {
            for s in DIRS {
                std::fs::create_dir_all(d.join(s)).map_err(|e| format!("{s}: {e}"))?;
            }
            let conf = d.join("conf");
            for (path, text) in config_files(&opts, esl_port, sip_port) {
                write(&conf.join(path), &text)?;
            }
            for (path, text) in &opts.files {
                write(&conf.join(path), text)?;
            }
            let mods = d.join("mod");
            let entries = std::fs::read_dir(&install.mod_dir)
                .map_err(|e| format!("{}: {e}", install.mod_dir.display()))?;
            for entry in entries.flatten() {
                let _ = std::os::unix::fs::symlink(entry.path(), mods.join(entry.file_name()));
            }
            for (name, so) in &opts.extra_modules {
                let to = mods.join(name);
                let _ = std::fs::remove_file(&to);
                std::fs::copy(so, &to)
                    .map_err(|e| format!("copying {} to {}: {e}", so.display(), to.display()))?;
            }
            Ok(())
        };
        if let Err(e) = setup() {
            dir.disable_cleanup(true);
            return Err(format!("{e} (in {})", d.display()));
        }
        let mut cmd = Command::new(&install.bin);
        cmd.args(["-nonat", "-nonatmap", "-np", "-nc", "-nf", "-nocal"])
            .arg("-base")
            .arg(&d);
        for s in DIRS {
            cmd.arg(format!("-{s}")).arg(d.join(s));
        }
        let out =
            std::fs::File::create(d.join("stdout.log")).map_err(|e| format!("stdout.log: {e}"))?;
        let err = out.try_clone().map_err(|e| format!("stdout.log: {e}"))?;
        let mut launcher = cmd
            .envs(opts.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", install.bin.display()))?;
        let deadline = Instant::now() + START_BOUND;
        let pid_file = d.join("run/freeswitch.pid");
        let read_pid = || {
            std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|t| t.trim().parse::<u32>().ok())
        };
        let pid = loop {
            if let Some(pid) = read_pid() {
                break pid;
            }
            let failed = match launcher.try_wait() {
                Ok(Some(status)) if !status.success() => {
                    Some(format!("FreeSWITCH exited with {status}"))
                }
                _ if Instant::now() > deadline => Some("FreeSWITCH wrote no pid file".to_owned()),
                _ => None,
            };
            if let Some(why) = failed {
                // One last look: it may have written it meanwhile.
                if let Some(pid) = read_pid() {
                    break pid;
                }
                let _ = launcher.kill();
                let _ = launcher.wait();
                dir.disable_cleanup(true);
                return Err(format!(
                    "{why}; see {}/stdout.log and {}/log",
                    d.display(),
                    d.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut fs = FreeSwitch {
            dir,
            esl_port,
            password: opts.password.clone(),
            sip_port,
            pid,
            launcher,
            keep: false,
        };
        loop {
            if let Ok(mut esl) = fs.try_esl()
                && esl.try_api("status").is_ok_and(|s| s.contains("is ready"))
            {
                return Ok(fs);
            }
            if Instant::now() > deadline || !fs.alive() {
                fs.keep = true;
                return Err(format!(
                    "FreeSWITCH (pid {}) did not get ready on its event socket 127.0.0.1:{esl_port} within {} s; \
                     see {}",
                    fs.pid,
                    START_BOUND.as_secs(),
                    fs.log_path().display()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A new event-socket connection, authenticated.
    pub fn try_esl(&self) -> std::io::Result<Esl> {
        Esl::connect(self.esl_port, &self.password)
    }

    /// A new event-socket connection, authenticated; panics when there is none.
    pub fn esl(&self) -> Esl {
        self.try_esl()
            .unwrap_or_else(|e| panic!("event socket on port {}: {e}", self.esl_port))
    }

    /// Its configuration directory (`<dir>/conf`).
    pub fn conf_dir(&self) -> PathBuf {
        self.dir.path().join("conf")
    }

    /// Its log file (`<dir>/log/freeswitch.log`).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("log/freeswitch.log")
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Whether the process still runs (not gone, not a zombie).
    pub fn alive(&self) -> bool {
        alive(self.pid)
    }

    /// User + system CPU time FreeSWITCH has used, in clock ticks (from `/proc/<pid>/stat`).
    pub fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap_or_default();
        stat.rsplit_once(')')
            .map_or(0, |(_, rest)| utime_stime(rest))
    }

    /// User + system CPU ticks of each live thread of FreeSWITCH: (thread id, thread name, ticks), from
    /// `/proc/<pid>/task/<tid>/stat`. Threads that ended are not listed (their time stays in [`Self::cpu_ticks`]).
    pub fn thread_ticks(&self) -> Vec<(u32, String, u64)> {
        let Ok(dir) = std::fs::read_dir(format!("/proc/{}/task", self.pid)) else {
            return Vec::new();
        };
        dir.filter_map(|e| {
            let e = e.ok()?;
            let tid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let (head, rest) = stat.rsplit_once(')')?;
            let name = head.split_once('(')?.1.to_owned();
            Some((tid, name, utime_stime(rest)))
        })
        .collect()
    }

    /// Of the live threads named `name`: (context switches, voluntary and involuntary, i.e. how often they
    /// slept and woke; CPU time in microseconds, exact from the scheduler, unlike the tick-sampled
    /// [`Self::thread_ticks`]). From `/proc/<pid>/task/<tid>/status` and `.../sched`.
    pub fn thread_switches_and_us(&self, name: &str) -> (u64, f64) {
        let Ok(dir) = std::fs::read_dir(format!("/proc/{}/task", self.pid)) else {
            return (0, 0.0);
        };
        let value = |text: &str, key: &str| -> Option<f64> {
            text.lines()
                .find(|l| l.starts_with(key))?
                .rsplit(|c: char| c == ':' || c.is_whitespace())
                .next()?
                .parse()
                .ok()
        };
        dir.filter_map(|e| {
            let path = e.ok()?.path();
            let status = std::fs::read_to_string(path.join("status")).ok()?;
            if status.lines().next()?.strip_prefix("Name:")?.trim() != name {
                return None;
            }
            let sched = std::fs::read_to_string(path.join("sched")).unwrap_or_default();
            let switches = value(&status, "voluntary_ctxt_switches").unwrap_or(0.0)
                + value(&status, "nonvoluntary_ctxt_switches").unwrap_or(0.0);
            let ms = value(&sched, "se.sum_exec_runtime").unwrap_or(0.0);
            Some((switches as u64, ms * 1000.0))
        })
        .fold((0, 0.0), |(n, us), (dn, dus)| (n + dn, us + dus))
    }

    /// Kills FreeSWITCH with SIGKILL, as a crash would (nothing of it runs its shutdown: the module is not
    /// unloaded), and hands back its directory, kept as it was, for a restart on the same state
    /// ([`Options::dir`]: the same configuration, db, logs).
    pub fn crash(mut self) -> tempfile::TempDir {
        let _ = Command::new("kill")
            .args(["-KILL", &self.pid.to_string()])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        // The next start must not read the dead process's pid.
        let _ = std::fs::remove_file(self.dir.path().join("run/freeswitch.pid"));
        let empty = temp_dir().expect("a temp dir");
        std::mem::replace(&mut self.dir, empty)
    }

    /// SIGTERM to FreeSWITCH by its PID, up to 15 s for it to end, then SIGKILL and up to 5 s more.
    fn stop(&self) {
        let signal = |sig: &str| {
            let _ = Command::new("kill")
                .args([sig, &self.pid.to_string()])
                .stderr(Stdio::null())
                .status();
        };
        signal("-TERM");
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if self.alive() {
            signal("-KILL");
            let deadline = Instant::now() + Duration::from_secs(5);
            while self.alive() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

impl Drop for FreeSwitch {
    fn drop(&mut self) {
        self.stop();
        // The launcher exited after forking (or is killed now, if it still runs): reap it.
        if !matches!(self.launcher.try_wait(), Ok(Some(_))) {
            let _ = self.launcher.kill();
            let _ = self.launcher.wait();
        }
        if self.keep || std::thread::panicking() {
            // Keep what explains the failure.
            self.dir.disable_cleanup(true);
            println!(
                "FreeSWITCH dir kept for inspection: {}",
                self.dir.path().display()
            );
        }
    }
}

/// Whether process `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_none_or(|(_, rest)| rest.split_whitespace().next() != Some("Z")),
        Err(_) => false,
    }
}

/// utime + stime from the part of a /proc stat line after the command name (fields 14 and 15 of proc(5),
/// counting the state as field 3).
fn utime_stime(after_name: &str) -> u64 {
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let f = |i: usize| {
        fields
            .get(i - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    f(14) + f(15)
}

/// A minimal event-socket client: `api` commands with their answers, `bgapi` without waiting for the job.
pub struct Esl {
    /// Buffered reader over the connection.
    reader: BufReader<TcpStream>,
    /// The same connection, for writing.
    writer: TcpStream,
}

impl Esl {
    /// Connects to 127.0.0.1:`port` and authenticates with `password`; reads time out after 20 s.
    pub fn connect(port: u16, password: &str) -> std::io::Result<Esl> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(20)))?;
        let mut esl = Esl {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        };
        let (headers, _) = esl.read()?;
        if !headers.contains("auth/request") {
            return Err(std::io::Error::other(format!("no auth request: {headers}")));
        }
        esl.writer
            .write_all(format!("auth {password}\n\n").as_bytes())?;
        let (headers, _) = esl.read()?;
        if !headers.contains("+OK") {
            return Err(std::io::Error::other(format!("auth refused: {headers}")));
        }
        Ok(esl)
    }

    /// One frame: its headers and its body.
    fn read(&mut self) -> std::io::Result<(String, String)> {
        let mut headers = String::new();
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(std::io::Error::other("event socket closed"));
            }
            if line == "\n" {
                if headers.is_empty() {
                    continue;
                }
                break;
            }
            headers.push_str(&line);
        }
        let len = headers
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        self.reader.read_exact(&mut body)?;
        Ok((headers, String::from_utf8_lossy(&body).into_owned()))
    }

    /// Runs an API command and returns its output, or the socket's error.
    pub fn try_api(&mut self, command: &str) -> std::io::Result<String> {
        self.writer
            .write_all(format!("api {command}\n\n").as_bytes())?;
        loop {
            let (headers, body) = self.read()?;
            if headers.contains("api/response") {
                return Ok(body);
            }
        }
    }

    /// Runs an API command and returns its output; panics when the socket fails.
    pub fn api(&mut self, command: &str) -> String {
        self.try_api(command)
            .unwrap_or_else(|e| panic!("event socket, api {command}: {e}"))
    }

    /// Starts a background API command (FreeSWITCH answers with a job id at once); panics when the socket fails.
    pub fn bgapi(&mut self, command: &str) {
        let mut run = || -> std::io::Result<()> {
            self.writer
                .write_all(format!("bgapi {command}\n\n").as_bytes())?;
            loop {
                let (headers, _) = self.read()?;
                if headers.contains("command/reply") {
                    return Ok(());
                }
            }
        };
        run().unwrap_or_else(|e| panic!("event socket, bgapi {command}: {e}"));
    }

    /// Asks for events (`event plain <what>`, e.g. `CUSTOM rtc_core::low_balance`); read them with
    /// [`Esl::next_event`]. Use a connection of its own for events: `api` skips them.
    pub fn subscribe(&mut self, what: &str) -> std::io::Result<()> {
        self.writer
            .write_all(format!("event plain {what}\n\n").as_bytes())?;
        loop {
            let (headers, _) = self.read()?;
            if headers.contains("command/reply") {
                return if headers.contains("+OK") {
                    Ok(())
                } else {
                    Err(std::io::Error::other(format!("event {what}: {headers}")))
                };
            }
        }
    }

    /// The next event's headers (names and percent-decoded values), waiting at most `bound`; `None` when none
    /// came.
    pub fn next_event(&mut self, bound: Duration) -> Option<Vec<(String, String)>> {
        let stream = self.reader.get_ref();
        let _ = stream.set_read_timeout(Some(bound));
        let frame = self.read();
        let _ = self
            .reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_secs(20)));
        let (headers, body) = frame.ok()?;
        if !headers.contains("text/event-plain") {
            return None;
        }
        Some(
            body.lines()
                .filter_map(|l| l.split_once(": "))
                .map(|(k, v)| (k.to_owned(), percent_decode(v)))
                .collect(),
        )
    }

    /// Sessions FreeSWITCH has right now (from `status`).
    pub fn sessions(&mut self) -> Option<u64> {
        self.api("status")
            .lines()
            .find(|l| l.contains("session(s) - peak"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
    }
}

/// Undoes the `%XX` escapes of a plain event's header values.
fn percent_decode(v: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                out.push(hi << 4 | lo);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
