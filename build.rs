//! Compiles the C shim (`c_shim/`) with exactly the include flags freeswitch-sys gave bindgen, in the
//! manner of pgrx's cshim: the real `<switch.h>`, or the stub header with `RTC_FS_STUB` defined.
//! In a real-header build it also compiles `c_shim/stub_check.c`, which fails if the stub's prototypes
//! disagree with FreeSWITCH's.

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=c_shim/rtc_shim.c");
    println!("cargo:rerun-if-changed=c_shim/rtc_shim.h");
    println!("cargo:rerun-if-changed=c_shim/stub_check.c");

    let include = env::var_os("DEP_FREESWITCH_INCLUDE")
        .expect("freeswitch-sys publishes DEP_FREESWITCH_INCLUDE (links = \"freeswitch\")");
    let stub = env::var("DEP_FREESWITCH_STUB").is_ok_and(|v| v == "1");
    let stub_dir = PathBuf::from(
        env::var_os("DEP_FREESWITCH_STUB_DIR")
            .expect("freeswitch-sys publishes DEP_FREESWITCH_STUB_DIR"),
    );

    let mut build = cc::Build::new();
    build
        .file("c_shim/rtc_shim.c")
        .include("c_shim")
        .warnings(true)
        .extra_warnings(true)
        .flag_if_supported("-fvisibility=hidden");
    for dir in env::split_paths(&include) {
        build.include(dir);
    }
    if stub {
        build.define("RTC_FS_STUB", None);
    } else {
        // The stub header is reached only by the prototype check.
        build.file("c_shim/stub_check.c").include(&stub_dir);
    }
    build.compile("rtc_shim");
}
