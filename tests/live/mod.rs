//! A real FreeSWITCH for the live tests and the live benchmark: found, configured in a temp dir on 127.0.0.1
//! only, started, driven over its event socket, and stopped by PID when dropped.
//!
//! FreeSWITCH is found as `FREESWITCH_PREFIX` (`<prefix>/bin/freeswitch`), else `pkg-config --variable=prefix
//! freeswitch`, else a `freeswitch` binary on `PATH`. Absent: [`FreeSwitch::find`] prints one `skipped:` line.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// An installed FreeSWITCH.
pub struct Install {
    /// `<prefix>/bin/freeswitch`.
    pub bin: PathBuf,
    /// `<prefix>/mod`, its modules.
    pub mod_dir: PathBuf,
}

impl Install {
    /// The installation to test against, or `None` (after printing why) when there is none.
    pub fn find(test: &str) -> Option<Install> {
        let prefix = std::env::var_os("FREESWITCH_PREFIX")
            .map(PathBuf::from)
            .or_else(|| {
                Command::new("pkg-config")
                    .args(["--variable=prefix", "freeswitch"])
                    .output()
                    .ok()
                    .filter(|o| o.status.success())
                    .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
            })
            .filter(|p| p.join("bin/freeswitch").is_file())
            .or_else(|| {
                std::env::var_os("PATH").and_then(|path| {
                    std::env::split_paths(&path)
                        .map(|d| d.join("freeswitch"))
                        .find(|b| b.is_file())
                        .and_then(|b| b.canonicalize().ok())
                        .and_then(|b| b.parent()?.parent().map(Path::to_path_buf))
                })
            });
        let Some(prefix) = prefix else {
            println!(
                "skipped: {test}: no FreeSWITCH found (set FREESWITCH_PREFIX, or PKG_CONFIG_PATH for pkg-config, or put \
                 freeswitch on PATH)"
            );
            return None;
        };
        let mod_dir = [prefix.join("mod"), prefix.join("lib/freeswitch/mod")]
            .into_iter()
            .find(|d| d.join("mod_event_socket.so").is_file())
            .unwrap_or_else(|| prefix.join("mod"));
        Some(Install {
            bin: prefix.join("bin/freeswitch"),
            mod_dir,
        })
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
    }
}

/// The dialplan of the live tests. `default`: every call through the `rtc_core` app; `rtc_park`: parked with
/// `rtc_core=true`, for the engine to bridge; `rtc_answer`: where the loopback route lands (answers; 15559... numbers stay up 5 s,
/// 15558... hang up at once, others after 300 ms); `plain`: the same failover as the sample routes, without
/// the module (benchmark baseline), and 15559... answered and held 5 s; `public`: SIP calls, through the app.
const DIALPLAN: &str = r#"<include>
<context name="default">
  <extension name="rtc"><condition field="destination_number" expression="^\d+$">
    <action application="rtc_core"/>
  </condition></extension>
</context>
<context name="public">
  <extension name="rtc"><condition field="destination_number" expression="^\d+$">
    <action application="rtc_core"/>
  </condition></extension>
</context>
<context name="rtc_transfer">
  <extension name="rtc"><condition field="destination_number" expression="^\d+$">
    <action application="rtc_core" data="transfer=rtc_routed"/>
  </condition></extension>
</context>
<context name="rtc_routed">
  <extension name="bridge"><condition field="destination_number" expression="^\d+$">
    <action application="set" data="hangup_after_bridge=true"/>
    <action application="bridge" data="${rtc_dial}"/>
  </condition></extension>
</context>
<context name="rtc_park">
  <extension name="park"><condition field="destination_number" expression="^\d+$">
    <action application="set" data="rtc_core=true"/>
    <action application="park"/>
  </condition></extension>
