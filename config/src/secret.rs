//! Secrets in the configuration: the services' `api-key`, the `ledger`'s PostgreSQL URL (its password), the
//! `<audit>` `number-key`. Each may be written inline, or as a reference that keeps it out of the XML file:
//!
//! - `file:/etc/freeswitch/secrets/ledger-url`: the file's content, white space around it trimmed. A relative
//!   path is under the FreeSWITCH conf directory. The file must not be empty, and must not be readable or
//!   writable by every user (mode 0600, or 0640 with FreeSWITCH's group).
//! - `env:RTC_LEDGER_URL`: the environment variable of the process (FreeSWITCH's: e.g. systemd's
//!   `Environment=` or `EnvironmentFile=`), which must be set and not empty.
//!
//! An inline value that starts with `file:` or `env:` is always read as a reference. References are read at
//! every load and reload. Messages about a secret name the reference, never the secret.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// `value` itself, or what the reference `file:...` or `env:...` holds; `Err` says why not, without the secret.
pub fn resolve(value: &str, base_dir: &Path) -> Result<String, String> {
    let value = value.trim();
    if let Some(file) = value.strip_prefix("file:") {
        let path = base_dir.join(file.trim());
        let shown = path.display();
        let meta =
            std::fs::metadata(&path).map_err(|e| format!("{value}: cannot read {shown}: {e}"))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o007 != 0 {
            return Err(format!(
                "{value}: {shown} is open to every user (mode {mode:o}); make it 0600 (or 0640 with FreeSWITCH's \
                 group): chmod o-rwx {shown}"
            ));
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("{value}: cannot read {shown}: {e}"))?;
        let text = text.trim();
        if text.is_empty() {
            return Err(format!("{value}: {shown} is empty"));
        }
        Ok(text.to_owned())
    } else if let Some(name) = value.strip_prefix("env:") {
        let name = name.trim();
        match std::env::var(name) {
            Ok(text) if !text.trim().is_empty() => Ok(text.trim().to_owned()),
            Ok(_) => Err(format!("{value}: the environment variable {name} is empty")),
            Err(_) => Err(format!(
                "{value}: the environment variable {name} is not set in this process's environment"
            )),
        }
    } else {
        Ok(value.to_owned())
    }
}

/// Whether `value` is a reference (`file:...` or `env:...`) rather than the secret itself.
pub fn is_reference(value: &str) -> bool {
    let value = value.trim();
    value.starts_with("file:") || value.starts_with("env:")
}

