//! The audit trail's settings (`<audit>`), and how numbers are written in the trail and in the CDR exports.
//!
//! ```xml
//! <audit>
//!   <param name="file" value="rtc_core/audit.jsonl"/>   (empty: no trail)
//!   <param name="max-size" value="100MB"/>
//!   <param name="keep" value="10"/>
//!   <param name="numbers" value="plain"/>               (plain, mask or encrypt)
//!   <param name="number-key" value="file:/etc/freeswitch/secrets/number.key"/>
//!   <param name="queue" value="65536"/>
//! </audit>
//! ```
//!
//! These are plain settings: the host builds the trail from them (the `rtc-audit` crate), this crate does not
//! know it. `numbers` applies to the audit trail and to the CDR exports (`<local>` `cdr-file`, `rtc-core ledger
//! cdrs --config`), so it is also copied into [`crate::local::LocalFiles::cdr_numbers`]; the ledger's own CDR
//! table keeps the numbers in the clear, for billing.

use std::fmt;
use std::path::{Path, PathBuf};

use roxmltree::Node;

use crate::{ConfigError, ConfigProblem, Parser, RtcConfig, secret};

/// Params accepted in `<audit>`.
pub const AUDIT_PARAMS: &[&str] = &["file", "max-size", "keep", "numbers", "number-key", "queue"];

/// The smallest `max-size` (the trail's writer refuses smaller files).
pub const MIN_MAX_SIZE: u64 = 4096;

/// The trail, when `<audit>` names a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditConfig {
    /// The trail's file as written in the configuration. A relative path is under the host's log directory (the
    /// module: FreeSWITCH's log directory; `rtc-core esl`: its working directory); rotated files sit beside it as
    /// `<file>.1` to `<file>.<keep>`.
    pub file: PathBuf,
    /// The file is rotated before a line would take it past this many bytes.
    pub max_bytes: u64,
    /// Rotated files kept (0: none).
    pub keep: u32,
    /// How callers' and callees' numbers are written.
    pub numbers: Numbers,
    /// Entries waiting for the writer at most; more are dropped and counted, never waited for.
    pub queue: usize,
}

impl AuditConfig {
    /// The defaults (100 MB files, 10 kept, numbers in the clear, a queue of 65,536) for `file`.
    pub fn new(file: impl Into<PathBuf>) -> AuditConfig {
        AuditConfig {
            file: file.into(),
            max_bytes: 100_000_000,
            keep: 10,
            numbers: Numbers::Plain,
            queue: 65_536,
        }
    }
}

/// How callers' and callees' numbers are written in the audit trail and the CDR exports (`numbers`).
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Numbers {
    /// As they are.
    #[default]
    Plain,
    /// The first digits and the last two kept, the rest `*`; irreversible.
    Mask,
    /// Encrypted with this 32-byte key (`number-key`); reversible with it.
    Encrypt([u8; 32]),
}

impl fmt::Debug for Numbers {
    /// Never shows the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Numbers::Plain => f.write_str("Plain"),
            Numbers::Mask => f.write_str("Mask"),
            Numbers::Encrypt(_) => f.write_str("Encrypt(***)"),
        }
    }
}

/// Parses a size: a whole number of bytes, or with a unit `KB`, `MB`, `GB` (powers of 1000) or `KiB`, `MiB`,
/// `GiB` (powers of 1024), any case, with or without a space.
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let unit: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" | "k" => 1000,
        "mb" | "m" => 1000 * 1000,
        "gb" | "g" => 1000 * 1000 * 1000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(unit)
}

