//! `rtc-core audit verify|show`: the operators' commands on the audit trail's files.
//!
//! Exit status: 0 done (for `verify`: the chain is sound); 1 a problem (`verify`: the line named is changed,
//! removed or out of place; otherwise a file or the key cannot be read).

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use rtc_audit::NumberKey;
use rtc_audit::numbers::ENCRYPTED_PREFIX;
use serde_json::Value;

/// `rtc-core audit <command>`.
#[derive(Subcommand)]
pub enum AuditCommand {
    /// Checks every line's hash and the chain from line to line; several files, oldest first (`audit.jsonl.2
    /// audit.jsonl.1 audit.jsonl`), are one chain. Prints the last seq and hash: keep them elsewhere, since
    /// removing the last lines cannot be seen from the files alone.
    Verify {
        /// The files, oldest first.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Prints the lines, with the encrypted numbers (`enc:...`) decrypted when the key is given.
    Show {
        /// The files, oldest first.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// A file holding the `<audit>` number-key (64 hex characters).
        #[arg(long, value_name = "PATH")]
        key_file: Option<PathBuf>,
    },
}

/// Runs `rtc-core audit ...`.
pub fn run(command: AuditCommand) -> ExitCode {
    let (name, result) = match command {
        AuditCommand::Verify { files } => ("verify", verify(&files)),
        AuditCommand::Show { files, key_file } => ("show", show(&files, key_file.as_deref())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rtc-core audit {name}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn verify(files: &[PathBuf]) -> Result<(), String> {
    let report = rtc_audit::verify(files).map_err(|e| e.to_string())?;
    println!("{report}");
    Ok(())
}

fn show(files: &[PathBuf], key_file: Option<&Path>) -> Result<(), String> {
    let key = match key_file {
        None => None,
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("{}: cannot read the key: {e}", path.display()))?;
            Some(NumberKey::from_hex(&text).map_err(|e| format!("{}: {e}", path.display()))?)
        }
    };
    let mut out = BufWriter::new(std::io::stdout().lock());
    let mut undecrypted = 0u64;
    for path in files {
        let file = std::fs::File::open(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        for line in BufReader::new(file).lines() {
            let line = line.map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
            let shown = match (&key, serde_json::from_str::<Value>(&line)) {
                (Some(key), Ok(mut value)) => {
                    decrypt_numbers(&mut value, key, &mut undecrypted);
                    value.to_string()
                }
                _ => line,
            };
            let written = writeln!(out, "{shown}");
            // The reader went away (`| head`): what it took was written.
            if written.is_err() {
                return Ok(());
            }
        }
    }
    let _ = out.flush();
    if undecrypted > 0 {
        eprintln!(
            "rtc-core audit show: {undecrypted} encrypted value(s) left as they are: the key does not decrypt them"
        );
    }
    Ok(())
}

/// Every string that starts `enc:`, at any depth, decrypted in place.
fn decrypt_numbers(value: &mut Value, key: &NumberKey, undecrypted: &mut u64) {
    match value {
        Value::String(text) if text.starts_with(ENCRYPTED_PREFIX) => match key.decrypt(text) {
            Ok(plain) => *text = plain,
            Err(_) => *undecrypted += 1,
        },
        Value::Object(map) => map
            .values_mut()
            .for_each(|v| decrypt_numbers(v, key, undecrypted)),
        Value::Array(items) => items
            .iter_mut()
            .for_each(|v| decrypt_numbers(v, key, undecrypted)),
        _ => {}
    }
}