</context>
<context name="rtc_answer">
  <extension name="long"><condition field="destination_number" expression="^15559\d+$">
    <action application="answer"/><action application="sleep" data="5000"/><action application="hangup"/>
  </condition></extension>
  <extension name="at_once"><condition field="destination_number" expression="^15558\d+$">
    <action application="answer"/><action application="hangup"/>
  </condition></extension>
  <extension name="short"><condition field="destination_number" expression="^\d+$">
    <action application="answer"/><action application="sleep" data="300"/><action application="hangup"/>
  </condition></extension>
</context>
<context name="plain">
  <extension name="long"><condition field="destination_number" expression="^15559\d+$">
    <action application="answer"/><action application="sleep" data="5000"/><action application="hangup"/>
  </condition></extension>
  <extension name="bridge"><condition field="destination_number" expression="^(\d+)$">
    <action application="set" data="hangup_after_bridge=true"/>
    <action application="bridge" data="error/NORMAL_TEMPORARY_FAILURE|loopback/$1/rtc_answer"/>
  </condition></extension>
</context>
</include>
"#;

/// A running FreeSWITCH in its own temp dir; stopped by PID when dropped.
pub struct FreeSwitch {
    /// Where its configuration, logs, db, run dir and the CDR file live.
    pub dir: tempfile::TempDir,
    /// Its event socket port on 127.0.0.1.
    pub esl_port: u16,
    /// Its SIP profile's port on 127.0.0.1.
    pub sip_port: u16,
    /// The module's scrape endpoint's port on 127.0.0.1 (`metrics-listen`).
    pub metrics_port: u16,
    /// Its process id (from the run dir's pid file).
    pub pid: u32,
}

impl FreeSwitch {
    /// Writes a configuration, links FreeSWITCH's modules and `module_so` (as `mod_rtc_core.so`) into a temp mod
    /// dir, starts FreeSWITCH and waits until it answers on its event socket.
    pub fn start(install: &Install, module_so: &Path, sofia: bool) -> FreeSwitch {
        FreeSwitch::start_with_env(install, module_so, sofia, &[])
    }

