//! mod_rtc_core in a live FreeSWITCH (the `rtc_fs_live` crate starts and stops it): the module built by this run
//! placed in the temp mod dir as `mod_rtc_core.so` (the tests `load` it), the shipped `rtc_core.conf.xml` with its
//! CDR file, spool and scrape endpoint pointed into FreeSWITCH's temp dir, the sample tables under
//! `conf/rtc_core/`, and the live tests' dialplan.

#![allow(dead_code)]

use std::ops::Deref;
use std::path::Path;

use rtc_fs_live::{FreeSwitch, Install, Options};

/// The dialplan of the live tests. `default`: every call through the `rtc_core` app; `rtc_park`: parked with
/// `rtc_core=true`, for the engine to bridge; `rtc_answer`: where the loopback route lands (answers; 15559... numbers stay up 5 s,
/// 15558... hang up at once, others after 300 ms); `plain`: the same failover as the sample routes, without
/// the module (benchmark baseline), and 15559... answered and held 5 s; `public`: SIP calls, through the app.
const DIALPLAN: &str = r#"<context name="default">
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
</context>"#;

/// A running FreeSWITCH with the module in its mod dir (not loaded); derefs to the [`FreeSwitch`].
pub struct ModuleFs {
    /// The FreeSWITCH.
    pub fs: FreeSwitch,
    /// The module's scrape endpoint's port on 127.0.0.1 (`metrics-listen`).
    pub metrics_port: u16,
}

impl Deref for ModuleFs {
    type Target = FreeSwitch;
    fn deref(&self) -> &FreeSwitch {
        &self.fs
    }
}

/// Starts FreeSWITCH with `module_so` as `mod_rtc_core.so`, a SIP profile when `sip`, and `env` for its
/// process; panics when it does not start.
pub fn start(install: &Install, module_so: &Path, sip: bool, env: &[(&str, &str)]) -> ModuleFs {
    start_with(
        install,
        module_so,
        &Setup {
            sip,
            env,
            ..Setup::default()
        },
        None,
    )
}

/// What a test changes of the shipped configuration.
#[derive(Default)]
pub struct Setup<'a> {
    /// A SIP profile on 127.0.0.1.
    pub sip: bool,
    /// Environment variables of the FreeSWITCH process.
    pub env: &'a [(&'a str, &'a str)],
    /// `rtc_core.conf.xml` params given another value: (name, value).
    pub params: &'a [(&'a str, &'a str)],
    /// Sample tables replaced: (file name under `conf/rtc_core/`, its whole text).
    pub tables: &'a [(&'a str, &'a str)],
    /// Other text of the shipped `rtc_core.conf.xml` replaced: (what, by what); each must be there.
    pub edits: &'a [(&'a str, &'a str)],
}

/// Starts FreeSWITCH as [`start`] does, with `setup`'s changes, in `dir` when given (a restart on the state a
/// crashed FreeSWITCH left: [`rtc_fs_live::FreeSwitch::crash`]).
pub fn start_with(
    install: &Install,
    module_so: &Path,
    setup: &Setup,
    dir: Option<tempfile::TempDir>,
) -> ModuleFs {
    let (sip, env) = (setup.sip, setup.env);
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = match dir {
        Some(dir) => dir,
        None => rtc_fs_live::temp_dir().expect("temp dir"),
    };
    let d = dir.path();
    let metrics_port = rtc_fs_live::free_port();
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
    let ours = setup.params.iter().fold(ours, |conf, (name, value)| {
        let at = conf
            .find(&format!(r#"<param name="{name}" value=""#))
            .unwrap_or_else(|| panic!("the shipped rtc_core.conf.xml has no param {name}"));
        let start = at + format!(r#"<param name="{name}" value=""#).len();
        let end = start + conf[start..].find('"').expect("a quoted value");
        format!("{}{value}{}", &conf[..start], &conf[end..])
    });
    let ours = setup.edits.iter().fold(ours, |conf, (what, by)| {
        assert!(
            conf.contains(what),
            "the shipped rtc_core.conf.xml has no {what:?}"
        );
        conf.replacen(what, by, 1)
    });
    let mut files = vec![("autoload_configs/rtc_core.conf.xml".into(), ours)];
    for entry in std::fs::read_dir(repo.join("conf/rtc_core")).expect("conf/rtc_core") {
        let entry = entry.expect("entry");
        let name = entry.file_name();
        let text = match setup.tables.iter().find(|(n, _)| name == *n) {
            Some((_, text)) => (*text).to_owned(),
            None => std::fs::read_to_string(entry.path()).expect("sample table"),
        };
        files.push((Path::new("rtc_core").join(name), text));
    }
    let fs = FreeSwitch::start(
        install,
        Options {
            dialplan: DIALPLAN.into(),
            sip_profile: sip,
            files,
            extra_modules: vec![("mod_rtc_core.so".into(), module_so.to_path_buf())],
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            dir: Some(dir),
            ..Options::default()
        },
    )
    .unwrap_or_else(|e| panic!("FreeSWITCH does not start: {e}"));
    ModuleFs { fs, metrics_port }
}

impl ModuleFs {
    /// The CDRs the module's local backend wrote (JSON lines).
    pub fn cdrs(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("cdr.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
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
