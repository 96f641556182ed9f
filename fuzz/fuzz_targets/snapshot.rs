//! Snapshots and backup files: decoded (checksums, framing) and turned
//! back into a state, as a follower installing a snapshot or a server
//! started with --restore-from does. Damage is an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rota_server::state::State;
use rota_server::store::{backup, snapshot};

fuzz_target!(|data: &[u8]| {
    if let Ok((_meta, body)) = backup::decode(data.to_vec()) {
        if let Ok(rows) = snapshot::decode_rows(&body) {
            let _ = State::from_rows(rows);
        }
    }
    if let Ok(rows) = snapshot::decode_rows(data) {
        let _ = State::from_rows(rows);
    }
});
