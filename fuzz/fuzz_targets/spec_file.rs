//! Spec files as `rotactl apply` reads them (YAML, several documents, and
//! TOML), then the server's validation of what they hold: any input gives
//! specs or a clear error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rota_client::SpecFile;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(specs) = SpecFile::parse_yaml(text) {
        for spec in specs {
            let _ = rota_server::spec::validate(&spec.to_proto());
        }
    }
    if let Ok(spec) = SpecFile::parse_toml(text) {
        let _ = rota_server::spec::validate(&spec.to_proto());
    }
});
