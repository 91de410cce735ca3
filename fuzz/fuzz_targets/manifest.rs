//! A namespace manifest read from a file, as `atoll plan` reads the checked-in ones.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    thread_local! {
        static FILE: std::path::PathBuf = std::env::temp_dir()
            .join(format!("atoll-fuzz-manifest-{}.json", std::process::id()));
    }
    FILE.with(|path| {
        std::fs::write(path, data).unwrap();
        if let Ok(m) = atoll::contract::Manifest::read(path) {
            let _ = m.render();
        }
    });
});