    /// [`FreeSwitch::start`] with extra environment variables for the FreeSWITCH process.
    pub fn start_with_env(
        install: &Install,
        module_so: &Path,
        sofia: bool,
        env: &[(&str, &str)],
    ) -> FreeSwitch {
        assert!(
            module_so.is_file(),
            "build the module first: {}",
            module_so.display()
        );
        let dir = tempfile::Builder::new()
            .prefix("rtc-live-")
            .tempdir()
            .expect("temp dir");
        let d = dir.path();
        let (esl_port, sip_port, metrics_port) = (free_port(), free_port(), free_port());
        let rtp = 20_000 + (esl_port % 20) * 1000;
        let conf = d.join("conf");
        write(
            &conf.join("freeswitch.xml"),
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
"#,
        );
        let ac = conf.join("autoload_configs");
        let sofia_load = if sofia {
            r#"<load module="mod_sofia"/>"#
        } else {
            ""
        };
        write(
            &ac.join("modules.conf.xml"),
            &format!(
                r#"<configuration name="modules.conf"><modules>
  <load module="mod_logfile"/><load module="mod_event_socket"/><load module="mod_commands"/>
  <load module="mod_dptools"/><load module="mod_dialplan_xml"/><load module="mod_loopback"/>{sofia_load}
</modules></configuration>
"#
            ),
        );
        write(
            &ac.join("switch.conf.xml"),
            &format!(
                r#"<configuration name="switch.conf"><settings>
  <param name="loglevel" value="info"/><param name="max-sessions" value="4000"/>
  <param name="sessions-per-second" value="2000"/><param name="dump-cores" value="no"/>
  <param name="rtp-start-port" value="{rtp}"/><param name="rtp-end-port" value="{}"/>
</settings></configuration>
"#,
                rtp + 999
            ),
        );
        write(
            &ac.join("logfile.conf.xml"),
            r#"<configuration name="logfile.conf"><settings><param name="rotate-on-hup" value="true"/></settings>
<profiles><profile name="default"><settings><param name="rollover" value="0"/></settings>
<mappings><map name="all" value="info,notice,warning,err,crit,alert"/></mappings></profile></profiles>
</configuration>
"#,
        );
        write(
            &ac.join("event_socket.conf.xml"),
            &format!(
                r#"<configuration name="event_socket.conf"><settings>
  <param name="nat-map" value="false"/><param name="listen-ip" value="127.0.0.1"/>
  <param name="listen-port" value="{esl_port}"/><param name="password" value="ClueCon"/>
</settings></configuration>
"#
            ),
        );
        if sofia {
            write(
                &ac.join("sofia.conf.xml"),
                &format!(
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
            );
        }
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let shipped = std::fs::read_to_string(repo.join("conf/autoload_configs/rtc_core.conf.xml"))
            .expect("shipped rtc_core.conf.xml");
        let ours = shipped
            .replace(
                r#"<param name="cdr-file" value=""/>"#,
                &format!(
                    r#"<param name="cdr-file" value="{}"/>"#,
                    d.join("cdr.jsonl").display()
                ),
            )
            .replace(
                "/var/spool/rtc_core/settlements.jsonl",
                &d.join("spool.jsonl").to_string_lossy(),
            )
            .replace(
                r#"<param name="metrics-listen" value=""/>"#,
                &format!(r#"<param name="metrics-listen" value="127.0.0.1:{metrics_port}"/>"#),
            );
        write(&ac.join("rtc_core.conf.xml"), &ours);
        copy_dir(&repo.join("conf/rtc_core"), &conf.join("rtc_core"));
        write(&conf.join("dialplan/default.xml"), DIALPLAN);
        let mods = d.join("mod");
        std::fs::create_dir_all(&mods).expect("mkdir");
        for entry in std::fs::read_dir(&install.mod_dir).expect("FreeSWITCH mod dir") {
            let entry = entry.expect("entry");
            let _ = std::os::unix::fs::symlink(entry.path(), mods.join(entry.file_name()));
        }
        std::fs::copy(module_so, mods.join("mod_rtc_core.so")).expect("copy the module");
        for sub in [
            "log",
            "db",
            "run",
            "temp",
            "cache",
            "storage",
            "recordings",
            "sounds",
        ] {
            std::fs::create_dir_all(d.join(sub)).expect("mkdir");
        }
        let p = |s: &str| d.join(s).to_string_lossy().into_owned();
        let status = Command::new(&install.bin)
            .args(["-nonat", "-nonatmap", "-np", "-nc", "-nf", "-nocal"])
            .args(["-base", &p(""), "-conf", &p("conf"), "-mod", &p("mod")])
            .args(["-log", &p("log"), "-db", &p("db"), "-run", &p("run")])
            .args([
                "-temp",
                &p("temp"),
                "-cache",
                &p("cache"),
                "-storage",
                &p("storage"),
            ])
            .args(["-recordings", &p("recordings"), "-sounds", &p("sounds")])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let mut child =
            status.unwrap_or_else(|e| panic!("cannot start {}: {e}", install.bin.display()));
        let deadline = Instant::now() + Duration::from_secs(30);
        let pid_file = d.join("run/freeswitch.pid");
        let pid = loop {
            if let Some(pid) = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|t| t.trim().parse::<u32>().ok())
            {
                break pid;
            }
            if let Ok(Some(status)) = child.try_wait()
                && !status.success()
            {
                panic!(
                    "FreeSWITCH exited with {status}; see {}",
                    d.join("log").display()
                );
            }
            assert!(Instant::now() < deadline, "FreeSWITCH wrote no pid file");
            std::thread::sleep(Duration::from_millis(50));
        };
        // -nc forks: the child we spawned is not FreeSWITCH itself; reap it whenever it ends.
        std::thread::spawn(move || {
            let _ = child.wait();
        });
        let fs = FreeSwitch {
            dir,
            esl_port,
            sip_port,
            metrics_port,
            pid,
        };
        loop {
            if let Ok(mut esl) = fs.try_esl()
                && esl.api("status").contains("is ready")
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "FreeSWITCH did not get ready; see {}",
                fs.dir.path().join("log").display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        fs
    }

    fn try_esl(&self) -> std::io::Result<Esl> {
        Esl::connect(self.esl_port)
    }

    /// A new event-socket connection.
    pub fn esl(&self) -> Esl {
        self.try_esl()
            .unwrap_or_else(|e| panic!("event socket on port {}: {e}", self.esl_port))
    }

    /// FreeSWITCH's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log/freeswitch.log")).unwrap_or_default()
    }

    /// The CDRs the module's local backend wrote (JSON lines).
    pub fn cdrs(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("cdr.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// User + system CPU time FreeSWITCH has used, in clock ticks (from /proc/<pid>/stat).
    pub fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap_or_default();
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<&str> = after.split_whitespace().collect();
        // After the command name: state is field 3, utime 14, stime 15 (1-based in proc(5)).
        let f = |i: usize| {
            fields
                .get(i - 3)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        f(14) + f(15)
    }

    /// User + system CPU ticks of each live thread of FreeSWITCH: (thread id, thread name, ticks), from
    /// /proc/<pid>/task/<tid>/stat. Threads that ended are not listed (their time stays in [`Self::cpu_ticks`]).
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
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let f = |i: usize| {
                fields
                    .get(i - 3)
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            Some((tid, name, f(14) + f(15)))
        })
        .collect()
    }

    /// Of the live threads named `name`: (context switches, voluntary and involuntary, i.e. how often they
    /// slept and woke; CPU time in microseconds, exact from the scheduler, unlike the tick-sampled
    /// [`Self::thread_ticks`]). From /proc/<pid>/task/<tid>/status and .../sched.
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

    /// Sessions FreeSWITCH has right now (from `status`).
    pub fn sessions(esl: &mut Esl) -> Option<u64> {
        esl.api("status")
            .lines()
            .find(|l| l.contains("session(s) - peak"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
    }

    /// Whether the process still runs.
    pub fn alive(&self) -> bool {
        Path::new(&format!("/proc/{}", self.pid)).exists()
    }
}

impl Drop for FreeSwitch {
    fn drop(&mut self) {
        let pid = self.pid.to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if self.alive() {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
        }
        if std::thread::panicking() {
            // Keep what explains the failure.
            let kept = self.dir.path().to_path_buf();
            println!("FreeSWITCH dir kept for inspection: {}", kept.display());
            let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"));
            let _ = dir.keep();
        }
    }
}

/// A minimal event-socket client: `api` commands with their answers, `bgapi` without waiting for the job.
pub struct Esl {
    /// Buffered reader over the connection.
    reader: BufReader<TcpStream>,
    /// The same connection, for writing.
    writer: TcpStream,
}

impl Esl {
    fn connect(port: u16) -> std::io::Result<Esl> {
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
        esl.writer.write_all(b"auth ClueCon\n\n")?;
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

    /// Runs an API command and returns its output.
    pub fn api(&mut self, command: &str) -> String {
        self.writer
            .write_all(format!("api {command}\n\n").as_bytes())
            .expect("write to the event socket");
        loop {
            let (headers, body) = self.read().expect("read from the event socket");
            if headers.contains("api/response") {
                return body;
            }
        }
    }

    /// Starts a background API command (FreeSWITCH answers with a job id at once).
    pub fn bgapi(&mut self, command: &str) {
        self.writer
            .write_all(format!("bgapi {command}\n\n").as_bytes())
            .expect("write to the event socket");
        loop {
            let (headers, _) = self.read().expect("read from the event socket");
            if headers.contains("command/reply") {
                return;
            }
        }
    }
}

/// Waits up to `bound` for `f` to give `Some`.
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

/// The `uuid` field of the CDR whose destination is `destination`.
pub fn cdr_uuid(cdrs: &[String], destination: &str) -> Option<String> {
    let needle = format!("\"destination\":\"{destination}\"");
    cdrs.iter().find(|l| l.contains(&needle)).and_then(|l| {
        let at = l.find("\"uuid\":\"")? + 8;
        Some(l[at..at + 36].to_owned())
    })
}
