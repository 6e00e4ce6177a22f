//! Builds the fake FreeSWITCH core twice from `fakehost.c`:
//! - as a static library linked into dependents' test executables, so that the module's unit tests link
//!   (the rlib references switch_* symbols that only a host provides);
//! - as `libfakehost.so` in OUT_DIR, which the integration tests dlopen RTLD_GLOBAL before the module, as
//!   FreeSWITCH's libfreeswitch.so is loaded before its modules. Its path is `FAKEHOST_SO`.

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=fakehost.c");
    println!("cargo:rerun-if-changed=../../freeswitch-sys/stub/fs_stub.h");
    let stub = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"))
        .join("../../freeswitch-sys/stub");
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets it"));

    let mut build = cc::Build::new();
    build
        .file("fakehost.c")
        .include(&stub)
        .warnings(true)
        .extra_warnings(true);
    build.compile("fakehost");

    let so = out.join("libfakehost.so");
    let compiler = build.get_compiler();
    let status = compiler
        .to_command()
        .args(["-shared", "-fPIC", "-O1", "-o"])
        .arg(&so)
        .arg("fakehost.c")
        .arg(format!("-I{}", stub.display()))
        .arg("-lpthread")
        .status()
        .unwrap_or_else(|e| panic!("cannot run the C compiler {:?}: {e}", compiler.path()));
    assert!(status.success(), "building {} failed", so.display());
    println!("cargo:rustc-env=FAKEHOST_SO={}", so.display());
}
