//! The .so's dynamic symbols: it exports the module table and nothing else, and every symbol it imports is a
//! switch_* function or SWITCH_GLOBAL_* datum the stub header declares, or comes from the C runtime (libc, libgcc,
//! pthread, libdl).

use object::{Object, ObjectSymbol, SymbolKind};
use rtc_fakehost::module_path;

/// The switch_* functions fs_stub.h declares in its prototype section.
fn stub_prototypes() -> Vec<String> {
    let header = include_str!("../freeswitch-sys/stub/fs_stub.h");
    let protos = header
        .split("2. Prototypes")
        .nth(1)
        .expect("prototype section");
    let mut names = Vec::new();
    let mut rest = protos;
    while let Some(at) = rest.find("switch_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        if tail[end..].starts_with('(') {
            names.push(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
    names
}

#[test]
fn exports_only_the_table_and_imports_only_what_the_stub_declares() {
    let path = module_path();
    let data =
        std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let file = object::File::parse(&*data).expect("an ELF shared object");
    let declared = stub_prototypes();
    assert!(
        declared.iter().any(|n| n == "switch_event_bind_removable"),
        "{declared:?}"
    );
    // SAFETY: dlopen(NULL) returns the running program's global scope; nothing is initialised.
    let this = libloading::os::unix::Library::this();
    // SAFETY: the C math library has no initialisers of consequence.
    let libm = unsafe { libloading::os::unix::Library::new("libm.so.6") }.expect("libm");

    let mut exported = Vec::new();
    let mut imported_switch = Vec::new();
    for sym in file.dynamic_symbols() {
        let Ok(name) = sym.name() else { continue };
        if name.is_empty() {
            continue;
        }
        if sym.is_undefined() {
            if name.starts_with("SWITCH_GLOBAL_") {
                // FreeSWITCH's global data (SWITCH_GLOBAL_dirs): declared in the stub's data section.
                let header = include_str!("../freeswitch-sys/stub/fs_stub.h");
                assert!(
                    header.contains(&format!(" {name};")),
                    "{name} is imported but fs_stub.h does not declare it"
                );
                imported_switch.push(name.to_string());
            } else if name.starts_with("switch_") {
                assert!(
                    declared.iter().any(|d| d == name),
                    "{name} is imported but fs_stub.h does not declare it"
                );
                imported_switch.push(name.to_string());
            } else if !sym.is_weak() {
                // SAFETY: only looks the symbol up, in the program or in the C math library (the engine's
                // histograms use log2; FreeSWITCH links libm too).
                let found = unsafe { this.get::<*const ()>(name.as_bytes()) }.is_ok()
                    || unsafe { libm.get::<*const ()>(name.as_bytes()) }.is_ok();
                assert!(
                    found,
                    "{name} is imported but neither switch_* nor provided by the C runtime"
                );
            }
        } else if sym.is_global() {
            exported.push((name.to_string(), sym.kind(), sym.size()));
        }
    }
    assert_eq!(exported.len(), 1, "exports: {exported:?}");
    let (name, kind, size) = &exported[0];
    assert_eq!(name, "mod_rtc_core_module_interface");
    assert_eq!(*kind, SymbolKind::Data);
    assert_eq!(
        *size as usize,
        size_of::<freeswitch_sys::switch_loadable_module_function_table_t>()
    );
    assert!(
        imported_switch.iter().any(|n| n == "switch_log_printf"),
        "{imported_switch:?}"
    );
}
