//! Finds FreeSWITCH's headers and produces the bindings, in the manner of nginx-sys.
//!
//! Search order (the first that has `switch.h` wins):
//! 1. `FREESWITCH_INCLUDE_DIR` (a path list; one entry holds `switch.h`) — when set it must be right: a wrong
//!    value stops the build with a message;
//! 2. `FREESWITCH_PREFIX` (an installation prefix such as `/opt/freeswitch`): `<prefix>/include/freeswitch` —
//!    when set it must hold `switch.h`;
//! 3. `pkg-config freeswitch` (honours `PKG_CONFIG_PATH`);
//! 4. `/usr/include/freeswitch`, `/usr/local/freeswitch/include/freeswitch`;
//! 5. `<prefix>/include/freeswitch` for a `freeswitch` binary found on `PATH` at `<prefix>/bin/freeswitch`.
//!
//! `FREESWITCH_STUB=1`, or no headers found, builds against `stub/fs_stub.h` instead, with a cargo warning:
//! the bindings for that case are checked in (`src/stub_bindings.rs`) so that CI needs no libclang; a real
//! build always runs bindgen, because real headers differ between installations. Regenerate the checked-in
//! file after editing the stub with `FREESWITCH_SYS_REGENERATE_STUB=1 cargo build -p freeswitch-sys`.
//!
//! Metadata for the root crate's build script (`links = "freeswitch"` → `DEP_FREESWITCH_*`):
//! `INCLUDE` (include dirs joined by the platform path separator), `STUB` (`1` or `0`), `STUB_DIR` (the
//! stub header's dir, so a real build can check the stub's prototypes against the real ones) and, when known,
//! `VERSION`.

use std::env;
use std::path::{Path, PathBuf};

/// Where the headers came from, for messages.
struct Found {
    /// Directories passed as `-I` to bindgen and the C compiler; the first holds `switch.h`.
    include_dirs: Vec<PathBuf>,
    /// How they were found (for the build log).
    how: String,
    /// FreeSWITCH version, when pkg-config told it.
    version: Option<String>,
}