/// A URL with the password of its user part (`scheme://user:password@host`) and of any `password=` query
/// parameter replaced by `***`, for messages, status and logs.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(scheme) = out.find("://") {
        let rest = scheme + 3;
        let authority_end = out[rest..]
            .find(['/', '?', '#'])
            .map_or(out.len(), |i| rest + i);
        if let Some(at) = out[rest..authority_end].rfind('@').map(|i| rest + i)
            && let Some(colon) = out[rest..at].find(':').map(|i| rest + i)
        {
            out.replace_range(colon + 1..at, "***");
        }
    }
    if let Some(query) = out.find('?') {
        let (head, tail) = out.split_at(query + 1);
        let params: Vec<String> = tail
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => p.to_owned(),
            })
            .collect();
        out = format!("{head}{}", params.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_file_and_environment() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(resolve(" k3y ", dir.path()).unwrap(), "k3y");
        let key = dir.path().join("key");
        std::fs::write(&key, "s3cret\n").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(resolve("file:key", dir.path()).unwrap(), "s3cret");
        let absolute = format!("file:{}", key.display());
        assert_eq!(
            resolve(&absolute, Path::new("/elsewhere")).unwrap(),
            "s3cret"
        );

        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = resolve("file:key", dir.path()).unwrap_err();
        assert!(
            e.contains("is open to every user (mode 644)") && e.contains("chmod o-rwx"),
            "{e}"
        );
        assert!(!e.contains("s3cret"), "{e}");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&key, " \n").unwrap();
        let e = resolve("file:key", dir.path()).unwrap_err();
        assert!(e.ends_with("key is empty"), "{e}");
        let e = resolve("file:missing", dir.path()).unwrap_err();
        assert!(e.starts_with("file:missing: cannot read "), "{e}");

        // The test's own variable: set once, never changed, so that tests in parallel do not race on it.
        let e = resolve("env:RTC_CONFIG_TEST_SURELY_UNSET", dir.path()).unwrap_err();
        assert!(e.contains("RTC_CONFIG_TEST_SURELY_UNSET is not set"), "{e}");
        let path = resolve("env:PATH", dir.path()).unwrap();
        assert_eq!(path, std::env::var("PATH").unwrap().trim());
        assert!(is_reference(" env:X") && is_reference("file:/x") && !is_reference("k"));
    }

    #[test]
    fn urls_lose_their_passwords() {
        assert_eq!(
            redact_url("postgres://rtc:s3cret@db:5432/billing?sslmode=require"),
            "postgres://rtc:***@db:5432/billing?sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://rtc:p@ss@db/billing"),
            "postgres://rtc:***@db/billing"
        );
        assert_eq!(
            redact_url("postgres://db/billing?user=rtc&password=s3cret"),
            "postgres://db/billing?user=rtc&password=***"
        );
        assert_eq!(
            redact_url("https://svc.example/v1"),
            "https://svc.example/v1"
        );
        assert_eq!(redact_url("postgres://rtc@db/x"), "postgres://rtc@db/x");
        assert_eq!(redact_url("rtc.db"), "rtc.db");
    }

    #[test]
    fn configured_secrets_do_not_show_in_messages_or_debug() {
        let dir = tempfile::tempdir().unwrap();
        let url = dir.path().join("ledger-url");
        std::fs::write(&url, "postgres://rtc:Pg-s3cret@db:5432/billing\n").unwrap();
        std::fs::set_permissions(&url, std::fs::Permissions::from_mode(0o600)).unwrap();
        let key = dir.path().join("api.key");
        std::fs::write(&key, "Api-s3cret").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let text = |ledger: &str| {
            format!(
                "<configuration name=\"rtc_core.conf\">\n<local><param name=\"ledger\" value=\"{ledger}\"/></local>\n\
                 <services><service name=\"rating\" backend=\"http\" url=\"https://u:Url-s3cret@rates.example/v1\"\n\
                 api-key=\"file:api.key\"/></services></configuration>"
            )
        };
        let config =
            crate::RtcConfig::from_xml_str(&text("file:ledger-url"), dir.path(), "c.xml").unwrap();
        let rating = config.service(rtc_engine::service::ServiceKind::Rating);
        assert_eq!(rating.api_key.as_deref(), Some("Api-s3cret"));
        assert_eq!(
            config.local.ledger,
            crate::local::LedgerPlace::Postgres("postgres://rtc:Pg-s3cret@db:5432/billing".into())
        );
        let shown = format!("{config:?}");
        for secret in ["Api-s3cret", "Pg-s3cret", "Url-s3cret"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(
            shown.contains("postgres://rtc:***@db:5432/billing"),
            "{shown}"
        );

        // A mistyped scheme with an inline password: the message shows the URL without it.
        let e = crate::RtcConfig::from_xml_str(
            &text("postgress://rtc:Pg-s3cret@db/x"),
            dir.path(),
            "c.xml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("ledger: \"postgress://rtc:***@db/x\" is not a file path"),
            "{e}"
        );
        assert!(!e.contains("Pg-s3cret"), "{e}");
        // A reference that cannot be read: named, with its line.
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o604)).unwrap();
        let e = crate::RtcConfig::from_xml_str(&text(""), dir.path(), "c.xml")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("c.xml:4: api-key: service rating: file:api.key: ")
                && e.contains("open to every user"),
            "{e}"
        );
        assert!(!e.contains("Api-s3cret"), "{e}");
    }
}
