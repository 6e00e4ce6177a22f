//! `rtc-core audit verify|show` end to end: the binary on a trail written here through rtc-audit's writer, then
//! tampered with the way someone with the file would.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rtc_audit::{AuditSettings, Entry, NumberKey, NumberPolicy, kind};
use serde_json::json;

const KEY: &str = "4f3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a39281706f5e";

fn rtc_core(args: &[&str], files: &[&Path]) -> (i32, String, String) {
    let out: Output = Command::new(env!("CARGO_BIN_EXE_rtc-core"))
        .arg("audit")
        .args(args)
        .args(files)
        .output()
        .expect("rtc-core runs");
    (
        out.status.code().expect("exited"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A trail of ten decisions, numbers encrypted with [`KEY`].
fn trail(dir: &Path) -> PathBuf {
    let path = dir.join("audit.jsonl");
    let settings = AuditSettings {
        numbers: NumberPolicy::Encrypt(NumberKey::from_hex(KEY).unwrap()),
        ..AuditSettings::new(&path)
    };
    let (log, writer) = rtc_audit::start(settings).unwrap();
    log.record(Entry::new(kind::LOAD, "module"));
    for i in 0..9 {
        log.record(Entry {
            call: Some(format!("call-{i}")),
            partner: Some("acme".into()),
            caller: Some("441632960001".into()),
            destination: Some("442079460000".into()),
            asked: json!({"destination": "442079460000"}),
            answered: json!({"routes": ["carrier_a", "carrier_b"]}),
            ..Entry::new(kind::ROUTES, "routing service (local)")
        });
    }
    writer.stop();
    path
}

fn edit(path: &Path, change: impl FnOnce(&mut Vec<String>)) {
    let mut lines: Vec<String> = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    change(&mut lines);
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

#[test]
fn verify_passes_then_names_the_changed_or_removed_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = trail(dir.path());
    let (code, out, err) = rtc_core(&["verify"], &[&path]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("OK: 10 line(s) in 1 file(s), seq 1 to 10, last hash "),
        "{out}"
    );
    assert_eq!(out.lines().count(), 1);

    edit(&path, |lines| {
        lines[6] = lines[6].replace("carrier_b", "carrier_x");
    });
    let (code, out, err) = rtc_core(&["verify"], &[&path]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        err.trim(),
        format!(
            "rtc-core audit verify: {}:7: seq 7: the line does not match its hash: it was changed after it was \
             written",
            path.display()
        )
    );

    let path = trail(&dir.path().join("b"));
    edit(&path, |lines| {
        lines.remove(2);
    });
    let (code, _, err) = rtc_core(&["verify"], &[&path]);
    assert_eq!(code, 1);
    assert!(
        err.trim().ends_with(&format!(
            "{}:3: seq 4 follows seq 2: 1 line(s) were removed before it",
            path.display()
        )),
        "{err}"
    );

    let (code, _, err) = rtc_core(&["verify"], &[&dir.path().join("missing.jsonl")]);
    assert_eq!(code, 1);
    assert!(err.contains("missing.jsonl: cannot read"), "{err}");
}

#[test]
fn show_decrypts_numbers_with_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = trail(dir.path());
    let (code, out, _) = rtc_core(&["show"], &[&path]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 10);
    assert!(!out.contains("441632960001") && out.contains("\"caller\":\"enc:"));

    let key_file = dir.path().join("number.key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    let key_arg = key_file.to_str().unwrap();
    let (code, out, err) = rtc_core(&["show", "--key-file", key_arg], &[&path]);
    assert_eq!(code, 0, "{err}");
    let second: serde_json::Value = serde_json::from_str(out.lines().nth(1).unwrap()).unwrap();
    assert_eq!(second["caller"], "441632960001");
    assert_eq!(second["destination"], "442079460000");
    assert_eq!(second["asked"]["destination"], "442079460000");
    assert!(!out.contains("enc:"));

    std::fs::write(&key_file, "00".repeat(32)).unwrap();
    let (code, out, err) = rtc_core(&["show", "--key-file", key_arg], &[&path]);
    assert_eq!(code, 0);
    assert!(out.contains("enc:"));
    assert!(
        err.contains("27 encrypted value(s) left as they are"),
        "{err}"
    );
    std::fs::write(&key_file, "not a key").unwrap();
    let (code, _, err) = rtc_core(&["show", "--key-file", key_arg], &[&path]);
    assert_eq!(code, 1);
    assert!(
        err.contains("not 64 hex characters") && !err.contains("not a key"),
        "{err}"
    );
}