impl Parser<'_, '_> {
    /// `<audit>`: into `config.audit` (when `file` is set) and, for the CDR exports, `config.local.cdr_numbers`.
    pub(crate) fn audit(
        &self,
        section: Node,
        base_dir: &Path,
        config: &mut RtcConfig,
    ) -> Result<(), ConfigError> {
        let mut audit = AuditConfig::new("");
        let mut numbers: Option<(Node, &str)> = None;
        let mut key: Option<[u8; 32]> = None;
        for (node, name, value) in self.params(section, "audit", AUDIT_PARAMS)? {
            match name {
                "file" => audit.file = PathBuf::from(value.trim()),
                "max-size" => {
                    audit.max_bytes = parse_size(value)
                        .filter(|&n| n >= MIN_MAX_SIZE)
                        .ok_or_else(|| {
                            self.bad(
                                node,
                                name,
                                value,
                                "a size of at least 4096 bytes, such as 100MB or 1GB",
                            )
                        })?
                }
                "keep" => {
                    audit.keep = match value.trim().parse::<u32>() {
                        Ok(n @ 0..=1000) => n,
                        _ => {
                            return Err(self.bad(
                                node,
                                name,
                                value,
                                "a whole number from 0 to 1000",
                            ));
                        }
                    }
                }
                "queue" => {
                    audit.queue = match self.count(
                        node,
                        name,
                        value,
                        1,
                        "a whole number from 1 to 16777216",
                    )? {
                        n @ 1..=16_777_216 => n,
                        _ => {
                            return Err(self.bad(
                                node,
                                name,
                                value,
                                "a whole number from 1 to 16777216",
                            ));
                        }
                    }
                }
                "numbers" => numbers = Some((node, value.trim())),
                "number-key" => {
                    key = match value.trim() {
                        "" => None,
                        reference => Some(self.number_key(node, reference, base_dir)?),
                    }
                }
                // `params` only lets known names through; keep this arm in step with AUDIT_PARAMS.
                _ => {}
            }
        }
        audit.numbers = match numbers {
            None | Some((_, "plain")) => Numbers::Plain,
            Some((_, "mask")) => Numbers::Mask,
            Some((node, "encrypt")) => Numbers::Encrypt(key.ok_or_else(|| {
                self.err(
                    node,
                    ConfigProblem::BadParam {
                        name: "numbers",
                        problem: "encrypt needs a number-key: 64 hex characters (`openssl rand -hex 32`), \
                                  best as file:/path or env:NAME"
                            .into(),
                    },
                )
            })?),
            Some((node, other)) => {
                return Err(self.bad(node, "numbers", other, "plain, mask or encrypt"));
            }
        };
        config.local.cdr_numbers = audit.numbers.clone();
        config.audit = (!audit.file.as_os_str().is_empty()).then_some(audit);
        Ok(())
    }

    /// `number-key`: inline or a reference, 64 hex characters; the messages never show the key.
    fn number_key(
        &self,
        node: Node,
        reference: &str,
        base_dir: &Path,
    ) -> Result<[u8; 32], ConfigError> {
        let problem = |problem: String| {
            self.err(
                node,
                ConfigProblem::BadParam {
                    name: "number-key",
                    problem,
                },
            )
        };
        let text = secret::resolve(reference, base_dir).map_err(problem)?;
        decode_key(&text).ok_or_else(|| {
            problem(format!(
                "{} is not 64 hex characters (32 bytes); make one with `openssl rand -hex 32`",
                if secret::is_reference(reference) {
                    format!("what {reference} holds")
                } else {
                    "the key".to_owned()
                }
            ))
        })
    }
}