fn main() {
    for var in [
        "FREESWITCH_INCLUDE_DIR",
        "FREESWITCH_PREFIX",
        "FREESWITCH_STUB",
        "FREESWITCH_SYS_REGENERATE_STUB",
        "PKG_CONFIG_PATH",
        "PATH",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    println!("cargo:rerun-if-changed=stub/fs_stub.h");
    println!("cargo:rerun-if-changed=wrapper.h");
    println!("cargo::rustc-check-cfg=cfg(freeswitch_stub)");
    println!("cargo::rustc-check-cfg=cfg(freeswitch_real)");

    let manifest_dir =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let stub_dir = manifest_dir.join("stub");
    println!("cargo:stub_dir={}", stub_dir.display());

    if env::var_os("FREESWITCH_SYS_REGENERATE_STUB").is_some_and(|v| v == "1") {
        let out = manifest_dir.join("src").join("stub_bindings.rs");
        generate(
            &stub_dir.join("fs_stub.h"),
            std::slice::from_ref(&stub_dir),
            &out,
        );
        println!(
            "cargo:warning=freeswitch-sys: regenerated {}",
            out.display()
        );
    }

    let want_stub = env::var_os("FREESWITCH_STUB").is_some_and(|v| v == "1");
    let found = if want_stub { None } else { find_headers() };

    match found {
        Some(found) => {
            let out =
                PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("bindings.rs");
            generate(&manifest_dir.join("wrapper.h"), &found.include_dirs, &out);
            println!("cargo:rustc-cfg=freeswitch_real");
            println!("cargo:stub=0");
            println!("cargo:include={}", join_paths(&found.include_dirs));
            if let Some(v) = &found.version {
                println!("cargo:version={v}");
            }
            eprintln!("freeswitch-sys: real headers from {}", found.how);
        }
        None => {
            println!("cargo:rustc-cfg=freeswitch_stub");
            println!("cargo:stub=1");
            println!("cargo:include={}", stub_dir.display());
            let why = if want_stub {
                "FREESWITCH_STUB=1"
            } else {
                "no FreeSWITCH headers found (set FREESWITCH_INCLUDE_DIR to the directory holding switch.h, \
                 or make `pkg-config freeswitch` work through PKG_CONFIG_PATH)"
            };
            println!(
                "cargo:warning=freeswitch-sys: STUB BUILD against freeswitch-sys/stub/fs_stub.h ({why}); \
                 fine for tests with the fake host, not checked against a real FreeSWITCH"
            );
        }
    }
}

/// Looks for the real headers in the documented order.
fn find_headers() -> Option<Found> {
    if let Some(list) = env::var_os("FREESWITCH_INCLUDE_DIR") {
        // A path list: the directory holding switch.h, then any others its includes need.
        let mut dirs: Vec<PathBuf> = env::split_paths(&list).collect();
        let Some(pos) = dirs.iter().position(|d| d.join("switch.h").is_file()) else {
            panic!(
                "FREESWITCH_INCLUDE_DIR={} has no switch.h: point it at the directory that holds FreeSWITCH's \
                 switch.h (e.g. /usr/local/freeswitch/include/freeswitch), or unset it to search the usual \
                 places, or set FREESWITCH_STUB=1 to build against the stub header",
                list.to_string_lossy()
            );
        };
        let first = dirs.remove(pos);
        dirs.insert(0, first);
        return Some(Found {
            include_dirs: dirs,
            how: "FREESWITCH_INCLUDE_DIR".into(),
            version: None,
        });
    }

    if let Some(prefix) = env::var_os("FREESWITCH_PREFIX") {
        let dir = PathBuf::from(&prefix).join("include").join("freeswitch");
        if !dir.join("switch.h").is_file() {
            panic!(
                "FREESWITCH_PREFIX={} has no include/freeswitch/switch.h: point it at the prefix FreeSWITCH was \
                 installed with (the directory holding bin/freeswitch and include/freeswitch), or unset it",
                prefix.to_string_lossy()
            );
        }
        let version = pkg_config_version(&PathBuf::from(&prefix));
        return Some(Found {
            include_dirs: vec![dir],
            how: "FREESWITCH_PREFIX".into(),
            version,
        });
    }

    match pkg_config::Config::new()
        .cargo_metadata(false)
        .env_metadata(false)
        .probe("freeswitch")
    {
        Ok(lib) => {
            if let Some(pos) = lib
                .include_paths
                .iter()
                .position(|p| p.join("switch.h").is_file())
            {
                let mut dirs = lib.include_paths.clone();
                let first = dirs.remove(pos);
                dirs.insert(0, first);
                return Some(Found {
                    include_dirs: dirs,
                    how: "pkg-config freeswitch".into(),
                    version: Some(lib.version),
                });
            }
            println!(
                "cargo:warning=freeswitch-sys: pkg-config freeswitch answered, but none of its include paths {:?} \
                 holds switch.h",
                lib.include_paths
            );
        }
        Err(e) => eprintln!("freeswitch-sys: pkg-config freeswitch: {e}"),
    }

    for dir in [
        "/usr/include/freeswitch",
        "/usr/local/freeswitch/include/freeswitch",
    ] {
        let dir = PathBuf::from(dir);
        if dir.join("switch.h").is_file() {
            return Some(Found {
                include_dirs: vec![dir.clone()],
                how: dir.display().to_string(),
                version: None,
            });
        }
    }

    let path = env::var_os("PATH")?;
    for bin_dir in env::split_paths(&path) {
        let bin = bin_dir.join("freeswitch");
        if !bin.is_file() {
            continue;
        }
        let bin = bin.canonicalize().unwrap_or(bin);
        let Some(prefix) = bin.parent().and_then(Path::parent) else {
            continue;
        };
        let dir = prefix.join("include").join("freeswitch");
        if dir.join("switch.h").is_file() {
            return Some(Found {
                include_dirs: vec![dir],
                how: format!("prefix of {}", bin.display()),
                version: None,
            });
        }
    }
    None
}

/// The version in `<prefix>/lib/pkgconfig/freeswitch.pc`, when that file says it.
fn pkg_config_version(prefix: &Path) -> Option<String> {
    let pc = std::fs::read_to_string(prefix.join("lib/pkgconfig/freeswitch.pc")).ok()?;
    pc.lines()
        .find_map(|l| l.strip_prefix("Version:"))
        .map(|v| v.trim().to_owned())
}

fn join_paths(dirs: &[PathBuf]) -> String {
    env::join_paths(dirs)
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Runs bindgen over `header` with exactly the allowlist the module uses. The same list serves the stub and
/// the real headers, so both produce the same names.
fn generate(header: &Path, include_dirs: &[PathBuf], out: &Path) {
    let mut builder = bindgen::Builder::default()
        .header(header.to_string_lossy())
        .rust_target(
            bindgen::RustTarget::stable(85, 0)
                .unwrap_or_else(|e| panic!("bindgen rust target: {e}")),
        )
        .rust_edition(bindgen::RustEdition::Edition2024)
        .default_enum_style(bindgen::EnumVariation::Consts)
        .prepend_enum_name(false)
        .use_core()
        .layout_tests(false)
        .derive_default(false)
        .generate_comments(false)
        .allowlist_recursively(true)
        // Functions Rust calls directly (the shim covers the macros).
        .allowlist_function("switch_event_bind_removable")
        .allowlist_function("switch_event_unbind")
        .allowlist_function("switch_loadable_module_create_module_interface")
        .allowlist_function("switch_core_session_get_channel")
        .allowlist_function("switch_core_session_get_uuid")
        // Types: the exported function table, the structs the stub describes (for the layout check),
        // and the enums whose values Rust uses.
        .allowlist_type("switch_loadable_module_function_table_t")
        .allowlist_type("switch_event_t")
        .allowlist_type("switch_stream_handle_t")
        .allowlist_type("switch_api_interface_t")
        .allowlist_type("switch_application_interface_t")
        .allowlist_type("switch_status_t")
        .allowlist_type("switch_event_types_t")
        .allowlist_type("switch_log_level_t")
        .allowlist_type("switch_event_header_t")
        .allowlist_type("switch_directories")
        .allowlist_type("switch_call_direction_t")
        .allowlist_var("SWITCH_API_VERSION");
    // Handled by pointer only: keep their insides out of the bindings.
    for opaque in [
        "switch_loadable_module_interface",
        "switch_core_session",
        "switch_channel",
        "switch_event_node",
        "fspr_pool_t",
        "fspr_thread_rwlock_t",
        "fspr_thread_mutex_t",
        "switch_xml",
    ] {
        builder = builder.opaque_type(opaque);
    }
    for dir in include_dirs {
        builder = builder.clang_arg(format!("-I{}", dir.display()));
    }
    let bindings = builder.generate().unwrap_or_else(|e| {
        panic!(
            "bindgen failed on {} with include dirs {:?}: {e}. A missing header means an incomplete include \
             path (FREESWITCH_INCLUDE_DIR takes a list); a missing libclang means `apt-get install -y \
             libclang-dev`; FREESWITCH_STUB=1 builds against the stub header instead",
            header.display(),
            include_dirs
        )
    });
    bindings
        .write_to_file(out)
        .unwrap_or_else(|e| panic!("cannot write bindings to {}: {e}", out.display()));
}
