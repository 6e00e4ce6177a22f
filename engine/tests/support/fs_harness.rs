//! A real FreeSWITCH for live tests: find the installed build, write a minimal configuration of the
//! test's own into a temporary directory, start it there, and stop it by the PID in its run directory.
//!
//! FreeSWITCH is found through `FREESWITCH_PREFIX`, else `pkg-config --variable=prefix freeswitch`, else a
//! `freeswitch` binary on `PATH`. When none is found a live test prints one line
//! (`skipped: FreeSWITCH not found (set FREESWITCH_PREFIX)`) and passes.
//!
//! The configuration binds only to 127.0.0.1: the event socket on a free port, no SIP profile (calls use
//! the loopback endpoint), modules loaded from the installation. Starting runs
//! `freeswitch -nonat -nonatmap -np -nc -nf` with every directory (`-conf -log -db -run -temp -cache
//! -storage -recordings -sounds -certs -scripts`) inside the temporary directory, so nothing of the host's
//! installation is read or written besides its modules. `-nc` daemonises: the process started is not
//! FreeSWITCH, whose PID is read from `run/freeswitch.pid`. [`FreeSwitch`]'s `Drop` sends SIGTERM, waits,
//! and sends SIGKILL if it must.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The line a live test prints when it cannot run.
pub const SKIPPED: &str = "skipped: FreeSWITCH not found (set FREESWITCH_PREFIX)";

/// The installation prefix of FreeSWITCH (holding `bin/freeswitch`), if one is found.
pub fn find_prefix() -> Option<PathBuf> {
    let has_bin = |p: &Path| p.join("bin/freeswitch").is_file();
    if let Some(p) = std::env::var_os("FREESWITCH_PREFIX") {
        let p = PathBuf::from(p);
        return has_bin(&p).then_some(p);
    }
    if let Ok(out) = Command::new("pkg-config")
        .args(["--variable=prefix", "freeswitch"])
        .stderr(Stdio::null())
        .output()
        && out.status.success()
    {
        let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if has_bin(&p) {
            return Some(p);
        }
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("freeswitch"))
        .find(|b| b.is_file())
        .and_then(|b| b.parent()?.parent().map(Path::to_path_buf))
        .filter(|p| has_bin(p))
}

/// What the test's FreeSWITCH runs besides the event socket.
pub struct FsOptions {
    /// `<context>` elements of the XML dialplan.
    pub dialplan: String,
    /// Event socket password.
    pub password: String,
}

/// A running FreeSWITCH in a temporary directory; stopped on drop.
pub struct FreeSwitch {
    /// The temporary directory holding its configuration and state.
    pub dir: tempfile::TempDir,
    /// Event socket port on 127.0.0.1.
    pub esl_port: u16,
    /// Event socket password.
    pub password: String,
    /// Its PID, once read from the run directory.
    pid: Option<u32>,
    /// The process started (it forks the daemon and exits), reaped on drop.
    launcher: std::process::Child,
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn config_xml(port: u16, password: &str, dialplan: &str) -> String {
    format!(
        r#"<?xml version="1.0"?>
<document type="freeswitch/xml">
  <section name="configuration" description="live test">
    <configuration name="modules.conf" description="Modules">
      <modules>
        <load module="mod_logfile"/>
        <load module="mod_event_socket"/>
        <load module="mod_commands"/>
        <load module="mod_dptools"/>
        <load module="mod_dialplan_xml"/>
        <load module="mod_loopback"/>
      </modules>
    </configuration>
    <configuration name="event_socket.conf" description="Event socket">
      <settings>
        <param name="nat-map" value="false"/>
        <param name="listen-ip" value="127.0.0.1"/>
        <param name="listen-port" value="{port}"/>
        <param name="password" value="{password}"/>
      </settings>
    </configuration>
    <configuration name="switch.conf" description="Core">
      <settings>
        <param name="max-sessions" value="1000"/>
        <param name="sessions-per-second" value="200"/>
        <param name="loglevel" value="debug"/>
      </settings>
    </configuration>
    <configuration name="logfile.conf" description="Log file">
      <settings/>
      <profiles>
        <profile name="default">
          <settings/>
          <mappings><map name="all" value="debug,info,notice,warning,err,crit,alert"/></mappings>
        </profile>
      </profiles>
    </configuration>
  </section>
  <section name="dialplan" description="live test">
{dialplan}
  </section>
</document>
"#
    )
}

impl FreeSwitch {
    /// Writes the configuration and starts FreeSWITCH; returns once its event socket answers.
    pub fn start(prefix: &Path, opts: &FsOptions) -> Result<FreeSwitch, String> {
        let dir = tempfile::Builder::new()
            .prefix("rtc-fs-live.")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let sub = [
            "conf",
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
        for s in sub {
            std::fs::create_dir_all(dir.path().join(s)).map_err(|e| format!("{s}: {e}"))?;
        }
        let esl_port = free_port().map_err(|e| format!("no free port: {e}"))?;
        std::fs::write(
            dir.path().join("conf/freeswitch.xml"),
            config_xml(esl_port, &opts.password, &opts.dialplan),
        )
        .map_err(|e| format!("writing freeswitch.xml: {e}"))?;
        let mut cmd = Command::new(prefix.join("bin/freeswitch"));
        cmd.args(["-nonat", "-nonatmap", "-np", "-nc", "-nf"]);
        for s in sub {
            cmd.arg(format!("-{s}")).arg(dir.path().join(s));
        }
        let log = std::fs::File::create(dir.path().join("stdout.log"))
            .map_err(|e| format!("stdout.log: {e}"))?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot run {}: {e}",
                    prefix.join("bin/freeswitch").display()
                )
            })?;
        let mut fs = FreeSwitch {
            dir,
            esl_port,
            password: opts.password.clone(),
            pid: None,
            launcher: child,
        };
        // With -nc the process started forks the daemon and exits.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if fs.pid.is_none() {
                fs.pid = fs.read_pid();
            }
            if fs.pid.is_some() && fs.esl_answers() {
                return Ok(fs);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "FreeSWITCH did not open its event socket on 127.0.0.1:{esl_port} within 60 s; see {}",
                    fs.dir.path().join("log/freeswitch.log").display()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn read_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.path().join("run/freeswitch.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn esl_answers(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.esl_port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let mut buf = [0u8; 64];
        matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"Content-Type: auth/request"))
    }

    /// FreeSWITCH's log, for failure messages.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("log/freeswitch.log")
    }

    fn alive(pid: u32) -> bool {
        Path::new(&format!("/proc/{pid}")).exists()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.split_whitespace().nth(2) == Some("Z"))
    }
}

impl Drop for FreeSwitch {
    fn drop(&mut self) {
        self.stop();
        // The launcher exited after forking (or is killed now, if FreeSWITCH never started): reap it.
        if !matches!(self.launcher.try_wait(), Ok(Some(_))) {
            let _ = self.launcher.kill();
            let _ = self.launcher.wait();
        }
    }
}

impl FreeSwitch {
    /// SIGTERM to the daemon by its PID, a bounded wait, then SIGKILL.
    fn stop(&mut self) {
        let Some(pid) = self.pid.or_else(|| self.read_pid()) else {
            return;
        };
        let signal = |sig: &str| {
            let _ = Command::new("kill")
                .args([sig, &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        };
        signal("-TERM");
        let deadline = Instant::now() + Duration::from_secs(15);
        while Self::alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        if Self::alive(pid) {
            signal("-KILL");
            let deadline = Instant::now() + Duration::from_secs(5);
            while Self::alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}