/// 64 hex characters as 32 bytes.
fn decode_key(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut key = [0u8; 32];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shipped_conf_dir;
    use std::os::unix::fs::PermissionsExt;

    const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    fn parse(body: &str, base: &Path) -> Result<RtcConfig, ConfigError> {
        let text = format!("<configuration name=\"rtc_core.conf\">\n{body}\n</configuration>\n");
        RtcConfig::from_xml_str(&text, base, "test.xml")
    }

    fn error(body: &str) -> String {
        parse(body, Path::new("/etc/freeswitch"))
            .map(|_| panic!("accepted: {body}"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("100MB"), Some(100_000_000));
        assert_eq!(parse_size("10 mb"), Some(10_000_000));
        assert_eq!(parse_size("1GB"), Some(1_000_000_000));
        assert_eq!(parse_size("64KiB"), Some(65_536));
        assert_eq!(parse_size("2MiB"), Some(2 << 20));
        assert_eq!(parse_size("4096"), Some(4096));
        for bad in ["", "MB", "1.5GB", "-1", "10 TB", "99999999999999999999GB"] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
    }

    #[test]
    fn off_unless_a_file_is_named() {
        let config = parse("", Path::new("/c")).unwrap();
        assert_eq!(config.audit, None);
        assert_eq!(config.local.cdr_numbers, Numbers::Plain);
        let config = parse(
            "<audit><param name=\"file\" value=\"\"/><param name=\"numbers\" value=\"mask\"/></audit>",
            Path::new("/c"),
        )
        .unwrap();
        assert_eq!(config.audit, None, "no trail, but ...");
        assert_eq!(
            config.local.cdr_numbers,
            Numbers::Mask,
            "... CDR exports masked"
        );
    }

    #[test]
    fn every_param_is_applied() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("number.key");
        std::fs::write(&key, format!("{KEY}\n")).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let config = parse(
            r#"<audit>
                 <param name="file" value="rtc_core/audit.jsonl"/>
                 <param name="max-size" value="10MB"/>
                 <param name="keep" value="3"/>
                 <param name="numbers" value="encrypt"/>
                 <param name="number-key" value="file:number.key"/>
                 <param name="queue" value="1024"/>
               </audit>"#,
            dir.path(),
        )
        .unwrap();
        let audit = config.audit.expect("on");
        assert_eq!(
            audit.file,
            PathBuf::from("rtc_core/audit.jsonl"),
            "as written: under the log dir"
        );
        assert_eq!(
            (audit.max_bytes, audit.keep, audit.queue),
            (10_000_000, 3, 1024)
        );
        let Numbers::Encrypt(bytes) = audit.numbers else {
            panic!("{:?}", audit.numbers)
        };
        assert_eq!(bytes[..4], [0x00, 0x11, 0x22, 0x33]);
        assert_eq!(config.local.cdr_numbers, audit.numbers);
        assert_eq!(format!("{:?}", audit.numbers), "Encrypt(***)");
        // Inline works too.
        let config = parse(
            &format!(
                "<audit><param name=\"file\" value=\"/var/log/a\"/><param name=\"numbers\" value=\"encrypt\"/>\
                 <param name=\"number-key\" value=\"{KEY}\"/></audit>"
            ),
            dir.path(),
        )
        .unwrap();
        assert_eq!(config.audit.unwrap().numbers, Numbers::Encrypt(bytes));
    }

    #[test]
    fn errors_name_the_param_and_line_and_never_the_key() {
        let e = error("<audit>\n<param name=\"file-size\" value=\"1\"/></audit>");
        assert!(
            e.starts_with(
                "test.xml:3: unknown param \"file-size\" in <audit>; known: file, max-size"
            ),
            "{e}"
        );
        let e = error("<audit>\n<param name=\"max-size\" value=\"1KB\"/></audit>");
        assert!(
            e.starts_with("test.xml:3: max-size: \"1KB\" is not a size of at least 4096 bytes"),
            "{e}"
        );
        let e = error("<audit><param name=\"keep\" value=\"-1\"/></audit>");
        assert!(
            e.contains("keep: \"-1\" is not a whole number from 0 to 1000"),
            "{e}"
        );
        let e = error("<audit><param name=\"queue\" value=\"0\"/></audit>");
        assert!(
            e.contains("queue: \"0\" is not a whole number from 1"),
            "{e}"
        );
        let e = error("<audit><param name=\"numbers\" value=\"hash\"/></audit>");
        assert!(
            e.contains("numbers: \"hash\" is not plain, mask or encrypt"),
            "{e}"
        );
        let e = error("<audit>\n<param name=\"numbers\" value=\"encrypt\"/></audit>");
        assert!(
            e.starts_with("test.xml:3: numbers: encrypt needs a number-key"),
            "{e}"
        );
        let e = error("<audit><param name=\"number-key\" value=\"0123abcd\"/></audit>");
        assert!(
            e.contains("number-key: the key is not 64 hex characters"),
            "{e}"
        );
        assert!(!e.contains("0123abcd"), "{e}");
        let e =
            error("<audit><param name=\"number-key\" value=\"env:RTC_TEST_NO_SUCH_KEY\"/></audit>");
        assert!(
            e.contains("number-key: env:RTC_TEST_NO_SUCH_KEY: the environment variable"),
            "{e}"
        );
        let e = error("<audit/><audit/>");
        assert!(e.contains("section <audit> appears twice"), "{e}");
    }

    #[test]
    fn the_shipped_sample_shows_every_param_with_its_default() {
        let path = shipped_conf_dir().join("autoload_configs/rtc_core.conf.xml");
        let config = RtcConfig::load_file(&path).unwrap();
        assert_eq!(config.audit, None);
        assert_eq!(config.local.cdr_numbers, Numbers::Plain);
        let text = std::fs::read_to_string(&path).unwrap();
        let defaults = AuditConfig::new("");
        for (name, value) in [
            ("file", String::new()),
            ("max-size", "100MB".to_owned()),
            ("keep", defaults.keep.to_string()),
            ("numbers", "plain".to_owned()),
            ("number-key", String::new()),
            ("queue", defaults.queue.to_string()),
        ] {
            assert!(
                text.contains(&format!("<param name=\"{name}\" value=\"{value}\"/>")),
                "sample lacks {name} = {value:?}"
            );
        }
        assert_eq!(parse_size("100MB"), Some(defaults.max_bytes));
    }
}
